"""A policy whose decisions carry hostile text and priced LLM calls (for report tests)."""

from __future__ import annotations

from backtest.llm.records import LLMCall
from backtest.policy import AgentSignal, Decision, MarketView, Observation
from tests.reports.conftest import HOSTILE


class HostilePolicy:
    """Alternates BUY and SELL every 20 bars; abstains every 50th; 2 calls a decision."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._k = 0

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        self._k = 0

    def act(self, obs: Observation) -> Decision:
        self._k += 1
        k = self._k
        calls = (
            LLMCall(
                role="narrative",
                model_requested="deepseek/deepseek-chat",
                model_served="deepseek/deepseek-chat",
                provider="<b>prov</b>",
                prompt_tokens=1200,
                cached_prompt_tokens=200,
                completion_tokens=150,
                cost_usd=0.0004,
                spend_usd=0.0004 if k % 3 else 0.0,
                cache="live" if k % 3 else "hit",
                retries=1 if k % 7 == 0 else 0,
                fallback_from="qwen/qwen-2.5-72b-instruct" if k % 11 == 0 else "",
            ),
            LLMCall(
                role="meta_orchestrator",
                model_requested="deepseek/deepseek-chat",
                model_served="deepseek/deepseek-chat",
                provider="openrouter",
                prompt_tokens=800,
                completion_tokens=100,
                cost_usd=0.0002,
                spend_usd=0.0002,
                error="RateLimitError: 429" if k % 13 == 0 else "",
            ),
        )
        signal = AgentSignal(
            agent_name="narrative<script>",
            signal=0.5,
            confidence=0.8,
            reasoning=HOSTILE,
        )
        if k % 50 == 0:
            return Decision(
                target_position=None,
                abstain=True,
                reasoning=HOSTILE,
                llm_calls=calls,
                signals=(signal,),
            )
        if k % 20 == 1:
            side = 1.0 if (k // 20) % 2 == 0 else -0.5
            return Decision(
                target_position=side,
                action="BUY" if side > 0 else "SELL",
                confidence=0.7,
                reasoning=HOSTILE,
                llm_calls=calls,
                signals=(signal,),
            )
        return Decision(target_position=None, action="HOLD", llm_calls=calls)
