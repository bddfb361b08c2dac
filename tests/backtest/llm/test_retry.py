"""Retries: a deterministic failure is not retried, Retry-After is honoured within a per-call
cap, and replays take the same retries without waiting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backtest.llm.cassette import Cassette
from backtest.llm.client import CallContext, ChatRequest, LLMCallFailed, LLMClient
from backtest.llm.retry import RetryPolicy
from backtest.llm.testing import Fault, LLMTestServer

MODEL = "deepseek/deepseek-chat"
ANSWER = '{"regime": "bull"}'
CTX = CallContext(strategy="s", timestamp="2018-03-01", role="narrative")
REQUEST = ChatRequest(model=MODEL, messages=({"role": "user", "content": "Regime?"},))


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    with LLMTestServer(models={MODEL: ANSWER}) as srv:
        yield srv


def _client(
    server: LLMTestServer, cassette: Cassette | None = None, **kwargs: object
) -> tuple[LLMClient, list[float]]:
    waits: list[float] = []
    client = LLMClient(
        cassette,
        profile="openai_compatible",
        base_url=server.base_url,
        timeout_s=2.0,
        sleep=waits.append,
        **kwargs,  # type: ignore[arg-type]
    )
    return client, waits


def test_the_same_500_twice_is_not_retried_again(server: LLMTestServer, tmp_path: Path) -> None:
    server.inject(MODEL, Fault.SERVER_ERROR, times=None)
    client, waits = _client(server, Cassette(tmp_path, "new_episodes"), max_retries=3)
    with pytest.raises(LLMCallFailed) as failed:
        client.chat(REQUEST, CTX)
    assert server.calls(MODEL) == 2 and len(waits) == 1  # not 4 attempts and 3 waits
    assert "deterministic" in str(failed.value) and failed.value.call.http_status == 500
    replayer, replay_waits = _client(server, Cassette(tmp_path, "none"), max_retries=3)
    with pytest.raises(LLMCallFailed) as again:
        replayer.chat(REQUEST, CTX)
    assert again.value.call.retries == failed.value.call.retries == 1
    assert replay_waits == [] and server.calls(MODEL) == 2


def test_a_retry_after_past_the_cap_ends_the_call_at_once(server: LLMTestServer) -> None:
    server.inject(MODEL, Fault.RATE_LIMIT, times=None, retry_after_s=600)
    client, waits = _client(server, max_retries=3, max_retry_s=30.0)
    with pytest.raises(LLMCallFailed) as failed:
        client.chat(REQUEST, CTX)
    assert waits == [] and server.calls(MODEL) == 1
    assert "max_retry_s" in str(failed.value) and failed.value.call.http_status == 429


def test_retry_after_is_honoured_within_the_cap(server: LLMTestServer) -> None:
    server.inject(MODEL, Fault.RATE_LIMIT, times=2, retry_after_s=40)
    client, waits = _client(server, max_retries=3, backoff_max_s=5.0, max_retry_s=100.0)
    assert client.chat(REQUEST, CTX).content == ANSWER
    assert waits == [40.0, 40.0]  # the provider's word, not backoff_max_s


def test_the_waits_of_one_call_add_up_to_at_most_max_retry_s(server: LLMTestServer) -> None:
    server.inject(MODEL, Fault.BAD_GATEWAY, times=None)
    client, waits = _client(server, max_retries=10, backoff_s=4.0, max_retry_s=20.0)
    with pytest.raises(LLMCallFailed):
        client.chat(REQUEST, CTX)
    assert 0 < sum(waits) <= 20.0 and len(waits) < 10


def test_policy_backoff_is_seeded_and_capped() -> None:
    policy = RetryPolicy(backoff_s=1.0, backoff_max_s=3.0, seed=7)
    waits = [policy.backoff("k", attempt, None) for attempt in range(5)]
    assert waits == [policy.backoff("k", a, None) for a in range(5)]
    assert all(w <= 3.0 for w in waits) and 0.5 <= waits[0] <= 1.0
    assert policy.backoff("k", 0, 12.5) == 12.5
