"""Hybrid policy: the DRL agent and the LLM graph combined by the seed's ``_combine_decisions``.

At every bar both decide; then, as in the seed (section 4):

- if they agree on the direction and both confidences exceed 0.7, go with the LLM's action at
  size ``max(LLM size, 0.5)`` and the mean confidence;
- otherwise take the weighted signal ``drl_signal * drl_weight * drl_confidence +
  llm_signal * llm_weight * llm_confidence`` (signals: the DRL target's direction, the LLM's
  BUY +1 / SELL -1 / HOLD 0); above +0.3 BUY and below -0.3 SELL, at size
  ``min(|combined|, 1) * 0.5``; in between HOLD.

An abstaining LLM counts with confidence 0, so the DRL agent decides alone (still scaled by
its weight and confidence); the decision records both sides' signals and the LLM's calls,
so the LLM cost is charged to the hybrid. For a paired comparison with DRL-only, give both
the same ``drl`` settings and seed: they then share one cached model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from backtest.config import EnvConfig
from strategies.base import AgentSignal, Decision, MarketView, Observation, action_to_target
from strategies.drl import DRLPolicy
from strategies.llm.graph import LLMPolicy

__all__ = ["HybridPolicy", "combine"]

_AGREE_CONFIDENCE = 0.7
_ACT_THRESHOLD = 0.3


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
        and drl_conf > _AGREE_CONFIDENCE
        and (llm_conf > _AGREE_CONFIDENCE)
    ):
        action = "BUY" if llm_signal > 0 else "SELL"
        return action, max(llm_size, 0.5), (drl_conf + llm_conf) / 2, "agreement"
    combined = drl_signal * drl_weight * drl_conf + llm_signal * llm_weight * llm_conf
    confidence = drl_conf * drl_weight + llm_conf * llm_weight
    how = f"weighted DRL({drl_signal:+.0f}) + LLM({llm_signal:+.0f}) = {combined:+.3f}"
    if combined > _ACT_THRESHOLD:
        return "BUY", min(combined, 1.0) * 0.5, confidence, how
    if combined < -_ACT_THRESHOLD:
        return "SELL", min(-combined, 1.0) * 0.5, confidence, how
    return "HOLD", 0.0, confidence, how


class HybridPolicy:
    """DRL + LLM, combined by the seed's rule.

    Args:
        name: Label in the ledger.
        drl: Keyword arguments for :class:`strategies.drl.DRLPolicy`.
        llm: Keyword arguments for :class:`strategies.llm.graph.LLMPolicy`.
        drl_weight: The seed's ``drl_weight`` (0.5).
        llm_weight: The seed's ``llm_weight`` (0.5).
    """

    def __init__(
        self,
        name: str = "hybrid",
        *,
        drl: dict[str, Any] | None = None,
        llm: dict[str, Any] | None = None,
        drl_weight: float = 0.5,
        llm_weight: float = 0.5,
    ) -> None:
        if drl_weight < 0 or llm_weight < 0:
            raise ValueError("drl_weight and llm_weight must be >= 0")
        self.name = name
        self.drl = DRLPolicy(f"{name}.drl", **(drl or {}))
        self.llm = LLMPolicy(f"{name}.llm", **(llm or {}))
        self.drl_weight, self.llm_weight = drl_weight, llm_weight

    @classmethod
    def input_hashes(cls, params: Mapping[str, Any]) -> dict[str, str]:
        """Hash what the LLM side reads (routing file, prompts, price table)."""
        llm = params.get("llm") or {}
        return {f"llm.{k}": v for k, v in LLMPolicy.input_hashes(llm).items()}

    def bind(self, env_config: EnvConfig) -> None:
        """The DRL side trains on the run's environment."""
        self.drl.bind(env_config)

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        """Reset both sides (the same seed; the DRL side's own ``seed`` wins if set)."""
        self.drl.reset(seed=seed, market=market)
        self.llm.reset(seed=seed, market=market)

    def act(self, obs: Observation) -> Decision:
        """Ask both sides, then combine."""
        drl = self.drl.act(obs)
        llm = self.llm.act(obs)
        action, size, confidence, how = combine(
            drl, llm, drl_weight=self.drl_weight, llm_weight=self.llm_weight
        )
        signals = (
            AgentSignal(
                agent_name="drl",
                signal=_direction(drl.target_position),
                confidence=drl.confidence,
                reasoning=drl.reasoning,
            ),
            AgentSignal(
                agent_name="llm",
                signal=_direction(llm.target_position),
                confidence=llm.confidence,
                reasoning=llm.reasoning[:500],
                abstain=llm.abstain,
            ),
            *llm.signals,
        )
        return Decision(
            target_position=action_to_target(action, size),
            confidence=confidence,
            action=action,
            signals=signals,
            llm_calls=llm.llm_calls,
            reasoning=f"hybrid ({how}): LLM {llm.action or 'none'}, DRL {drl.action}",
        )
