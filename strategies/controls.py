"""Controls that isolate what the LLM adds to a hybrid (see ``docs/verdict.md``).

A hybrid can beat its DRL agent for reasons that have nothing to do with the language
model: the combiner's thresholds de-risk a bad agent, or any signal that often says HOLD
would. Two controls re-run the *same* hybrid (same DRL model and seed, same combiner,
same bars at which the LLM was asked, same abstains) with the LLM's information removed:

``<hybrid>~llm0``
    The LLM's weight is 0 and its view neutral (direction 0, confidence 0) wherever it
    answered; where it abstained the hybrid's abstain rule applies as in the hybrid (the
    DRL agent alone, by default). What is left is what the combiner does on its own.
``<hybrid>~random_llm``
    At every bar where the hybrid's LLM was called and answered, its answer (direction,
    confidence, size) is replaced by a draw, with replacement, from the empirical
    distribution of the answers the hybrid's LLM gave in this run; between calls the draw
    holds, as a real answer would; abstains stay abstains. Seeded from the member's seed.
    What is left is a signal with the LLM's marginal distribution and no information.

Neither control calls a model: both read :class:`LLMRecord`, built by the engine from the
hybrid member's own decisions after it ran, so they cost $0 and can never drift from the
hybrid's call schedule. The passive control (``buy_and_hold~matched:<strategy>``) needs no
policy: it is computed from returns in :mod:`backtest.verdict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from strategies.base import AgentSignal, Decision, MarketView, Observation, action_to_target

__all__ = ["CONTROLS", "ControlLLM", "LLMRecord", "LLMView"]

#: Control kinds and the suffix of the control strategy's name (``<hybrid>~<kind>``).
CONTROLS: tuple[str, ...] = ("llm0", "random_llm")
ControlKind = Literal["llm0", "random_llm"]
# Mixed into the member seed so the control's draws never coincide with the hybrid's own
# random streams that share the seed.
_RANDOM_LLM_STREAM = 0x11A0


@dataclass(frozen=True)
class LLMView:
    """What the hybrid's combiner saw from its LLM side at one bar.

    Attributes:
        direction: -1, 0 or +1 (the LLM target's sign).
        confidence: 0 .. 1.
        size: ``|target|`` (0 for HOLD).
        abstain: The LLM gave no usable answer.
        age: Bars since the call that produced it (0: the LLM was asked at this bar).
    """

    direction: float
    confidence: float
    size: float
    abstain: bool
    age: int


class LLMRecord:
    """The LLM side of one hybrid member, bar by bar (keyed by the dataset's bar index).

    Args:
        views: ``{t: LLMView}`` for every bar the hybrid decided on.
    """

    def __init__(self, views: Mapping[int, LLMView]) -> None:
        self.views = dict(views)

    @classmethod
    def from_decisions(cls, bars: Sequence[int], decisions: Sequence[Decision]) -> LLMRecord:
        """Read the ``llm`` signal of each hybrid decision (see :class:`HybridPolicy`).

        Raises:
            ValueError: If a decision has no ``llm`` signal (not a hybrid's decision).
        """
        if len(bars) != len(decisions):
            raise ValueError(f"{len(bars)} bars but {len(decisions)} decisions")
        views: dict[int, LLMView] = {}
        for t, decision in zip(bars, decisions, strict=True):
            signal = next((s for s in decision.signals if s.agent_name == "llm"), None)
            if signal is None:
                raise ValueError(
                    f"the decision at bar {t} has no 'llm' signal: an LLM record is built "
                    "from a hybrid strategy's decisions"
                )
            views[int(t)] = LLMView(
                direction=float(signal.signal),
                confidence=float(signal.confidence),
                size=float(signal.features.get("size", 0.0)),
                abstain=bool(signal.abstain),
                age=int(signal.features.get("age_bars", 0.0)),
            )
        return cls(views)

    def answers(self) -> list[LLMView]:
        """The answers given at call bars (age 0, not abstaining), in bar order."""
        return [v for _, v in sorted(self.views.items()) if v.age == 0 and not v.abstain]

    def abstain_rate(self) -> float:
        """Share of bars whose LLM view is an abstain (``nan`` for an empty record)."""
        if not self.views:
            return math.nan
        return sum(v.abstain for v in self.views.values()) / len(self.views)


def _view_decision(view: LLMView, reasoning: str) -> Decision:
    if view.abstain:
        return Decision(target_position=None, confidence=0.0, abstain=True, reasoning=reasoning)
    action = "HOLD" if view.direction == 0 else ("BUY" if view.direction > 0 else "SELL")
    return Decision(
        target_position=action_to_target(action, view.size),  # HOLD: None
        confidence=view.confidence,
        action=action,
        reasoning=reasoning,
        signals=(
            AgentSignal(
                agent_name="control",
                signal=view.direction,
                confidence=view.confidence,
                features={"size": view.size, "age_bars": float(view.age)},
                reasoning=reasoning,
            ),
        ),
    )


class ControlLLM:
    """Stands in for the LLM side of a control hybrid; calls no model, costs nothing.

    It exposes ``held`` and ``held_age`` like :class:`~strategies.llm.graph.LLMPolicy`, so
    the hybrid records the same ages and holds the same answers between calls.

    Args:
        kind: ``llm0`` or ``random_llm``.
    """

    def __init__(self, kind: ControlKind) -> None:
        if kind not in CONTROLS:
            raise ValueError(f"control must be one of {', '.join(CONTROLS)}, got {kind!r}")
        self.kind = kind
        self.record: LLMRecord | None = None
        self.held: Decision | None = None
        self.held_age = 0
        self._pool: list[LLMView] = []
        self._drawn: LLMView | None = None
        self._rng = np.random.default_rng(0)

    def use_record(self, record: LLMRecord) -> None:
        """The parent hybrid member's LLM record (given by the engine before ``reset``)."""
        self.record = record
        self._pool = record.answers()

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        """Start over; ``random_llm`` draws from a stream of the member's seed."""
        entropy = [_RANDOM_LLM_STREAM] if seed is None else [int(seed), _RANDOM_LLM_STREAM]
        self._rng = np.random.default_rng(np.random.SeedSequence(entropy))
        self.held, self.held_age, self._drawn = None, 0, None

    def models_used(self) -> list[str]:
        """No model is called."""
        return []

    def describe_source(self) -> str:
        """A control asks no model: it replays (or randomises) its hybrid's record."""
        return f"control {self.kind}: no model is asked; derived from its hybrid's LLM record"

    def estimate_llm_cost(self, market: MarketView, first_bar: int) -> dict[str, Any]:
        """A control costs nothing."""
        return {"calls": 0, "usd": 0.0}

    def close(self) -> None:
        """Nothing to close."""

    def _view(self, t: int) -> LLMView:
        if self.record is None:
            raise RuntimeError(
                f"the {self.kind} control has no LLM record: the engine gives it the record "
                "of its hybrid member after that member runs (a control cannot run alone)"
            )
        view = self.record.views.get(t)
        if view is None:
            raise RuntimeError(
                f"the {self.kind} control was asked about bar {t}, which its hybrid never "
                "decided on; a control must replay the hybrid's own bars"
            )
        return view

    def act(self, obs: Observation) -> Decision:
        """The hybrid's LLM view at this bar, with its information removed."""
        view = self._view(obs.t)
        self.held_age = view.age
        if view.abstain:
            shown = view
        elif self.kind == "llm0":
            shown = LLMView(0.0, 0.0, 0.0, False, view.age)
        elif view.age == 0 or self._drawn is None:
            # A call bar (or the first bar seen, mid-hold): draw a fresh answer.
            if self._pool:
                self._drawn = self._pool[int(self._rng.integers(len(self._pool)))]
                shown = LLMView(
                    self._drawn.direction, self._drawn.confidence, self._drawn.size, False, 0
                )
            else:
                shown = LLMView(0.0, 0.0, 0.0, True, view.age)
        else:
            shown = LLMView(
                self._drawn.direction, self._drawn.confidence, self._drawn.size, False, view.age
            )
        decision = _view_decision(shown, f"control {self.kind}")
        self.held = decision
        return decision
