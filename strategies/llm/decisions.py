"""The LLM graph's decision loop: when it runs, how it asks its agents, what it decides.

:class:`_DecisionLoop` is the half of :class:`strategies.llm.graph.LLMPolicy` that runs
once the policy is set up: the call schedule (the first bar, ``every_n_bars``, volatility
spikes and news; :meth:`_DecisionLoop.estimate_llm_cost` replays it to price a run before
its first call), the agents asked stage by stage (narrative and data processing together),
the meta orchestrator's answer mapped onto a target, and the seed's fallback averaging when
it fails (:func:`fallback_average`). Failures are data: an agent without a usable answer is
an abstaining signal, never a neutral 0. The module docstring of :mod:`strategies.llm.graph`
has the rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from backtest.llm.client import PROFILES, CallContext
from backtest.llm.router import RolePlan, RoleRun, Router, RoutingConfig
from strategies.base import AgentSignal, Decision, MarketView, Observation, action_to_target
from strategies.llm.anonymize import Anonymizer
from strategies.llm.answers import Judged, judge
from strategies.llm.charts import ChartSpec, chart_part
from strategies.llm.prompts import (
    CHART_IMAGE_VERSION,
    PROMPT_VERSIONS,
    build_messages,
    market_context,
)
from strategies.llm.schemas import ROLE_SCHEMAS, TradingAction

__all__ = ["fallback_average", "volatility_spikes"]

_AGENT_ROLES = ("chart_analysis", "narrative", "data_processor")
# JSON schemas of the role answers, built once (pydantic takes ~1 ms per build).
_SCHEMAS = {role: schema.model_json_schema() for role, schema in ROLE_SCHEMAS.items()}
_FEATURE_FIELDS = ("support", "resistance", "order_flow_imbalance", "sentiment")
_PRICE_FIELDS = ("support", "resistance")


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
    return AgentSignal(
        agent_name=role,
        signal=0.0,
        confidence=0.0,
        abstain=True,
        reasoning=why,
        features={"age_bars": 0.0},
    )


def _aged(signal: AgentSignal, age: int) -> AgentSignal:
    return AgentSignal(
        agent_name=signal.agent_name,
        signal=signal.signal,
        confidence=signal.confidence,
        features={**signal.features, "age_bars": float(age)},
        reasoning=signal.reasoning,
        abstain=signal.abstain,
    )


def volatility_spikes(close: np.ndarray, k: float, window: int) -> np.ndarray:
    """Bars whose log return exceeds ``k`` times the std of the ``window`` returns before it.

    Args:
        close: Closes, oldest first.
        k: Threshold in standard deviations.
        window: Returns in the rolling standard deviation (sample std, ddof 1).

    Returns:
        A boolean per bar (False where fewer than ``window`` earlier returns exist).
    """
    close = np.asarray(close, dtype=np.float64)
    out = np.zeros(len(close), dtype=bool)
    if len(close) < window + 2:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.diff(np.log(close))
    past = np.lib.stride_tricks.sliding_window_view(returns[:-1], window)
    std = past.std(axis=1, ddof=1)
    latest = np.abs(returns[window:])
    with np.errstate(invalid="ignore"):
        out[window + 1 :] = (std > 0) & (latest > k * std)
    return out


class _DecisionLoop:
    """The decision loop of :class:`~strategies.llm.graph.LLMPolicy` (a mixin: the policy's
    ``__init__`` and ``reset`` set every attribute named here)."""

    name: str
    routing: RoutingConfig
    router: Router | None
    source: str
    prices_table: str
    every_n_bars: int
    on_volatility_k: float | None
    volatility_window: int
    on_news: bool
    lookback_bars: int
    portfolio_in_prompt: bool
    chart_images: bool
    chart_spec: ChartSpec
    anonymizer: Anonymizer | None
    held: Decision | None
    held_age: int
    _chart_text_fallback: bool
    _anonymizer_template: Anonymizer | None
    _pool: ThreadPoolExecutor
    _news_seen: int | None
    _resolve_mode: Callable[[], str]

    def estimate_llm_cost(self, market: MarketView, first_bar: int) -> dict[str, Any]:
        """Estimate the run's calls and dollars before the first call.

        Decisions: the call schedule (first bar, ``every_n_bars``, and the volatility and
        news events found in the window's bars and news) replayed over bars
        ``first_bar``..``market.t``. Dollars per decision: for each role, the model the
        decision tree picks first, priced by :meth:`PriceTable.estimate_max_cost` from the
        policy's price table (every prompt counted conservatively as built at the last bar,
        every answer at its ``max_tokens``): an upper bound when no call falls back, retries
        or is downgraded. The offline analyst and a cassette replay pay nothing, but
        ``cost_usd`` charges the recorded cost, which this bounds.

        Args:
            market: The run's bars, positioned at the last evaluated bar.
            first_bar: The first decision bar.

        Returns:
            ``{"calls": int, "usd": float, "max_run_usd": float | None}`` (the run's hard
            cap, so the engine can warn when the estimate passes it).
        """
        from backtest.llm.price_files import load_prices
        from backtest.llm.pricing import count_prompt_tokens

        decisions = self._scheduled_calls(market, first_bar)
        prices = load_prices(self.prices_table)
        profile = PROFILES.get(self.routing.profile)
        local = profile is not None and profile.local
        router = Router(self.routing, None, prices=prices)
        context = market_context(market, lookback=self.lookback_bars)
        roles = [r for r in _AGENT_ROLES if r in self.routing.roles]
        if len(market.documents(1)) and "document_analysis" in self.routing.roles:
            roles.append("document_analysis")
        placeholder = [
            AgentSignal(agent_name=r, signal=0.5, confidence=0.5, reasoning="x" * 200)
            for r in roles
        ]
        intraday = market.frequency not in ("1d", "1w")
        calls_per, usd_per = 0, 0.0
        for role in [*roles, "meta_orchestrator"]:
            if role == "meta_orchestrator":
                messages = build_messages(role, context, signals=placeholder, equity_usd=1e6)
            else:
                messages = self._messages(role, context)
            images = int(isinstance(messages[-1]["content"], list))
            tokens = count_prompt_tokens(messages)
            model = router.choose(
                role, has_image=images > 0, prompt_tokens=tokens, intraday=intraday
            )[0]
            route = self.routing.roles[role]
            if not local:  # a server on this machine costs $0 by rule
                usd_per += prices.estimate_max_cost(model, tokens, route.max_tokens, images=images)
            calls_per += 1
        return {
            "calls": decisions * calls_per,
            "usd": decisions * usd_per,
            # The offline analyst's answers cost $0: its runs never reach the cap.
            "max_run_usd": None
            if self._resolve_mode() == "offline"
            else self.routing.budget.max_run_usd,
        }

    def _scheduled_calls(self, market: MarketView, first_bar: int) -> int:
        stop = len(market)
        n = max(0, stop - first_bar)
        events = np.zeros(n, dtype=bool)
        if self.on_volatility_k is not None:
            spikes = volatility_spikes(market.close, self.on_volatility_k, self.volatility_window)
            events |= spikes[first_bar:stop]
        if self.on_news:
            news = market.news()
            if len(news):
                available = pd.DatetimeIndex(news["available_at"]).as_unit("ns").asi8
                bars = np.searchsorted(market.timestamps_ns, available, side="right") - 1
                bars = bars[(bars > first_bar) & (bars < stop)] - first_bar
                events[bars] = True
        calls, age = 0, -1
        for k in range(n):
            if age < 0 or events[k] or (self.every_n_bars and age + 1 >= self.every_n_bars):
                calls, age = calls + 1, 0
            else:
                age += 1
        return calls

    # --------------------------------------------------------------- deciding

    def _signal(self, role: str, run: RoleRun, judged: Judged) -> AgentSignal:
        parsed = judged.parsed
        if parsed is None:
            return _abstaining(role, f"no answer: {run.abstain_reason}")
        if parsed.answer is None:
            return _abstaining(
                role, f"abstain ({parsed.reason}): {parsed.error}: {parsed.raw[:1000]}"
            )
        answer = parsed.answer
        features = {
            f: float(getattr(answer, f))
            for f in _FEATURE_FIELDS
            if getattr(answer, f, None) is not None
        }
        features["age_bars"] = 0.0
        return AgentSignal(
            agent_name=role,
            signal=answer.signal,
            confidence=answer.confidence,
            features=features,
            reasoning=answer.reasoning,
        )

    def _plan(
        self,
        role: str,
        messages: list[dict[str, Any]],
        market: dict[str, Any],
        obs: Observation,
        when: str,
    ) -> RolePlan:
        assert self.router is not None
        image = role == "chart_analysis" and isinstance(messages[-1]["content"], list)
        # Fallbacks that cannot read the chart get the bars as a table instead.
        text = (
            (lambda: build_messages(role, market)) if image and self._chart_text_fallback else None
        )
        return self.router.plan(
            role,
            messages,
            context=CallContext(strategy=self.name, timestamp=when),
            day=when[:10],
            bar=obs.t,
            market={**market, "role": role},
            schema=_SCHEMAS[role],
            prompt_version=CHART_IMAGE_VERSION if image else PROMPT_VERSIONS[role],
            intraday=obs.market.frequency not in ("1d", "1w"),
            text_messages=text,
            text_prompt_version=PROMPT_VERSIONS[role],
        )

    def _messages(self, role: str, market: Mapping[str, Any]) -> list[dict[str, Any]]:
        if role == "chart_analysis" and self.chart_images:
            return build_messages(role, market, chart=chart_part(market, self.chart_spec))
        return build_messages(role, market)

    def _ask(
        self,
        role: str,
        messages: list[dict[str, Any]],
        market: dict[str, Any],
        obs: Observation,
        when: str,
    ) -> RoleRun:
        assert self.router is not None
        plan = self._plan(role, messages, market, obs, when)
        return self.router.commit(plan, self.router.execute(plan))

    def _ask_together(
        self, roles: list[str], market: dict[str, Any], obs: Observation, when: str
    ) -> list[RoleRun]:
        """Independent nodes: planned and committed in order, run concurrently when live."""
        assert self.router is not None
        plans = [
            self._plan(role, self._messages(role, market), market, obs, when) for role in roles
        ]
        if self.source == "live" and len(plans) > 1:
            runs = list(self._pool.map(self.router.execute, plans))
        else:
            runs = [self.router.execute(plan) for plan in plans]
        return [self.router.commit(plan, run) for plan, run in zip(plans, runs, strict=True)]

    def _restored(self, signal: AgentSignal) -> AgentSignal:
        """``signal`` with the price levels it read off anonymised bars in real units."""
        anonymizer = self.anonymizer
        if anonymizer is None or not any(f in signal.features for f in _PRICE_FIELDS):
            return signal
        features = {
            k: anonymizer.restore_price(v) if k in _PRICE_FIELDS else v
            for k, v in signal.features.items()
        }
        return AgentSignal(
            agent_name=signal.agent_name,
            signal=signal.signal,
            confidence=signal.confidence,
            features=features,
            reasoning=signal.reasoning,
            abstain=signal.abstain,
        )

    def _trigger(self, market: MarketView) -> str:
        """Why the graph runs at this bar (``""``: it does not; the last signal holds)."""
        reason = ""
        if self.held is None:
            reason = "first bar"
        elif self.every_n_bars and self.held_age + 1 >= self.every_n_bars:
            reason = "schedule"
        if self.on_news:
            latest = market.news(1)
            newest = int(latest["available_at"].iloc[-1].value) if len(latest) else None
            if newest is not None and (self._news_seen is None or newest > self._news_seen):
                reason = reason or "news"
            self._news_seen = newest
        if not reason and self.on_volatility_k is not None:
            recent = market.close[-(self.volatility_window + 2) :]
            if volatility_spikes(recent, self.on_volatility_k, self.volatility_window)[-1]:
                reason = "volatility"
        return reason

    def _holding(self) -> Decision:
        held = self.held
        assert held is not None
        return Decision(
            target_position=None,
            # An abstain's confidence means nothing (there was no answer): hold 0, not it.
            confidence=0.0 if held.abstain else held.confidence,
            reasoning=f"{'offline analyst: ' if self.source == 'offline' else ''}"
            f"between LLM calls: the last signal ({held.action or 'none'}, "
            f"{self.held_age} bar(s) old) holds",
            signals=tuple(_aged(s, self.held_age) for s in held.signals),
            action="HOLD",
        )

    def act(self, obs: Observation) -> Decision:
        """Run the graph (on call bars) and map the meta answer onto a target."""
        trigger = self._trigger(obs.market)
        if not trigger:
            self.held_age += 1
            return self._holding()
        decision = self._decide(obs, trigger)
        self.held, self.held_age = decision, 0
        return decision

    def _decide(self, obs: Observation, trigger: str) -> Decision:
        if self._anonymizer_template is not None and self.anonymizer is None:
            # Factors fixed at the first call, from bars known then.
            self.anonymizer = self._anonymizer_template.fitted(
                obs.market.close, obs.market.volume[-self.lookback_bars :]
            )
        when = obs.market.decision_time.isoformat()
        market = market_context(obs.market, lookback=self.lookback_bars, anonymizer=self.anonymizer)
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
            for role, run in zip(stage, self._ask_together(stage, market, obs, when), strict=True):
                judged = judge(role, run)
                calls += judged.calls
                signals.append(self._signal(role, run, judged))
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
                position=obs.position if self.portfolio_in_prompt else None,
                equity_usd=obs.equity_usd if self.portfolio_in_prompt else None,
            ),
            meta_market,
            obs,
            when,
        )
        meta_judged = judge("meta_orchestrator", meta_run)
        calls += meta_judged.calls
        # The meta prompt saw the levels as the agents read them; the ledger keeps real ones.
        signals = [self._restored(sig) for sig in signals]
        # Offline answers already say so; the graph's own messages must too.
        label = "offline analyst: " if self.source == "offline" else ""
        called = f" [LLM call: {trigger}]" if trigger not in ("first bar", "schedule") else ""
        parsed = meta_judged.parsed
        if parsed is not None and isinstance(parsed.answer, TradingAction):
            action = parsed.answer
            target = action_to_target(action.action, action.size)
            return Decision(
                target_position=target,
                confidence=action.confidence,
                reasoning=action.reasoning + called,
                signals=tuple(signals),
                llm_calls=tuple(calls),
                action=action.action,
            )
        if all(s.abstain for s in signals):
            why = meta_run.abstain_reason or (
                f"{parsed.reason}: {parsed.error}" if parsed else "no answer"
            )
            return Decision(
                target_position=None,
                abstain=True,
                signals=tuple(signals),
                llm_calls=tuple(calls),
                action="ABSTAIN",
                reasoning=f"{label}no agent and no meta answer: {why}{called}",
            )
        word, size, confidence = fallback_average(signals)
        why = meta_run.abstain_reason or (
            f"{parsed.reason}: {parsed.error}" if parsed else "no answer"
        )
        target = action_to_target(word, size)
        return Decision(
            target_position=target,
            confidence=confidence if math.isfinite(confidence) else 0.0,
            signals=tuple(signals),
            llm_calls=tuple(calls),
            action=f"{word} (fallback)",
            reasoning=f"{label}meta orchestrator failed ({why}); fallback averaging{called}",
        )
