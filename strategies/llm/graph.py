"""LLM-only policy: the seed's graph of agents, routed over the Chinese model stack.

At each decision bar (every ``every_n_bars``; HOLD in between) the graph runs, as in the
seed: chart analysis, then narrative and data processing, then document analysis when the
dataset has documents, then the meta orchestrator, whose ``TradingAction`` becomes the
target exposure through the one action table. Failures are data:

- an agent whose every model failed, or whose answer does not parse, is an *abstaining*
  signal (its raw text kept), never a neutral 0;
- if the meta orchestrator fails, the seed's fallback averaging of the agent signals decides,
  and the decision says so (``action`` ends with ``(fallback)``);
- if every agent abstains, or the budget's hard cap stops the calls, the decision abstains
  (HOLD) and the ledger counts it.

Which client answers: with the routing profile's API key set, the real models (recorded
into ``cassette`` with ``record_mode``); without a key, a cassette that holds recordings is
replayed (mode ``none``); with neither, the offline analyst answers, and every record says
``offline``. ``mode`` forces one of ``live``, ``replay`` or ``offline``.

Narrative and data processing are independent: in live mode they run concurrently, so a
full analysis costs the critical path (chart, then the slower of the two, then meta), not
the sum. They are planned (budget reserved, models chosen) and committed (costs charged,
failures counted) in a fixed order, so budgets, circuit breakers and cassette keys are
identical on every replay, which runs them one after the other.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from backtest.data import file_sha256
from backtest.llm.cassette import Cassette
from backtest.llm.client import PROFILES, CallContext, LLMClient, response_format_for
from backtest.llm.offline import OfflineAnalyst
from backtest.llm.router import RolePlan, RoleRun, Router, load_routing
from strategies.base import AgentSignal, Decision, MarketView, Observation, action_to_target
from strategies.llm.prompts import PROMPT_VERSIONS, build_messages, market_context, prompts_sha256
from strategies.llm.schemas import ROLE_SCHEMAS, TradingAction, parse_answer

__all__ = ["LLMPolicy", "fallback_average"]

_AGENT_ROLES = ("chart_analysis", "narrative", "data_processor")
# JSON schemas of the role answers, built once (pydantic takes ~1 ms per build).
_SCHEMAS = {role: schema.model_json_schema() for role, schema in ROLE_SCHEMAS.items()}
_FEATURE_FIELDS = ("support", "resistance", "order_flow_imbalance", "sentiment")
_DEFAULT_ROUTING = "experiments/routing/seed_stack.toml"


def fallback_average(signals: list[AgentSignal]) -> tuple[str, float, float]:
    """The seed's ``_fallback_decision``: average the usable signals.

    Returns:
        ``(action, size, confidence)``: BUY above +0.5, SELL below -0.5, else HOLD; size is
        half the absolute mean signal.
    """
    usable = [s for s in signals if not s.abstain]
    if not usable:
        return "HOLD", 0.0, 0.0
    mean_signal = sum(s.signal for s in usable) / len(usable)
    mean_confidence = sum(s.confidence for s in usable) / len(usable)
    action = "BUY" if mean_signal > 0.5 else "SELL" if mean_signal < -0.5 else "HOLD"
    return action, abs(mean_signal) * 0.5, mean_confidence


def _abstaining(role: str, why: str) -> AgentSignal:
    # Failures are data: an explicit abstain that keeps the reason and the raw text.
    return AgentSignal(agent_name=role, signal=0.0, confidence=0.0, abstain=True, reasoning=why)


class LLMPolicy:
    """The seed's multi-agent LLM strategy.

    Args:
        name: Label in the ledger.
        routing: Routing TOML file (``experiments/routing/seed_stack.toml`` by default).
        mode: ``auto``, ``live``, ``replay`` or ``offline`` (see the module docstring).
        cassette: Cassette directory.
        record_mode: Record mode for live runs (``new_episodes`` by default).
        prices: Price table name in ``backtest/llm/prices.toml`` for live cost estimates.
        every_n_bars: Run the graph every N bars; HOLD in between.
        lookback_bars: Bars of history in the prompts.
        max_run_usd: Hard cap on the run's LLM cost (overrides the routing file's).
        base_url: Overrides the routing's base URL (a local server, the test server).
        max_retries: Retries per model before falling back to the next.
    """

    def __init__(
        self,
        name: str = "llm",
        *,
        routing: str = _DEFAULT_ROUTING,
        mode: str = "auto",
        cassette: str = "cassettes/default",
        record_mode: str = "new_episodes",
        prices: str = "openrouter",
        every_n_bars: int = 1,
        lookback_bars: int = 60,
        max_run_usd: float | None = None,
        base_url: str | None = None,
        max_retries: int = 3,
    ) -> None:
        if mode not in ("auto", "live", "replay", "offline"):
            raise ValueError(f"mode must be auto, live, replay or offline, got {mode!r}")
        if every_n_bars < 1:
            raise ValueError(f"every_n_bars must be >= 1, got {every_n_bars}")
        self.name = name
        self.routing = load_routing(routing)
        if max_run_usd is not None:
            self.routing = self.routing.model_copy(
                update={
                    "budget": self.routing.budget.model_copy(update={"max_run_usd": max_run_usd})
                }
            )
        if base_url is not None:
            self.routing = self.routing.model_copy(update={"base_url": base_url})
        self.max_retries = max_retries
        self.mode = mode
        self.cassette_path = Path(cassette)
        self.record_mode = record_mode
        self.prices_table = prices
        self.every_n_bars = every_n_bars
        self.lookback_bars = lookback_bars
        self.router: Router | None = None
        self._formats: dict[str, dict[str, Any]] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"llm-{name}")
        self.source = ""
        self._since = 0

    @classmethod
    def input_hashes(cls, params: Mapping[str, Any]) -> dict[str, str]:
        """Hash what a policy built from ``params`` reads: routing file, prompts, price table.

        A routing file that does not exist hashes as ``missing`` (the run itself then fails
        with the fix).
        """
        from backtest.llm import pricing

        routing = Path(str(params.get("routing", _DEFAULT_ROUTING)))
        prices = Path(pricing.__file__).with_name("prices.toml")
        return {
            "routing": file_sha256(routing) if routing.is_file() else "missing",
            "prompts": prompts_sha256(),
            "prices": file_sha256(prices),
        }

    # ------------------------------------------------------------------ set-up

    def _resolve_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        profile = PROFILES.get(self.routing.profile)
        if profile is not None and os.environ.get(profile.api_key_env):
            return "live"
        if self.cassette_path.is_dir() and any(self.cassette_path.glob("shard-*.tsv")):
            return "replay"
        return "offline"

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        """Pick the client (live, replay or offline) and start fresh budgets and breakers."""
        self.source = self._resolve_mode()
        self._since = 0
        if self.source == "offline":
            self.router = Router(self.routing, OfflineAnalyst())
            return
        from backtest.llm.pricing import PriceTable

        record_mode = "none" if self.source == "replay" else self.record_mode
        client = LLMClient(
            Cassette(self.cassette_path, record_mode),  # type: ignore[arg-type]
            profile=self.routing.profile,
            base_url=self.routing.base_url,
            seed=seed or 0,
            max_retries=self.max_retries,
            prices=PriceTable.load(table=self.prices_table),
        )
        self.router = Router(self.routing, client, prices=client.prices)

    # --------------------------------------------------------------- deciding

    def _signal(self, role: str, run: RoleRun) -> AgentSignal:
        if run.result is None:
            return _abstaining(role, f"no answer: {run.abstain_reason}")
        parsed = parse_answer(role, run.result.content)
        if parsed.answer is None:
            return _abstaining(role, f"unparseable ({parsed.error}): {parsed.raw[:1000]}")
        answer = parsed.answer
        features = {
            f: float(getattr(answer, f))
            for f in _FEATURE_FIELDS
            if getattr(answer, f, None) is not None
        }
        return AgentSignal(
            agent_name=role,
            signal=answer.signal,
            confidence=answer.confidence,
            features=features,
            reasoning=answer.reasoning,
        )

    def _plan(
        self, role: str, messages: list[dict[str, Any]], market: dict[str, Any], obs: Observation
    ) -> RolePlan:
        assert self.router is not None
        route = self.routing.roles[role]
        return self.router.plan(
            role,
            messages,
            context=CallContext(strategy=self.name, timestamp=market["decision_time"]),
            day=market["decision_time"][:10],
            bar=obs.t,
            market={**market, "role": role},
            response_format=self._formats.setdefault(
                role, response_format_for(route.primary, _SCHEMAS[role], role)
            ),
            prompt_version=PROMPT_VERSIONS[role],
            intraday=obs.market.frequency not in ("1d", "1w"),
        )

    def _ask(
        self, role: str, messages: list[dict[str, Any]], market: dict[str, Any], obs: Observation
    ) -> RoleRun:
        assert self.router is not None
        plan = self._plan(role, messages, market, obs)
        return self.router.commit(plan, self.router.execute(plan))

    def _ask_together(
        self, roles: list[str], market: dict[str, Any], obs: Observation
    ) -> list[RoleRun]:
        """Independent nodes: planned and committed in order, run concurrently when live."""
        assert self.router is not None
        plans = [self._plan(role, build_messages(role, market), market, obs) for role in roles]
        if self.source == "live" and len(plans) > 1:
            runs = list(self._pool.map(self.router.execute, plans))
        else:
            runs = [self.router.execute(plan) for plan in plans]
        return [self.router.commit(plan, run) for plan, run in zip(plans, runs, strict=True)]

    def act(self, obs: Observation) -> Decision:
        """Run the graph (on decision bars) and map the meta answer onto a target."""
        self._since += 1
        if (self._since - 1) % self.every_n_bars:
            return Decision(target_position=None, action="HOLD", reasoning="between LLM calls")
        market = market_context(obs.market, lookback=self.lookback_bars)
        calls: list[Any] = []
        signals: list[AgentSignal] = []
        roles = list(_AGENT_ROLES)
        if market["documents"] and "document_analysis" in self.routing.roles:
            roles.append("document_analysis")
        # The seed's graph: chart first, then narrative and data (independent) together,
        # then documents when there are any.
        present = [r for r in roles if r in self.routing.roles]
        stages = [
            [r for r in present if r == "chart_analysis"],
            [r for r in present if r in ("narrative", "data_processor")],
            [r for r in present if r == "document_analysis"],
        ]
        for stage in stages:
            for role, run in zip(stage, self._ask_together(stage, market, obs), strict=True):
                calls += run.calls
                signals.append(self._signal(role, run))
        meta_market = {
            **market,
            "signals": [
                {"agent": s.agent_name, "signal": s.signal, "confidence": s.confidence}
                for s in signals
                if not s.abstain
            ],
        }
        meta_run = self._ask(
            "meta_orchestrator",
            build_messages(
                "meta_orchestrator",
                market,
                signals=signals,
                position=obs.position,
                equity_usd=obs.equity_usd,
            ),
            meta_market,
            obs,
        )
        calls += meta_run.calls
        # Offline answers already say so; the graph's own messages must too.
        label = "offline analyst: " if self.source == "offline" else ""
        parsed = (
            parse_answer("meta_orchestrator", meta_run.result.content)
            if (meta_run.result is not None)
            else None
        )
        if parsed is not None and isinstance(parsed.answer, TradingAction):
            action = parsed.answer
            target = action_to_target(action.action, action.size)
            return Decision(
                target_position=target,
                confidence=action.confidence,
                reasoning=action.reasoning,
                signals=tuple(signals),
                llm_calls=tuple(calls),
                action=action.action,
            )
        if all(s.abstain for s in signals):
            why = meta_run.abstain_reason or (parsed.error if parsed else "no answer")
            return Decision(
                target_position=None,
                abstain=True,
                signals=tuple(signals),
                llm_calls=tuple(calls),
                action="ABSTAIN",
                reasoning=f"{label}no agent and no meta answer: {why}",
            )
        word, size, confidence = fallback_average(signals)
        why = meta_run.abstain_reason or (parsed.error if parsed else "no answer")
        target = action_to_target(word, size)
        return Decision(
            target_position=target,
            confidence=confidence if math.isfinite(confidence) else 0.0,
            signals=tuple(signals),
            llm_calls=tuple(calls),
            action=f"{word} (fallback)",
            reasoning=f"{label}meta orchestrator failed ({why}); fallback averaging",
        )
