"""Before the first live call, the routing's model ids are checked against ``/models``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backtest.errors import ConfigError
from backtest.llm.cassette import Cassette
from backtest.llm.client import CallContext, ChatRequest, LLMClient
from backtest.llm.testing import LLMTestServer

LISTED = ["deepseek/deepseek-chat", "qwen/qwen-2.5-72b-instruct", "qwen/qwen-2.5-7b-instruct"]
CTX = CallContext(role="narrative")


def _request(model: str) -> ChatRequest:
    return ChatRequest(model=model, messages=({"role": "user", "content": "Regime?"},))


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    with LLMTestServer(models={m: '{"signal": 0.1}' for m in LISTED}) as srv:
        yield srv


def _client(url: str, cassette: Cassette | None = None) -> LLMClient:
    return LLMClient(cassette, profile="openai_compatible", base_url=url, max_retries=0)


def _chats(server: LLMTestServer) -> int:
    return sum(1 for r in server.requests if r.path.endswith("/chat/completions"))


def test_an_unknown_id_stops_before_the_first_call(server: LLMTestServer) -> None:
    client = _client(server.base_url)
    client.expect_models([*LISTED, "qwen/qwen-2.5-72b-instruc"], source="routing/mine.toml")
    with pytest.raises(ConfigError) as stopped:
        client.chat(_request(LISTED[0]), CTX)
    message = str(stopped.value)
    assert message.startswith("routing/mine.toml: ")
    assert "'qwen/qwen-2.5-72b-instruc' (did you mean 'qwen/qwen-2.5-72b-instruct'" in message
    assert "'qwen/qwen-2.5-7b-instruct'" in message  # the closest matches, not only one
    assert _chats(server) == 0  # nothing was sent, nothing paid


def test_known_ids_pass_and_the_list_is_read_once(server: LLMTestServer) -> None:
    client = _client(server.base_url)
    client.expect_models(LISTED, source="routing.toml")
    for model in LISTED:
        assert client.chat(_request(model), CTX).content
    lists = [r for r in server.requests if r.path.rstrip("/").endswith("/models")]
    assert len(lists) == 1 and _chats(server) == 3


def test_replays_never_ask_for_the_list(server: LLMTestServer, tmp_path: Path) -> None:
    with Cassette(tmp_path, "new_episodes") as cassette:
        _client(server.base_url, cassette).chat(_request(LISTED[0]), CTX)
    before = len(server.requests)
    with Cassette(tmp_path, "none") as cassette:
        client = _client(server.base_url, cassette)
        client.expect_models(["no/such-model"], source="routing.toml")
        assert client.chat(_request(LISTED[0]), CTX).call.cache == "hit"
    assert len(server.requests) == before  # no /models, no chat


def test_a_provider_without_a_list_is_not_a_reason_to_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with LLMTestServer(models={"*": '{"signal": 0.1}'}) as wildcard:  # lists nothing
        client = _client(wildcard.base_url)
        client.expect_models(["any/model"], source="routing.toml")
        assert client.chat(_request("any/model"), CTX).content
    assert "lists no models" in caplog.text
