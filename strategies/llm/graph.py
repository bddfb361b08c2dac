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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from backtest.llm.cassette import RECORD_MODES, Cassette
from backtest.llm.client import PROFILES, CallContext, LLMClient, response_format_for
from backtest.llm.offline import OfflineAnalyst
from backtest.llm.router import RolePlan, RoleRun, Router, load_routing
from strategies.base import AgentSignal, Decision, MarketView, Observation, action_to_target
from strategies.llm.prompts import PROMPT_VERSIONS, build_messages, market_context
from strategies.llm.schemas import ROLE_SCHEMAS, TradingAction, parse_answer

__all__ = ["LLMPolicy", "fallback_average"]

_AGENT_ROLES = ("chart_analysis", "narrative", "data_processor")
# JSON schemas of the role answers, built once (pydantic takes ~1 ms per build).
_SCHEMAS = {role: schema.model_json_schema() for role, schema in ROLE_SCHEMAS.items()}
_FEATURE_FIELDS = ("support", "resistance", "order_flow_imbalance", "sentiment")


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
        timeout_s: Per-attempt timeout of a live call, in seconds.
        backoff_s: First backoff between live retries (doubling, with seeded jitter).
        api_key_env: Environment variable holding the API key, instead of the profile's
            (its value is scrubbed from the cassette like the known key variables).

    Raises:
        ValueError: A parameter out of range, a replay-only cassette that holds nothing, or
            (for a live run) a routing model the price table does not price: all found here,
            before the engine loads a bar or any call goes out.
    """

    def __init__(
        self,
        name: str = "llm",
        *,
        routing: str = "experiments/routing/seed_stack.toml",
        mode: str = "auto",
        cassette: str = "cassettes/default",
        record_mode: str = "new_episodes",
        prices: str = "openrouter",
        every_n_bars: int = 1,
        lookback_bars: int = 60,
        max_run_usd: float | None = None,
        base_url: str | None = None,
        max_retries: int = 3,
        timeout_s: float = 60.0,
        backoff_s: float = 1.0,
        api_key_env: str | None = None,
    ) -> None:
        if mode not in ("auto", "live", "replay", "offline"):
            raise ValueError(f"mode must be auto, live, replay or offline, got {mode!r}")
        if record_mode not in RECORD_MODES:
            raise ValueError(
                f"record_mode must be one of {', '.join(RECORD_MODES)}, got {record_mode!r}"
            )
        for key, value, low in (
            ("every_n_bars", every_n_bars, 1),
            ("lookback_bars", lookback_bars, 1),
            ("max_retries", max_retries, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{key} must be a whole number >= {low}, got {value!r}")
        for key, number in (("timeout_s", timeout_s), ("backoff_s", backoff_s)):
            if isinstance(number, bool) or not isinstance(number, int | float) or not number > 0:
                raise ValueError(f"{key} must be a positive number of seconds, got {number!r}")
        if max_run_usd is not None and (
            isinstance(max_run_usd, bool)
            or not isinstance(max_run_usd, int | float)
            or not max_run_usd > 0
        ):
            raise ValueError(
                f"max_run_usd must be a positive number of dollars (leave it out for no cap), "
                f"got {max_run_usd!r}"
            )
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
        self.timeout_s = float(timeout_s)
        self.backoff_s = float(backoff_s)
        if api_key_env is not None and not str(api_key_env).strip():
            raise ValueError("api_key_env must name an environment variable, got ''")
        self.api_key_env = api_key_env
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
        self._prices: Any = None
        self._preflight()

    def _preflight(self) -> None:
        """Refuse, before any work, a run that could only fail at its first call."""
        source = self._resolve_mode()
        if source == "offline":
            return
        profile = PROFILES.get(self.routing.profile)
        if profile is None:
            raise ValueError(
                f"routing {self.routing.name!r}: unknown provider profile "
                f"{self.routing.profile!r}. Fix: set profile to one of {', '.join(PROFILES)}"
            )
        record_mode = "none" if source == "replay" else self.record_mode
        if record_mode == "none" and not any(self.cassette_path.glob("shard-*.tsv")):
            raise ValueError(
                f"the cassette {self.cassette_path} holds no recordings, and replay-only "
                f"(mode {self.mode!r}, record_mode {record_mode!r}) would miss on the first "
                "call. Fix: point cassette at a recorded cassette, or record one first with "
                "mode = 'live' and record_mode = 'new_episodes'"
            )
        if source != "live":
            return
        key_env = self.api_key_env or profile.api_key_env
        if profile.name != "openai_compatible" and not os.environ.get(key_env):
            raise ValueError(
                f"mode 'live' needs an API key, and the environment variable "
                f"{key_env} (profile {profile.name!r}) is not set. Fix: export "
                f"{key_env}=..., or replay a recorded cassette with mode = "
                "'replay', or use mode = 'offline'"
            )
        from backtest.errors import PricingError
        from backtest.llm.pricing import PriceTable

        self._prices = PriceTable.load(table=self.prices_table)
        unpriced = []
        for model in self.routing.models():
            try:
                self._prices.price(model)
            except PricingError:
                unpriced.append(model)
        if unpriced:
            raise ValueError(
                f"routing {self.routing.name!r} names model(s) {', '.join(unpriced)} that "
                f"price table {self.prices_table!r} does not price, so no budget could be "
                "enforced before their calls. Fix: add them to backtest/llm/prices.toml, "
                "pick another table (prices = '...'), or use priced models in the routing file"
            )

    # ------------------------------------------------------------------ set-up

    def _resolve_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        profile = PROFILES.get(self.routing.profile)
        if profile is not None and os.environ.get(self.api_key_env or profile.api_key_env):
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
            Cassette(
                self.cassette_path,
                record_mode,  # type: ignore[arg-type]
                secret_env=[self.api_key_env] if self.api_key_env else [],
            ),
            profile=self.routing.profile,
            base_url=self.routing.base_url,
            api_key_env=self.api_key_env,
            seed=seed or 0,
            max_retries=self.max_retries,
            timeout_s=self.timeout_s,
            backoff_s=self.backoff_s,
            prices=self._prices or PriceTable.load(table=self.prices_table),
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
