"""Strict answers: every field required, unknown keys refused, cut-off answers abstain."""

from __future__ import annotations

import json
from typing import Any

import pytest

from backtest.llm.client import CallContext, ChatRequest, ChatResult
from backtest.llm.offline import OfflineAnalyst
from backtest.llm.records import LLMCall, Usage
from backtest.llm.router import RoleRun
from strategies.llm.answers import judge
from strategies.llm.graph import _SCHEMAS
from strategies.llm.prompts import _SHAPES
from strategies.llm.schemas import ABSTAIN_REASONS, ROLE_SCHEMAS, TradingAction, parse_answer

META = {
    "action": "buy",
    "size": 0.4,
    "signal": 0.6,
    "confidence": 0.8,
    "risk_level": "Medium",
    "reasoning": "trend up",
}


def _result(content: str, finish_reason: str = "stop", refusal: str = "") -> ChatResult:
    call = LLMCall(role="meta_orchestrator", model_requested="m", http_status=200)
    return ChatResult(
        content=content,
        finish_reason=finish_reason,
        usage=Usage(),
        model_served="m",
        provider="",
        call=call,
        raw={},
        refusal=refusal,
    )


def test_a_complete_answer_parses_with_value_coercions_kept() -> None:
    parsed = parse_answer("meta_orchestrator", json.dumps(META))
    assert isinstance(parsed.answer, TradingAction)
    assert (parsed.answer.action, parsed.answer.risk_level) == ("BUY", "medium")
    assert parsed.reason == "" and parsed.error == ""


@pytest.mark.parametrize("role", list(ROLE_SCHEMAS))
def test_gibberish_json_is_an_unknown_keys_abstain_for_every_role(role: str) -> None:
    parsed = parse_answer(role, '{"on the": true}')
    assert parsed.answer is None
    assert parsed.reason == "unknown_keys"
    assert parsed.raw == '{"on the": true}'


def test_a_missing_field_is_an_abstain_that_names_the_field() -> None:
    answer = {k: v for k, v in META.items() if k != "risk_level"}
    parsed = parse_answer("meta_orchestrator", json.dumps(answer))
    assert parsed.answer is None and parsed.reason == "missing_field"
    assert "risk_level" in parsed.error


def test_an_extra_key_beside_a_complete_answer_is_refused() -> None:
    parsed = parse_answer("meta_orchestrator", json.dumps({**META, "leverage": 10}))
    assert parsed.answer is None and parsed.reason == "unknown_keys"
    assert "leverage" in parsed.error


def test_truncated_refused_and_non_json_answers_abstain_by_reason() -> None:
    complete = json.dumps(META)
    cut = parse_answer("meta_orchestrator", complete, finish_reason="length")
    assert cut.answer is None and cut.reason == "truncated" and "max_tokens" in cut.error
    refused = parse_answer("meta_orchestrator", "", refusal="I can't help with that")
    assert refused.answer is None and refused.reason == "refusal"
    filtered = parse_answer("meta_orchestrator", complete, finish_reason="content_filter")
    assert filtered.reason == "refusal"
    assert parse_answer("meta_orchestrator", "buy it").reason == "not_json"
    assert parse_answer("meta_orchestrator", "  ").reason == "empty"
    invalid = parse_answer("meta_orchestrator", json.dumps({**META, "action": "MOON"}))
    assert invalid.reason == "invalid_value"
    assert {cut.reason, refused.reason, "not_json", "empty", invalid.reason} <= set(ABSTAIN_REASONS)


def test_judge_marks_the_answering_call_and_keeps_the_raw_text() -> None:
    failed = LLMCall(role="meta_orchestrator", model_requested="p", error="server_error: x")
    run = RoleRun(_result('{"on the": true}'), (failed, _result("").call), model="m")
    judged = judge("meta_orchestrator", run)
    assert judged.answer is None
    assert judged.calls[0] == failed  # the failed call is left as it was
    assert judged.calls[-1].answer_error == "unknown_keys"
    assert judged.calls[-1].raw_answer == '{"on the": true}'
    ok = judge("meta_orchestrator", RoleRun(_result(json.dumps(META)), (_result("").call,)))
    assert isinstance(ok.answer, TradingAction) and ok.calls[-1].answer_error == ""
    cut = judge(
        "meta_orchestrator",
        RoleRun(_result(json.dumps(META), "length"), (_result("").call,)),
    )
    assert cut.answer is None and cut.calls[-1].answer_error == "truncated"


@pytest.mark.parametrize("role", list(ROLE_SCHEMAS))
def test_sent_schemas_require_every_property_and_forbid_others(role: str) -> None:
    schema = _SCHEMAS[role]
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])
    # The prompt asks for exactly the fields the schema requires.
    for field in schema["properties"]:
        assert f'"{field}"' in _SHAPES[role], (role, field)


@pytest.mark.parametrize("role", list(ROLE_SCHEMAS))
def test_the_offline_analyst_answers_every_role_completely(role: str) -> None:
    contexts: list[dict[str, Any]] = [
        {"role": role, "close": [], "open": [], "high": [], "low": [], "volume": []},
        {
            "role": role,
            "close": [100 + i * 0.5 for i in range(80)],
            "open": [100 + i * 0.5 - 0.2 for i in range(80)],
            "high": [101 + i * 0.5 for i in range(80)],
            "low": [99 + i * 0.5 for i in range(80)],
            "volume": [1000 + (i % 7) * 50 for i in range(80)],
            "news": [{"headline": "profits beat", "text": "strong growth"}],
            "documents": [{"headline": "10-K", "text": "record revenue"}],
            "signals": [{"agent": "chart_analysis", "signal": 0.6, "confidence": 0.7}],
        },
    ]
    for context in contexts:
        request = ChatRequest(model="offline", messages=(), context=context)
        result = OfflineAnalyst().chat(request, CallContext(role=role))
        parsed = parse_answer(role, result.content, finish_reason=result.finish_reason)
        assert parsed.answer is not None, parsed.error
