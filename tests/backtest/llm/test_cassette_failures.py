"""Recorded failures replay exactly in mode ``none`` but are never hits for the recording modes,
and ``backtest cassette prune --failures`` removes them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backtest.llm import cassette as cassette_module
from backtest.llm.cassette import Cassette
from backtest.llm.client import CallContext, ChatRequest, LLMCallFailed, LLMClient
from backtest.llm.testing import Fault, LLMTestServer

MODEL = "deepseek/deepseek-chat"
ANSWER = '{"regime": "bull", "signal": 0.4, "confidence": 0.7}'
CTX = CallContext(strategy="llm_only", timestamp="2018-03-01", role="narrative")
REQUEST = ChatRequest(
    model=MODEL, messages=({"role": "user", "content": "Regime?"},), temperature=0.0
)


def _client(base_url: str, cassette: Cassette, max_retries: int = 0) -> LLMClient:
    return LLMClient(
        cassette,
        profile="openai_compatible",
        base_url=base_url,
        timeout_s=1.0,
        max_retries=max_retries,
        sleep=lambda s: None,
    )


@pytest.fixture
def closed_url() -> str:
    # A port that was just served and is now closed: connecting to it is refused.
    with LLMTestServer(models={MODEL: ANSWER}) as gone:
        url = gone.base_url
    return url


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    with LLMTestServer(models={MODEL: ANSWER}) as srv:
        yield srv


def test_a_refused_call_is_retried_by_the_next_new_episodes_run(
    tmp_path: Path, closed_url: str, server: LLMTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cassette"
    with Cassette(path, "new_episodes") as cassette, pytest.raises(LLMCallFailed) as refused:
        _client(closed_url, cassette).chat(REQUEST, CTX)
    assert refused.value.kind == "connection" and refused.value.call.http_status is None
    # Strict replay reproduces the failure, with no socket.
    with Cassette(path, "none") as cassette, pytest.raises(LLMCallFailed) as replayed:
        _client(closed_url, cassette).chat(REQUEST, CTX)
    assert replayed.value.kind == "connection" and replayed.value.call.cache == "hit"
    # Within the run that recorded it, the failure is a hit: another strategy of the same
    # run asking the same call takes the same path (and a strict replay reproduces both).
    with Cassette(path, "new_episodes") as cassette, pytest.raises(LLMCallFailed) as shared:
        _client(server.base_url, cassette).chat(REQUEST, CTX)
    assert shared.value.call.cache == "hit" and server.calls(MODEL) == 0
    # The next recording run (another process) calls again and records the answer...
    monkeypatch.setattr(cassette_module, "SESSION", "a-later-run")
    with Cassette(path, "new_episodes") as cassette:
        result = _client(server.base_url, cassette).chat(REQUEST, CTX)
    assert result.call.cache == "recorded" and result.content == ANSWER
    assert server.calls(MODEL) == 1
    # ...which every later replay prefers over the failure recorded before it.
    for mode in ("none", "new_episodes"):
        with Cassette(path, mode) as cassette:  # type: ignore[arg-type]
            again = _client(closed_url, cassette).chat(REQUEST, CTX)
        assert again.call.cache == "hit" and again.content == ANSWER
    assert server.calls(MODEL) == 1


def test_all_mode_calls_a_recorded_failure_again(
    tmp_path: Path, server: LLMTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cassette"
    server.inject(MODEL, Fault.SERVER_ERROR, times=1)
    with Cassette(path, "all") as cassette, pytest.raises(LLMCallFailed) as failed:
        _client(server.base_url, cassette).chat(REQUEST, CTX)
    assert failed.value.call.http_status == 500
    monkeypatch.setattr(cassette_module, "SESSION", "a-later-run")
    with Cassette(path, "all") as cassette:
        assert _client(server.base_url, cassette).chat(REQUEST, CTX).content == ANSWER
    with Cassette(path, "none") as cassette:
        assert _client(server.base_url, cassette).chat(REQUEST, CTX).call.cache == "hit"
    assert server.calls(MODEL) == 2


def test_prune_failures_rewrites_the_cassette_without_them(
    tmp_path: Path, closed_url: str, server: LLMTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from backtest.cli import main

    path = tmp_path / "cassette"
    other = ChatRequest(model=MODEL, messages=({"role": "user", "content": "Trend?"},))
    with Cassette(path, "new_episodes") as cassette:
        _client(server.base_url, cassette).chat(REQUEST, CTX)
        with pytest.raises(LLMCallFailed):
            _client(closed_url, cassette, max_retries=1).chat(other, CTX)  # 2 attempts
    assert Cassette(path, "none").stats().errors == 2
    with pytest.raises(SystemExit) as info:
        main(["cassette", "prune", "--failures", str(path)])
    assert info.value.code == 0
    assert "Removed 2 failure recording(s)" in capsys.readouterr().out
    assert [p.name for p in path.glob("shard-*.tsv")] == ["shard-merged.tsv"]
    assert not list(path.glob(".merge.tmp"))
    pruned = Cassette(path, "none")
    assert len(pruned) == 1 and pruned.stats().errors == 0
    assert _client(closed_url, pruned).chat(REQUEST, CTX).content == ANSWER
    with pytest.raises(SystemExit) as info:
        main(["cassette", "prune", str(path)])  # nothing said to prune
    assert info.value.code == 1
    assert "--failures" in capsys.readouterr().err
