"""``response_format`` per model actually called, and the routing file's per-model override."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backtest.errors import ConfigError
from backtest.llm.cassette import Cassette
from backtest.llm.client import CallContext, LLMClient, response_format_for
from backtest.llm.router import ModelSettings, Router, RoutingConfig, load_routing
from backtest.llm.testing import Fault, LLMTestServer

REPO = Path(__file__).resolve().parents[3]
SEED = REPO / "experiments" / "routing" / "seed_stack.toml"
DEEPSEEK, QWEN72 = "deepseek/deepseek-chat", "qwen/qwen-2.5-72b-instruct"
SCHEMA = {
    "type": "object",
    "properties": {"signal": {"type": "number"}, "reasoning": {"type": "string"}},
}
TEXT = [{"role": "user", "content": "Regime?"}]


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    with LLMTestServer(models={"*": '{"signal": 0.1, "reasoning": "x"}'}) as srv:
        yield srv


def _router(server: LLMTestServer, tmp: Path, config: RoutingConfig) -> Router:
    client = LLMClient(
        Cassette(tmp / "cassette", "all"),
        profile="openai_compatible",
        base_url=server.base_url,
        timeout_s=2.0,
        max_retries=0,
        sleep=lambda s: None,
    )
    return Router(config, client)


def _formats(server: LLMTestServer) -> dict[str, Any]:
    return {
        r.body["model"]: r.body.get("response_format")
        for r in server.requests
        if r.body and "model" in r.body
    }


def _ask(router: Router) -> Any:
    return router.ask(
        "narrative",
        TEXT,
        context=CallContext(strategy="t", timestamp="2016-01-04"),
        day="2016-01-04",
        bar=0,
        schema=SCHEMA,
    )


def _routing(**updates: Any) -> RoutingConfig:
    return load_routing(SEED).model_copy(update={"profile": "openai_compatible", **updates})


def test_a_fallback_gets_the_response_format_of_the_model_it_calls(
    server: LLMTestServer, tmp_path: Path
) -> None:
    server.inject(DEEPSEEK, Fault.SERVER_ERROR, times=None)  # narrative's primary fails
    run = _ask(_router(server, tmp_path, _routing()))
    assert run.model == QWEN72
    sent = _formats(server)
    assert sent[DEEPSEEK] == {"type": "json_object"}  # DeepSeek takes no schema
    strict = sent[QWEN72]  # the fallback takes one: it gets its own, strict
    assert strict["type"] == "json_schema" and strict["json_schema"]["strict"] is True
    schema = strict["json_schema"]["schema"]
    assert schema["required"] == ["signal", "reasoning"]
    assert schema["additionalProperties"] is False


def test_the_routing_file_overrides_the_format_per_model(
    server: LLMTestServer, tmp_path: Path
) -> None:
    text = SEED.read_text() + (
        f'\n[models."{QWEN72}"]\nresponse_format = "none"\n'
        f'\n[models."{DEEPSEEK}"]\nresponse_format = "json_schema"\n'
    )
    path = tmp_path / "routing.toml"
    path.write_text(text)
    config = load_routing(path).model_copy(update={"profile": "openai_compatible"})
    server.inject(DEEPSEEK, Fault.SERVER_ERROR, times=None)
    _ask(_router(server, tmp_path, config))
    sent = _formats(server)
    assert sent[DEEPSEEK]["type"] == "json_schema"
    assert sent[QWEN72] is None  # "none": no response_format in the request at all


def test_an_unknown_format_or_model_in_the_routing_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SEED.read_text() + f'\n[models."{QWEN72}"]\nresponse_format = "grammar"\n')
    with pytest.raises(ConfigError) as caught:
        load_routing(bad)
    message = str(caught.value)
    assert str(bad) in message and "response_format" in message and "json_object" in message
    stray = tmp_path / "stray.toml"
    stray.write_text(SEED.read_text() + '\n[models."qwen/qwen-typo"]\nresponse_format = "none"\n')
    with pytest.raises(ConfigError, match="qwen/qwen-typo"):
        load_routing(stray)
    with pytest.raises(ConfigError, match="grammar"):
        response_format_for(QWEN72, SCHEMA, "narrative", "grammar")


def test_a_local_profile_gets_the_strict_schema_in_llama_cpp_form() -> None:
    local = _routing(profile="local")
    sent = local.response_format(QWEN72, SCHEMA, "narrative")
    assert sent is not None and sent["type"] == "json_object"  # llama-cpp-python's form
    assert sent["schema"]["required"] == ["signal", "reasoning"]
    assert sent["schema"]["additionalProperties"] is False
    # An explicit per-model choice still wins over the profile's default.
    pinned = local.model_copy(
        update={"models_": {QWEN72: ModelSettings(response_format="json_schema")}}
    )
    assert pinned.response_format(QWEN72, SCHEMA, "narrative")["type"] == "json_schema"
