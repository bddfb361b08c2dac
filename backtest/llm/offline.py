"""The offline analyst: a rule-based stand-in for every LLM role, for runs with no key.

It answers through the same interface as :class:`~backtest.llm.client.LLMClient` (``chat``
returning a :class:`~backtest.llm.client.ChatResult`) and in the same JSON the roles ask
the models for, computed from the structured market context the prompt was written from
(``ChatRequest.context``: bars, news and documents up to the decision time only). It costs
$0, opens no socket, is deterministic, and labels itself everywhere: the served model is
``offline/rule-based-v1``, the provider ``offline``, the cache and cost source ``offline``.
It is a baseline that lets LLM-only and hybrid strategies run end to end, not a model of
what an LLM would say.

Context keys it reads (all optional; lists are oldest first and end at the decision bar):
``open``, ``high``, ``low``, ``close``, ``volume`` (numbers), ``news`` and ``documents``
(lists of ``{"headline": ..., "text": ...}``), ``signals`` (for the meta role: a list of
``{"agent": ..., "signal": ..., "confidence": ...}``).

Answers per role (every one also has ``signal`` in [-1, 1], ``confidence`` in [0, 1] and
``reasoning``):

=================== ===============================================================
role                fields
=================== ===============================================================
chart_analysis      trend (up/down/sideways), support, resistance, patterns
narrative           regime (bull/bear/ranging/volatile), drivers, risks
data_processor      order_flow_imbalance, volume_spike
document_analysis   sentiment, key_points
meta_orchestrator   action (BUY/SELL/HOLD), size, risk_level (low/medium/high)
=================== ===============================================================
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from backtest.errors import ConfigError
from backtest.llm.client import CallContext, ChatRequest, ChatResult
from backtest.llm.records import LLMCall, Usage

__all__ = ["OFFLINE_MODEL", "ROLES", "OfflineAnalyst", "text_sentiment"]

OFFLINE_MODEL = "offline/rule-based-v1"
ROLES: tuple[str, ...] = (
    "chart_analysis",
    "narrative",
    "data_processor",
    "document_analysis",
    "meta_orchestrator",
)
_POSITIVE = frozenset(
    [
        "beat",
        "beats",
        "growth",
        "gain",
        "gains",
        "rally",
        "rallies",
        "surge",
        "surges",
        "upgrade",
        "upgraded",
        "record",
        "strong",
        "bullish",
        "profit",
        "profits",
        "rise",
        "rises",
        "rising",
        "optimism",
        "recovery",
        "expand",
        "expands",
    ]
)
_NEGATIVE = frozenset(
    [
        "miss",
        "misses",
        "loss",
        "losses",
        "fall",
        "falls",
        "falling",
        "plunge",
        "plunges",
        "downgrade",
        "downgraded",
        "weak",
        "bearish",
        "recession",
        "default",
        "crisis",
        "fraud",
        "lawsuit",
        "cut",
        "cuts",
        "decline",
        "declines",
        "fear",
    ]
)


def text_sentiment(texts: Sequence[str]) -> float:
    """Word-list sentiment in [-1, 1]: (positive - negative) / (positive + negative)."""
    positive = negative = 0
    for text in texts:
        for word in re.findall(r"[a-z]+", text.lower()):
            positive += word in _POSITIVE
            negative += word in _NEGATIVE
    total = positive + negative
    return 0.0 if total == 0 else (positive - negative) / total


def _clip(value: float, low: float = -1.0, high: float = 1.0) -> float:
    if not math.isfinite(value):
        return 0.0
    return min(max(value, low), high)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _std(values: Sequence[float]) -> float:
    if len(values) < 2:
        return 0.0
    mu = _mean(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))


def _floats(context: Mapping[str, Any], name: str) -> list[float]:
    return [float(v) for v in context.get(name) or []]


def _returns(closes: Sequence[float]) -> list[float]:
    return [closes[i] / closes[i - 1] - 1.0 for i in range(1, len(closes)) if closes[i - 1] > 0]


def _texts(items: Any) -> list[str]:
    return [
        f"{i.get('headline', '')} {i.get('text', '')}"
        for i in items or []
        if isinstance(i, Mapping)
    ]


def _chart(ctx: Mapping[str, Any]) -> dict[str, Any]:
    close, high, low = _floats(ctx, "close"), _floats(ctx, "high"), _floats(ctx, "low")
    if len(close) < 5:
        return {
            "trend": "sideways",
            "support": None,
            "resistance": None,
            "patterns": [],
            "signal": 0.0,
            "confidence": 0.0,
            "reasoning": "offline analyst: too few bars for a chart reading",
        }
    fast, slow = _mean(close[-10:]), _mean(close[-30:])
    signal = _clip((fast / slow - 1.0) * 20.0)
    trend = "up" if signal > 0.1 else "down" if signal < -0.1 else "sideways"
    recent_high, recent_low = max((high or close)[-20:]), min((low or close)[-20:])
    patterns = []
    if len(close) >= 20 and close[-1] >= recent_high:
        patterns.append("breakout_high")
    if len(close) >= 20 and close[-1] <= recent_low:
        patterns.append("breakdown_low")
    return {
        "trend": trend,
        "support": round(recent_low, 6),
        "resistance": round(recent_high, 6),
        "patterns": patterns,
        "signal": round(signal, 6),
        "confidence": round(min(1.0, abs(signal)) * 0.8, 6),
        "reasoning": f"offline analyst: 10-bar average {fast:.4g} vs 30-bar {slow:.4g}",
    }


def _narrative(ctx: Mapping[str, Any]) -> dict[str, Any]:
    close = _floats(ctx, "close")
    returns = _returns(close[-61:])
    if len(returns) < 5:
        regime, drift, vol = "ranging", 0.0, 0.0
    else:
        drift = close[-1] / close[-len(returns) - 1] - 1.0
        vol = _std(returns)
        long_vol = _std(_returns(close))
        if long_vol > 0 and vol > 2.0 * long_vol:
            regime = "volatile"
        elif drift > 0.05:
            regime = "bull"
        elif drift < -0.05:
            regime = "bear"
        else:
            regime = "ranging"
    news = _texts(ctx.get("news"))
    mood = text_sentiment(news)
    signal = _clip(0.7 * _clip(drift * 5.0) + 0.3 * mood)
    drivers = [f"{len(returns)}-bar return {drift:+.1%}"] + (
        [f"news sentiment {mood:+.2f} over {len(news)} item(s)"] if news else []
    )
    risks = ["volatility regime"] if regime == "volatile" else []
    return {
        "regime": regime,
        "drivers": drivers,
        "risks": risks,
        "signal": round(signal, 6),
        "confidence": round(0.3 + 0.4 * min(1.0, abs(signal)), 6),
        "reasoning": f"offline analyst: {regime} regime from price drift and news words",
    }


def _data(ctx: Mapping[str, Any]) -> dict[str, Any]:
    opens, close, volume = _floats(ctx, "open"), _floats(ctx, "close"), _floats(ctx, "volume")
    n = min(len(opens), len(close), len(volume), 10)
    if n == 0:
        return {
            "order_flow_imbalance": 0.0,
            "volume_spike": False,
            "signal": 0.0,
            "confidence": 0.0,
            "reasoning": "offline analyst: no bars",
        }
    signed = sum(
        math.copysign(v, c - o) if c != o else 0.0
        for o, c, v in zip(opens[-n:], close[-n:], volume[-n:], strict=True)
    )
    total = sum(volume[-n:])
    imbalance = _clip(signed / total) if total > 0 else 0.0
    history = volume[-30:-1]
    spike = bool(history) and volume[-1] > _mean(history) + 2.0 * _std(history)
    return {
        "order_flow_imbalance": round(imbalance, 6),
        "volume_spike": spike,
        "signal": round(imbalance, 6),
        "confidence": round(0.2 + 0.5 * abs(imbalance) + (0.1 if spike else 0.0), 6),
        "reasoning": f"offline analyst: up-bar minus down-bar volume over {n} bars",
    }


def _documents(ctx: Mapping[str, Any]) -> dict[str, Any]:
    texts = _texts(ctx.get("documents"))
    mood = text_sentiment(texts)
    points = [t.strip()[:120] for t in texts[-3:]]
    return {
        "sentiment": round(mood, 6),
        "key_points": points,
        "signal": round(mood * 0.5, 6),
        "confidence": round(0.2 + 0.3 * min(1.0, len(texts) / 3.0), 6) if texts else 0.0,
        "reasoning": f"offline analyst: word-list sentiment over {len(texts)} document(s)",
    }


def _meta(ctx: Mapping[str, Any]) -> dict[str, Any]:
    signals = [s for s in ctx.get("signals") or [] if isinstance(s, Mapping)]
    weights = [max(0.0, float(s.get("confidence", 0.0))) for s in signals]
    total = sum(weights)
    combined = (
        (
            sum(float(s.get("signal", 0.0)) * w for s, w in zip(signals, weights, strict=True))
            / total
        )
        if total > 0
        else 0.0
    )
    combined = _clip(combined)
    # The seed's thresholds: act beyond +-0.3, size half the combined signal.
    action = "BUY" if combined > 0.3 else "SELL" if combined < -0.3 else "HOLD"
    size = 0.0 if action == "HOLD" else round(min(abs(combined), 1.0) * 0.5, 6)
    confidence = round(total / len(signals), 6) if signals else 0.0
    vol = _std(_returns(_floats(ctx, "close")[-21:]))
    risk = "high" if vol > 0.02 else "medium" if vol > 0.01 else "low"
    return {
        "action": action,
        "size": size,
        "signal": round(combined, 6),
        "confidence": min(1.0, confidence),
        "risk_level": risk,
        "reasoning": f"offline analyst: confidence-weighted mean of {len(signals)} signal(s) "
        f"= {combined:+.2f}",
    }


_ANSWERS = {
    "chart_analysis": _chart,
    "narrative": _narrative,
    "data_processor": _data,
    "document_analysis": _documents,
    "meta_orchestrator": _meta,
}


class OfflineAnalyst:
    """Answer every role by rule, at $0, with no network; a drop-in for ``LLMClient``."""

    name = "offline"

    def chat(
        self, request: ChatRequest, context: CallContext | None = None, *, at: date | None = None
    ) -> ChatResult:
        """Answer ``request`` for the role in ``context`` (or ``request.context["role"]``).

        Raises:
            ConfigError: The role is not one of :data:`ROLES`.
        """
        ctx = context or CallContext()
        market = dict(request.context or {})
        role = ctx.role or str(market.get("role", ""))
        if role not in _ANSWERS:
            raise ConfigError(
                f"offline analyst: unknown role {role!r}. Fix: use one of {', '.join(ROLES)}."
            )
        answer = _ANSWERS[role](market)
        content = json.dumps(answer, sort_keys=True)
        call = LLMCall(
            role=role,
            model_requested=request.model,
            model_served=OFFLINE_MODEL,
            provider="offline",
            cost_usd=0.0,
            spend_usd=0.0,
            cost_source="offline",
            cache="offline",
            fallback_from=ctx.fallback_from,
            prompt_version=request.prompt_version or ctx.prompt_version,
            finish_reason="stop",
        )
        return ChatResult(
            content=content,
            finish_reason="stop",
            usage=Usage(),
            model_served=OFFLINE_MODEL,
            provider="offline",
            call=call,
            raw={"model": OFFLINE_MODEL, "offline": True},
        )
