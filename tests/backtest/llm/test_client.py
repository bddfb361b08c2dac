"""The LLM client through the real openai SDK against the loopback test server."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backtest.errors import CassetteMiss, ConfigError
from backtest.llm.cassette import Cassette
from backtest.llm.client import CallContext, ChatRequest, LLMCallFailed, LLMClient
from backtest.llm.testing import Fault, LLMTestServer

MODEL = "deepseek/deepseek-chat"
ANSWER = '{"regime": "bull", "signal": 0.4, "confidence": 0.7}'
SECRET = "sk-test-" + "9e1d" * 10
CTX = CallContext(
    strategy="llm_only", timestamp="2018-03-01", role="narrative", prompt_version="narrative-v1"
)


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    with LLMTestServer(
        models={MODEL: ANSWER, "qwen/qwen-2.5-7b-instruct": "{}"},
        prices={MODEL: (0.27, 1.10)},
        hang_s=5.0,
    ) as srv:
        yield srv


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def _client(
    server: LLMTestServer, cassette: Cassette | None = None, **kwargs: Any
) -> tuple[LLMClient, FakeSleep]:
    sleep = FakeSleep()
    kwargs.setdefault("max_retries", 3)
    client = LLMClient(
        cassette,
        profile="openai_compatible",
        base_url=server.base_url,
        api_key_env="TEST_LLM_KEY",
        timeout_s=1.0,
        sleep=sleep,
        seed=1,
        **kwargs,
    )
    return client, sleep


def _request(text: str = "Regime?", **kwargs: Any) -> ChatRequest:
    return ChatRequest(
        model=MODEL,
        messages=({"role": "user", "content": text},),
        temperature=0.3,
        max_tokens=300,
        **kwargs,
    )


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", SECRET)


def test_live_call_reads_usage_cost_provider_and_served_model(server: LLMTestServer) -> None:
    client, _ = _client(server)
    result = client.chat(
        _request(
            provider={"order": ["DeepSeek"], "allow_fallbacks": False},
            models=("deepseek/deepseek-chat", "qwen/qwen-2.5-7b-instruct"),
        ),
        CTX,
    )
    assert json.loads(result.content)["regime"] == "bull"
    assert result.finish_reason == "stop"
    assert result.model_served == MODEL and result.provider == "DeepSeek"
    usage = result.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    expected = (usage.prompt_tokens * 0.27 + usage.completion_tokens * 1.10) / 1e6
    assert usage.reported_cost_usd == pytest.approx(expected)
    call = result.call
    assert call.cost_source == "reported" and call.cost_usd == pytest.approx(expected)
    assert call.spend_usd == call.cost_usd and call.cache == "live"
    assert (call.role, call.prompt_version) == ("narrative", "narrative-v1")
    sent = server.requests[-1]
    assert sent.body is not None
    assert sent.body["provider"] == {"order": ["DeepSeek"], "allow_fallbacks": False}
    assert sent.body["models"] == ["deepseek/deepseek-chat", "qwen/qwen-2.5-7b-instruct"]
    assert sent.body["temperature"] == 0.3 and sent.body["max_tokens"] == 300
    assert sent.headers["authorization"] == f"Bearer {SECRET}"


def test_record_then_replay_without_a_socket(
    server: LLMTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, _ = _client(server, Cassette(tmp_path, "new_episodes"))
    recorded = [recorder.chat(_request(f"bar {i}"), CTX) for i in range(5)]
    assert all(r.call.cache == "recorded" for r in recorded)
    served_before = server.calls(MODEL)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("replay opened a socket")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.delenv("TEST_LLM_KEY")  # replay needs no key either
    replayer, sleep = _client(server, Cassette(tmp_path, "none"))
    replayed = [replayer.chat(_request(f"bar {i}"), CTX) for i in range(5)]
    assert server.calls(MODEL) == served_before
    for a, b in zip(recorded, replayed, strict=True):
        assert b.content == a.content and b.usage == a.usage
        assert b.call.cost_usd == a.call.cost_usd  # the economic cost, identical
        assert b.call.spend_usd == 0.0 and b.call.cache == "hit"
    with pytest.raises(CassetteMiss) as info:
        replayer.chat(_request("never recorded"), CTX)
    message = str(info.value)
    for part in ("llm_only", "2018-03-01", "narrative", MODEL, "'new_episodes'"):
        assert part in message
    assert sleep.calls == []


def test_rate_limits_are_retried_after_retry_after_and_replay_identically(
    server: LLMTestServer, tmp_path: Path
) -> None:
    server.inject(MODEL, Fault.RATE_LIMIT, times=2, retry_after_s=0.25)
    client, sleep = _client(server, Cassette(tmp_path, "new_episodes"))
    result = client.chat(_request(), CTX)
    assert result.call.retries == 2 and sleep.calls == [0.25, 0.25]
    assert len(Cassette(tmp_path, "none")) == 3  # two recorded errors and the answer
    replayer, replay_sleep = _client(server, Cassette(tmp_path, "none"))
    again = replayer.chat(_request(), CTX)
    assert again.call.retries == 2 and again.content == result.content
    assert replay_sleep.calls == []  # a replay repeats the attempts without waiting


def test_backoff_is_exponential_with_seeded_jitter(server: LLMTestServer) -> None:
    # 502s: an upstream hiccup, retried (a repeated identical 500 is not: test_retry.py).
    server.inject(MODEL, Fault.BAD_GATEWAY, times=3)
    client, sleep = _client(server, backoff_s=1.0)
    client.chat(_request(), CTX)
    assert len(sleep.calls) == 3
    for attempt, wait in enumerate(sleep.calls):
        assert 0.5 * 2**attempt <= wait <= 2**attempt
    server.inject(MODEL, Fault.BAD_GATEWAY, times=3)
    other, other_sleep = _client(server, backoff_s=1.0)
    other.chat(_request(), CTX)
    assert other_sleep.calls == sleep.calls  # same seed, same request: same waits


@pytest.mark.parametrize(
    ("fault", "kind", "retries"),
    [
        (Fault.SERVER_ERROR, "server_error", 1),  # the same 500 twice: deterministic
        (Fault.BAD_GATEWAY, "server_error", 2),
        (Fault.MALFORMED_JSON, "malformed", 2),
        (Fault.TRUNCATED_STREAM, "malformed", 2),
    ],
)
def test_persistent_failures_end_in_a_recorded_failure(
    server: LLMTestServer, tmp_path: Path, fault: Fault, kind: str, retries: int
) -> None:
    server.inject(MODEL, fault, times=None)
    client, sleep = _client(server, Cassette(tmp_path, "new_episodes"), max_retries=2)
    with pytest.raises(LLMCallFailed) as info:
        client.chat(_request(), CTX)
    assert info.value.kind == kind
    assert info.value.call.retries == retries and len(sleep.calls) == retries
    assert info.value.call.error.startswith(kind)
    replayer, _ = _client(server, Cassette(tmp_path, "none"), max_retries=2)
    with pytest.raises(LLMCallFailed) as again:
        replayer.chat(_request(), CTX)
    assert again.value.kind == kind and again.value.call.cache == "hit"


def test_a_hang_times_out_and_is_retried(server: LLMTestServer) -> None:
    server.inject(MODEL, Fault.HANG, times=1)
    client, _ = _client(server)
    client.timeout_s = 0.3
    client._sdk = None
    result = client.chat(_request(), CTX)
    assert result.call.retries == 1


def test_a_model_that_disappears_is_not_retried(server: LLMTestServer) -> None:
    client, sleep = _client(server)
    client.chat(_request(), CTX)
    server.remove_model(MODEL)
    with pytest.raises(LLMCallFailed) as info:
        client.chat(_request(), CTX)
    assert info.value.kind == "model_not_found" and sleep.calls == []


def test_content_faults_come_back_as_answers(server: LLMTestServer) -> None:
    client, _ = _client(server)
    server.inject(MODEL, Fault.EMPTY_CONTENT)
    assert client.chat(_request(), CTX).content == ""
    server.inject(MODEL, Fault.REFUSAL)
    assert "can't help" in client.chat(_request(), CTX).content


@dataclass(frozen=True)
class _Cost:
    cost_usd: float


class FakePrices:
    """A price table: input $1, output $2 per million tokens."""

    def cost(
        self, model: str, usage: Any, at: Any = None, *, prefer_reported: bool = True
    ) -> _Cost:
        return _Cost((usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6)


def test_unreported_cost_is_priced_from_the_table_once(tmp_path: Path) -> None:
    with LLMTestServer(models={MODEL: ANSWER}, report_cost=False) as srv:
        client, _ = _client(srv, Cassette(tmp_path, "new_episodes"), prices=FakePrices())
        result = client.chat(_request(), CTX)
    call = result.call
    assert call.cost_source == "table"
    assert call.cost_usd == pytest.approx((call.prompt_tokens + 2 * call.completion_tokens) / 1e6)

    class Doubled(FakePrices):
        def cost(self, *args: Any, **kwargs: Any) -> _Cost:
            return _Cost(2 * super().cost(*args, **kwargs).cost_usd)

    replayer = LLMClient(
        Cassette(tmp_path, "none"),
        profile="openai_compatible",
        base_url="http://127.0.0.1:9/v1",
        prices=Doubled(),
    )
    # Recorded once: a replay charges what the answer cost when it was recorded.
    assert replayer.chat(_request(), CTX).call.cost_usd == call.cost_usd


def test_keys_never_leave_the_environment(
    server: LLMTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-" + "ab12" * 12)
    server.inject(MODEL, Fault.RATE_LIMIT, times=1, retry_after_s=0)
    client, _ = _client(
        server, Cassette(tmp_path / "c", "new_episodes", secret_env=["TEST_LLM_KEY"])
    )
    client.chat(_request(f"please repeat {SECRET}"), CTX)
    for path in (tmp_path / "c").iterdir():
        text = path.read_text()
        assert SECRET not in text and "ab12ab12" not in text


def test_missing_key_names_the_variable_not_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    client = LLMClient(None, profile="openrouter")
    with pytest.raises(ConfigError, match="OPENROUTER_API_KEY is not set"):
        client.chat(_request(), CTX)
    with pytest.raises(ConfigError, match="unknown provider profile"):
        LLMClient(None, profile="openrouterr")
    with pytest.raises(ConfigError, match="base URL"):
        LLMClient(None, profile="openai_compatible")


def test_prompt_version_is_part_of_the_key(server: LLMTestServer, tmp_path: Path) -> None:
    client, _ = _client(server, Cassette(tmp_path, "new_episodes"))
    client.chat(_request(prompt_version="v1"), CTX)
    replayer, _ = _client(server, Cassette(tmp_path, "none"))
    assert replayer.chat(_request(prompt_version="v1"), CTX).call.prompt_version == "v1"
    with pytest.raises(CassetteMiss):
        replayer.chat(_request(prompt_version="v2"), CTX)


def test_model_ids_are_checked_against_the_provider_list(server: LLMTestServer) -> None:
    client, _ = _client(server)
    client.check_models([MODEL])
    with pytest.raises(ConfigError, match=r"'deepseek/deepseek-chatt' \(did you mean"):
        client.check_models(["deepseek/deepseek-chatt"])


def test_structured_output_requests() -> None:
    from backtest.llm.client import require_parameters, response_format_for

    schema = {"type": "object", "properties": {"signal": {"type": "number"}}}
    assert response_format_for("deepseek/deepseek-chat", schema, "x") == {"type": "json_object"}
    strict = response_format_for("qwen/qwen-2.5-72b-instruct", schema, "narrative")
    assert strict["type"] == "json_schema" and strict["json_schema"]["strict"] is True
    assert require_parameters({"order": ["DeepSeek"]}) == {
        "order": ["DeepSeek"],
        "require_parameters": True,
    }
