"""Hybrid policy: the DRL agent and the LLM graph combined by the seed's ``_combine_decisions``.

At every bar both decide; then, as in the seed (section 4):

- if they agree on the direction and both confidences exceed 0.7, go with the LLM's action at
  size ``max(LLM size, 0.5)`` and the mean confidence;
- otherwise take the weighted signal ``drl_signal * drl_weight * drl_confidence +
  llm_signal * llm_weight * llm_confidence`` (signals: the DRL target's direction, the LLM's
  BUY +1 / SELL -1 / HOLD 0); above +0.3 BUY and below -0.3 SELL, at size
  ``min(|combined|, 1) * 0.5``; in between HOLD.

Between LLM calls (``llm.every_n_bars`` > 1, or event-driven calls) the LLM's last decision
holds: it is combined as if made now, and its age in bars is recorded in the ``llm`` signal's
features (``age_bars``). For a paired comparison with DRL-only, give both the same ``drl``
settings and seeds: member ``k`` of each then shares one cached model.

**An abstaining LLM** (every agent failed, or the budget's hard cap stopped the calls)
makes the hybrid fall back to the DRL agent alone for that bar (``on_llm_abstain =
"drl"``, the default): its target and confidence, action ``<DRL action> (DRL fallback)``,
and the reasoning and the ``llm`` signal say why. ``on_llm_abstain = "combine"`` keeps the
seed's rule with the LLM at confidence 0 instead.

**Learned weights** (``weighting = "hedge"``; the seed: "start 50/50, learn over time"): the
two weights start at ``drl_weight`` / ``llm_weight`` (normalised) and after every bar take an
exponentiated-gradient (Hedge) step, ``w_i <- w_i * exp(learning_rate * g_i)``, normalised,
with any weight below ``min_weight`` raised to it (the mass taken from the others), so a
source that lost for a while can win its weight back. ``g_i`` is the return the
source's own position earned over the bar that just closed: its last target (a HOLD
keeps the previous one) times the close-to-close return of that bar. At bar ``t`` the
weights therefore depend on closes up to ``t`` only. They are recorded in the ``drl`` and
``llm`` signals' ``weight`` feature.

**Controls** (``control = "llm0"`` or ``"random_llm"``, see :mod:`strategies.controls`): the
same hybrid with its LLM side replaced by a stand-in that replays the parent member's LLM
record with the information removed. The engine adds them to every hybrid (``<name>~llm0``,
``<name>~random_llm``) unless ``controls = false``. The ``llm`` signal records what the
combiner saw (direction, confidence, ``size`` = |target|, ``age_bars``, abstain), which is
what the record is built from.

**The DRL side sees its own account** (``drl_account = "shadow"``, the default). The last two
values of an agent's observation are its exposure and unrealised P&L; in training those are
the agent's own. Inside the hybrid the engine's account is the hybrid's, so the DRL side is
shown, instead, the account it would hold trading alone: a :class:`~strategies.shadow.
ShadowAccount` follows the DRL side's own targets with the env's accounting kernel. Bar for
bar the DRL side then sees exactly what a DRL-only member with the same model sees (the
LLM side is shown the hybrid's observation, as before: its prompts do not include the
position). ``drl_account = "hybrid"`` shows it the hybrid's own account, as before this
option existed: only to reproduce runs recorded before it, since that observation is a
state the agent never held in training.

**Threshold crossings** (:meth:`HybridPolicy.run_report`, written by the engine to
``summary["strategies"][<name>]["policy_report"]["combiner"]``): per member, over its
decision bars, how often the DRL confidence is above the agreement threshold (0.7), the
LLM's is (0.7, abstains excluded), both are and the directions agree (the agreement
branch's condition), and the weighted signal is beyond the action threshold (0.3, counted
on the bars that reached the weighted rule); and which branch decided (``agreement``,
``weighted_buy`` / ``weighted_sell`` / ``weighted_hold``, ``drl_fallback``). A hybrid whose
``agreement`` count is near zero and whose weighted branch mostly holds is not combining
the two sides: it is one side, de-risked. See docs/hybrid.md for the thresholds' origin
and how to read the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from backtest.config import EnvConfig
from strategies.base import AgentSignal, Decision, MarketView, Observation, action_to_target
from strategies.controls import CONTROLS, ControlKind, ControlLLM, LLMRecord
from strategies.drl import DRLPolicy
from strategies.llm.graph import LLMPolicy
from strategies.shadow import ShadowAccount

__all__ = ["ACT_THRESHOLD", "AGREE_CONFIDENCE", "HedgeWeights", "HybridPolicy", "combine"]

#: Both confidences must be above this (and the directions agree) for the agreement branch.
AGREE_CONFIDENCE = 0.7
#: The weighted signal must be beyond +/- this to BUY / SELL; in between the hybrid holds.
ACT_THRESHOLD = 0.3
_CROSSINGS = (
    "drl_confidence_above_agree",
    "llm_confidence_above_agree",
    "both_above_agree_and_same_direction",
    "weighted_beyond_act",
    "llm_abstained",
)
_BRANCHES = ("agreement", "weighted_buy", "weighted_sell", "weighted_hold", "drl_fallback")


def _direction(target: float | None) -> float:
    if target is None or not math.isfinite(target) or target == 0:
        return 0.0
    return 1.0 if target > 0 else -1.0


def combine(
    drl: Decision, llm: Decision, *, drl_weight: float = 0.5, llm_weight: float = 0.5
) -> tuple[str, float, float, str]:
    """The seed's ``_combine_decisions``.

    Returns:
        ``(action, size, confidence, how)`` with action BUY / SELL / HOLD.
    """
    drl_signal = _direction(drl.target_position)
    llm_signal = 0.0 if llm.abstain else _direction(llm.target_position)
    drl_conf = drl.confidence
    llm_conf = 0.0 if llm.abstain else llm.confidence
    llm_size = 0.0 if llm.abstain or llm.target_position is None else abs(llm.target_position)
    if (
        drl_signal != 0
        and drl_signal == llm_signal
        and drl_conf > AGREE_CONFIDENCE
        and (llm_conf > AGREE_CONFIDENCE)
    ):
        action = "BUY" if llm_signal > 0 else "SELL"
        return action, max(llm_size, 0.5), (drl_conf + llm_conf) / 2, "agreement"
    combined = drl_signal * drl_weight * drl_conf + llm_signal * llm_weight * llm_conf
    confidence = drl_conf * drl_weight + llm_conf * llm_weight
    how = f"weighted DRL({drl_signal:+.0f}) + LLM({llm_signal:+.0f}) = {combined:+.3f}"
    if combined > ACT_THRESHOLD:
        return "BUY", min(combined, 1.0) * 0.5, confidence, how
    if combined < -ACT_THRESHOLD:
        return "SELL", min(-combined, 1.0) * 0.5, confidence, how
    return "HOLD", 0.0, confidence, how


class HedgeWeights:
    """Exponentiated-gradient (Hedge) weights over sources, with a fixed-share floor.

    Args:
        initial: Starting weights (normalised to sum to one).
        learning_rate: Step per unit of return (10 moves a weight by ~1% per 0.1% of
            return one source earns over the other).
        min_weight: Floor of every weight; ``len(initial) * min_weight`` must be below 1.
    """

    def __init__(
        self, initial: Sequence[float], *, learning_rate: float = 10.0, min_weight: float = 0.05
    ) -> None:
        start = np.asarray(initial, dtype=np.float64)
        if start.ndim != 1 or start.size < 2 or (start < 0).any() or not start.sum() > 0:
            raise ValueError(f"initial weights must be >= 0 with a positive sum, got {initial}")
        if not learning_rate >= 0:
            raise ValueError(f"learning_rate must be >= 0, got {learning_rate}")
        if not 0 <= min_weight < 1 / start.size:
            raise ValueError(f"min_weight must be in [0, 1/{start.size}), got {min_weight}")
        self.learning_rate = float(learning_rate)
        self.min_weight = float(min_weight)
        self._initial = self._floor(start / start.sum())
        self._w = self._initial.copy()

    def _floor(self, w: np.ndarray) -> np.ndarray:
        # Raise every weight below the floor to it, taking the mass proportionally from the
        # others (repeated until none is below): the weights stay a distribution.
        w = w.copy()
        low = np.zeros(w.size, dtype=bool)
        while True:
            newly = (w < self.min_weight) & ~low
            if not newly.any():
                return w
            low |= newly
            w[low] = self.min_weight
            free = 1.0 - self.min_weight * low.sum()
            w[~low] *= free / w[~low].sum()

    @property
    def weights(self) -> np.ndarray:
        """The current weights (a copy): each >= ``min_weight``, summing to one."""
        return self._w.copy()

    def reset(self) -> None:
        """Go back to the starting weights."""
        self._w = self._initial.copy()

    def update(self, gains: Sequence[float]) -> np.ndarray:
        """Take one Hedge step from each source's realised return; return the new weights."""
        g = np.asarray(gains, dtype=np.float64)
        if g.shape != self._w.shape:
            raise ValueError(f"expected {self._w.size} gains, got {g.shape}")
        g = np.where(np.isfinite(g), g, 0.0)
        # Subtracting the max leaves the normalised step unchanged and cannot overflow.
        w = self._w * np.exp(self.learning_rate * (g - g.max()))
        self._w = self._floor(w / w.sum())
        return self.weights


