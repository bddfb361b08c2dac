"""The offline analyst: every role answers valid JSON, deterministically, at $0, offline."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.data import load_bars
from backtest.errors import ConfigError
from backtest.llm.client import CallContext, ChatRequest
from backtest.llm.offline import OFFLINE_MODEL, ROLES, OfflineAnalyst, text_sentiment

COMMON = {"signal", "confidence", "reasoning"}
FIELDS = {
    "chart_analysis": {"trend", "support", "resistance", "patterns"},
    "narrative": {"regime", "drivers", "risks"},
    "data_processor": {"order_flow_imbalance", "volume_spike"},
    "document_analysis": {"sentiment", "key_points"},
    "meta_orchestrator": {"action", "size", "risk_level"},
}


def _context(samples_dir: Path, t: int) -> dict[str, object]:
    frame = load_bars(samples_dir / "SP500.parquet").frame.iloc[max(0, t - 59) : t + 1]
    context: dict[str, object] = {
        c: frame[c].tolist() for c in ("open", "high", "low", "close", "volume")
    }
    context["news"] = [{"headline": "Stocks rally as earnings beat", "text": "strong growth"}]
    context["documents"] = [{"headline": "10-K", "text": "Revenue growth; lawsuit risk"}]
    context["signals"] = [
        {"agent": "narrative", "signal": 0.8, "confidence": 0.9},
        {"agent": "chart_analysis", "signal": 0.4, "confidence": 0.6},
    ]
    return context


def _ask(role: str, context: dict[str, object]) -> dict[str, object]:
    request = ChatRequest(
        model="deepseek/deepseek-chat",
        messages=({"role": "user", "content": "..."},),
        context=context,
    )
    result = OfflineAnalyst().chat(request, CallContext(role=role, strategy="llm"))
    assert result.model_served == OFFLINE_MODEL and result.provider == "offline"
    assert result.call.cost_usd == 0 and result.call.spend_usd == 0
    assert result.call.cache == "offline" and result.call.cost_source == "offline"
    return json.loads(result.content)


def test_every_role_answers_its_schema(samples_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the offline analyst opened a socket")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    context = _context(samples_dir, 2500)
    for role in ROLES:
        answer = _ask(role, context)
        assert set(answer) == COMMON | FIELDS[role], role
        assert -1 <= answer["signal"] <= 1 and 0 <= answer["confidence"] <= 1
        assert str(answer["reasoning"]).startswith("offline analyst")
    meta = _ask("meta_orchestrator", context)
    assert meta["action"] == "BUY" and 0 < meta["size"] <= 0.5  # the signals lean long
    with pytest.raises(ConfigError, match="unknown role"):
        _ask("astrology", context)


@settings(max_examples=30, deadline=None)
@given(t=st.integers(0, 5030), role=st.sampled_from(ROLES))
def test_answers_are_deterministic_and_in_range(samples_dir: Path, t: int, role: str) -> None:
    context = _context(samples_dir, t)
    first, second = _ask(role, context), _ask(role, context)
    assert first == second
    assert -1 <= first["signal"] <= 1 and 0 <= first["confidence"] <= 1
    assert all(not isinstance(v, float) or np.isfinite(v) for v in first.values())


def test_sentiment_word_lists() -> None:
    assert text_sentiment(["Earnings beat, shares rally"]) == 1.0
    assert text_sentiment(["Downgrade after loss"]) == -1.0
    assert text_sentiment(["The meeting is on Tuesday"]) == 0.0