class HybridPolicy:
    """DRL + LLM, combined by the seed's rule.

    ``CONTROLS`` tells the engine which controls to add (``<name>~<control>``); the engine
    gives each its parent member's decisions through :meth:`use_parent_decisions`.

    Args:
        name: Label in the ledger.
        drl: Keyword arguments for :class:`strategies.drl.DRLPolicy`.
        llm: Keyword arguments for :class:`strategies.llm.graph.LLMPolicy`. Its
            ``portfolio_in_prompt`` defaults to False here: the LLM judges the market, not
            the DRL's position, so its answers (and a cassette of them) do not depend on
            how the DRL side was trained.
        drl_weight: The seed's ``drl_weight`` (0.5); the starting weight with ``hedge``.
        llm_weight: The seed's ``llm_weight`` (0.5); the starting weight with ``hedge``.
        weighting: ``fixed`` (the seed's constant weights) or ``hedge`` (learned online).
        learning_rate: Hedge step per unit of per-bar return.
        min_weight: Floor of each learned weight.
        on_llm_abstain: ``drl`` (the DRL agent alone decides that bar) or ``combine``.
        control: ``None`` (the hybrid itself), or ``llm0`` / ``random_llm``: a control
            whose LLM side replays the record :meth:`use_llm_record` gives it (``llm0``
            also sets the LLM's weight to 0).
        drl_account: ``shadow`` (the DRL side is shown the account it would hold alone,
            as in training) or ``hybrid`` (the hybrid's own account; the behaviour before
            the shadow existed, kept to reproduce older runs).
    """

    CONTROLS: tuple[str, ...] = CONTROLS

    def __init__(
        self,
        name: str = "hybrid",
        *,
        drl: dict[str, Any] | None = None,
        llm: dict[str, Any] | None = None,
        drl_weight: float = 0.5,
        llm_weight: float = 0.5,
        weighting: Literal["fixed", "hedge"] = "fixed",
        learning_rate: float = 10.0,
        min_weight: float = 0.05,
        on_llm_abstain: Literal["drl", "combine"] = "drl",
        control: ControlKind | None = None,
        drl_account: Literal["shadow", "hybrid"] = "shadow",
    ) -> None:
        if drl_weight < 0 or llm_weight < 0:
            raise ValueError("drl_weight and llm_weight must be >= 0")
        if weighting not in ("fixed", "hedge"):
            raise ValueError(f"weighting must be 'fixed' or 'hedge', got {weighting!r}")
        if on_llm_abstain not in ("drl", "combine"):
            raise ValueError(f"on_llm_abstain must be 'drl' or 'combine', got {on_llm_abstain!r}")
        if drl_account not in ("shadow", "hybrid"):
            raise ValueError(f"drl_account must be 'shadow' or 'hybrid', got {drl_account!r}")
        if control is not None and control not in CONTROLS:
            raise ValueError(f"control must be one of {', '.join(CONTROLS)}, got {control!r}")
        self.name = name
        self.control = control
        self.drl = DRLPolicy(f"{name}.drl", **(drl or {}))
        self.llm: Any = (
            ControlLLM(control)
            if control is not None
            else LLMPolicy(f"{name}.llm", **{"portfolio_in_prompt": False, **(llm or {})})
        )
        if control == "llm0":
            llm_weight = 0.0
        self.drl_weight, self.llm_weight = drl_weight, llm_weight
        self.on_llm_abstain = on_llm_abstain
        self.hedge = (
            HedgeWeights(
                [drl_weight, llm_weight], learning_rate=learning_rate, min_weight=min_weight
            )
            if weighting == "hedge"
            else None
        )
        self._held = [0.0, 0.0]  # each source's own last target (DRL, LLM)
        self._last_close = math.nan
        self.drl_account = drl_account
        self.shadow = ShadowAccount(EnvConfig()) if drl_account == "shadow" else None
        self._counts = dict.fromkeys(("bars", *_CROSSINGS, *_BRANCHES), 0)

    @classmethod
    def input_hashes(cls, params: Mapping[str, Any]) -> dict[str, str]:
        """Hash what the LLM side reads (routing file, prompts, price table)."""
        llm = params.get("llm") or {}
        return {f"llm.{k}": v for k, v in LLMPolicy.input_hashes(llm).items()}

    def use_llm_record(self, record: LLMRecord) -> None:
        """Give a control the LLM record of its hybrid member (the engine calls this).

        Raises:
            TypeError: If this hybrid is not a control.
        """
        if self.control is None:
            raise TypeError(f"{self.name} is not a control; only controls replay a record")
        self.llm.use_record(record)

    def use_parent_decisions(self, bars: Sequence[int], decisions: Sequence[Decision]) -> None:
        """The engine's hook for controls: the parent hybrid member's decisions by bar."""
        self.use_llm_record(LLMRecord.from_decisions(bars, decisions))

    def bind(self, env_config: EnvConfig) -> None:
        """The DRL side trains on the run's environment (and its shadow account keeps it)."""
        self.drl.bind(env_config)
        if self.shadow is not None:
            self.shadow = ShadowAccount(env_config)

    def show_progress(self, progress: Any) -> None:
        """Show the DRL side's training in ``progress``."""
        self.drl.show_progress(progress)

    def close(self) -> None:
        """Close the LLM side's cassette (the engine calls this when the run ends)."""
        self.llm.close()

    def models_used(self) -> list[str]:
        """The LLM side's models (for the engine's temporal-leakage guard)."""
        return self.llm.models_used()

    def describe_source(self) -> str:
        """Where the LLM side's answers come from (see :meth:`LLMPolicy.describe_source`)."""
        return str(self.llm.describe_source())

    def estimate_llm_cost(self, market: MarketView, first_bar: int) -> dict[str, Any]:
        """The LLM side's cost estimate (see :meth:`LLMPolicy.estimate_llm_cost`)."""
        return self.llm.estimate_llm_cost(market, first_bar)

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        """Reset both sides (the same seed; the DRL side's own ``seed`` wins if set)."""
        self.drl.reset(seed=seed, market=market)
        self.llm.reset(seed=seed, market=market)
        if self.hedge is not None:
            self.hedge.reset()
        self._held = [0.0, 0.0]
        self._last_close = math.nan
        if self.shadow is not None:
            self.shadow.reset()
        self._counts = dict.fromkeys(self._counts, 0)

    def train_until(self, stop: int) -> None:
        """The DRL side trains on the market view's bars before ``stop`` only."""
        self.drl.train_until(stop)

    def run_report(self) -> dict[str, Any]:
        """The combiner's threshold crossings and branches, and the DRL side's training.

        ``combiner``: ``thresholds`` (``agree_confidence``, ``act``), ``bars`` (decisions),
        ``crossed`` and ``decided_by`` (counts, see the module docstring), and
        ``fraction`` (each count over ``bars``). The engine writes it to
        ``summary["strategies"][<name>]["policy_report"]``.
        """
        counts = self._counts
        bars = counts["bars"]
        crossed = {k: counts[k] for k in _CROSSINGS}
        decided = {k: counts[k] for k in _BRANCHES}
        share = {k: (v / bars if bars else None) for k, v in {**crossed, **decided}.items()}
        drl_report = getattr(self.drl, "run_report", None)  # a test double may have none
        return {
            "combiner": {
                "thresholds": {"agree_confidence": AGREE_CONFIDENCE, "act": ACT_THRESHOLD},
                "drl_account": self.drl_account,
                "bars": bars,
                "crossed": crossed,
                "decided_by": decided,
                "fraction": share,
            },
            **(drl_report() if callable(drl_report) else {}),
        }

    def _count(
        self, drl: Decision, view: Decision, branch: str, weights: tuple[float, float]
    ) -> None:
        counts = self._counts
        counts["bars"] += 1
        counts[branch] += 1
        drl_dir = _direction(drl.target_position)
        llm_dir = 0.0 if view.abstain else _direction(view.target_position)
        drl_high = drl.confidence > AGREE_CONFIDENCE
        llm_high = not view.abstain and view.confidence > AGREE_CONFIDENCE
        counts["drl_confidence_above_agree"] += drl_high
        counts["llm_confidence_above_agree"] += llm_high
        counts["both_above_agree_and_same_direction"] += (
            drl_high and llm_high and drl_dir != 0 and drl_dir == llm_dir
        )
        counts["llm_abstained"] += view.abstain
        if branch.startswith("weighted"):
            llm_conf = 0.0 if view.abstain else view.confidence
            combined = drl_dir * weights[0] * drl.confidence + llm_dir * weights[1] * llm_conf
            counts["weighted_beyond_act"] += abs(combined) > ACT_THRESHOLD

    def _drl_observation(self, obs: Observation) -> Observation:
        """The DRL side's observation: the shadow account's, or the hybrid's own."""
        if self.shadow is None:
            return obs
        features = self.shadow.observation(obs.market, obs.features)
        return Observation(obs.t, features, self.shadow.exposure, self.shadow.equity, obs.market)

    def _weights(self, obs: Observation) -> tuple[float, float]:
        if self.hedge is None:
            return self.drl_weight, self.llm_weight
        close = float(obs.market.close[-1])
        if math.isfinite(self._last_close) and self._last_close > 0:
            move = close / self._last_close - 1.0
            self.hedge.update([self._held[0] * move, self._held[1] * move])
        self._last_close = close
        w = self.hedge.weights
        return float(w[0]), float(w[1])

    def act(self, obs: Observation) -> Decision:
        """Ask both sides, then combine (or fall back to DRL alone if the LLM abstains)."""
        drl_weight, llm_weight = self._weights(obs)
        drl = self.drl.act(self._drl_observation(obs))
        if self.shadow is not None:
            self.shadow.follow(drl.target_position)
        llm = self.llm.act(obs)
        # Between calls the LLM's last decision holds (its age is recorded below); an LLM
        # side that is not an LLMPolicy (a test double, a custom policy) holds nothing.
        age = getattr(self.llm, "held_age", 0)
        held = getattr(self.llm, "held", None)
        view = held if age and held is not None else llm
        for i, side in enumerate((drl, view)):
            if side.target_position is not None and not side.abstain:
                self._held[i] = float(side.target_position)
        signals = (
            AgentSignal(
                agent_name="drl",
                signal=_direction(drl.target_position),
                confidence=drl.confidence,
                features={"weight": drl_weight},
                reasoning=drl.reasoning,
            ),
            AgentSignal(
                agent_name="llm",
                signal=_direction(view.target_position),
                confidence=view.confidence,
                features={
                    "weight": llm_weight,
                    "age_bars": float(age),
                    "size": 0.0 if view.target_position is None else abs(view.target_position),
                },
                reasoning=llm.reasoning[:500],
                abstain=view.abstain,
            ),
            *llm.signals,
        )
        if view.abstain and self.on_llm_abstain == "drl":
            self._count(drl, view, "drl_fallback", (drl_weight, llm_weight))
            return Decision(
                target_position=drl.target_position,
                confidence=drl.confidence,
                action=f"{drl.action} (DRL fallback)",
                signals=signals,
                llm_calls=llm.llm_calls,
                reasoning=f"hybrid (DRL alone: the LLM abstained: {view.reasoning[:300]}): "
                f"DRL {drl.action}",
            )
        action, size, confidence, how = combine(
            drl, view, drl_weight=drl_weight, llm_weight=llm_weight
        )
        branch = "agreement" if how == "agreement" else f"weighted_{action.lower()}"
        self._count(drl, view, branch, (drl_weight, llm_weight))
        weights = f"; weights DRL {drl_weight:.3f} LLM {llm_weight:.3f}" if self.hedge else ""
        return Decision(
            target_position=action_to_target(action, size),
            confidence=confidence,
            action=action,
            signals=signals,
            llm_calls=llm.llm_calls,
            reasoning=f"hybrid ({how}{weights}): LLM {llm.action or 'none'}, DRL {drl.action}",
        )
