"""A user's price file merged over the shipped table; a local provider costs $0 by rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from backtest.errors import ConfigError, PricingError
from backtest.llm import client as client_module
from backtest.llm.client import CallContext, ChatRequest, LLMClient, ProviderProfile
from backtest.llm.price_files import load_prices, price_file_of
from backtest.llm.pricing import PriceTable, is_local_base_url
from backtest.llm.records import Usage
from backtest.llm.testing import LLMTestServer

REPO = Path(__file__).resolve().parents[3]
SEED = REPO / "experiments" / "routing" / "seed_stack.toml"
OWN_MODEL = "acme/finetuned-7b"
USAGE = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)


def _entry(model: str, table: str = "openrouter", price: float = 0.1) -> str:
    return (
        f'[[tables.{table}.models."{model}"]]\n'
        f"input_per_million = {price}\noutput_per_million = {2 * price}\n"
        'as_of = "2026-12-01"\nsource = "our invoice"\nverified = true\n'
    )


@pytest.fixture
def own(tmp_path: Path) -> Path:
    path = tmp_path / "my_prices.toml"
    path.write_text(
        'version = "ours-1"\n'
        + _entry(OWN_MODEL)
        + _entry("deepseek/deepseek-chat", price=0.5)  # a negotiated price
    )
    return path


def test_a_price_file_is_merged_over_the_shipped_table(own: Path) -> None:
    shipped = PriceTable.load(table="openrouter")
    merged = load_prices(str(own))
    assert merged.cost(OWN_MODEL, USAGE, prefer_reported=False).cost_usd == pytest.approx(0.3)
    assert merged.cost("deepseek/deepseek-chat", USAGE).cost_usd == pytest.approx(1.5)
    untouched = "qwen/qwen-2.5-72b-instruct"
    assert merged.cost(untouched, USAGE).cost_usd == shipped.cost(untouched, USAGE).cost_usd
    assert set(shipped.names()) < set(merged.names())
    assert str(own) in merged.source_file and merged.name == "openrouter"
    with pytest.raises(PricingError):
        shipped.price(OWN_MODEL)


def test_an_unknown_model_stays_an_error_that_names_the_fix(own: Path) -> None:
    with pytest.raises(PricingError) as info:
        load_prices(str(own)).price("acme/other-model")
    message = str(info.value)
    assert "'acme/other-model'" in message and str(own) in message
    assert 'llm.prices = "<that file>.toml"' in message
    assert 'tables.openrouter.models."acme/other-model"' in message


def test_the_base_table_is_named_after_a_hash(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('version = "1"\n' + _entry(OWN_MODEL, table="seed"))
    assert price_file_of(f"{path}#seed") == (path, "seed")
    assert price_file_of("openrouter") == (None, "openrouter")
    merged = load_prices(f"{path}#seed")
    assert merged.name == "seed" and OWN_MODEL in merged.names()
    assert "deepseek/deepseek-chat" in merged.names()  # the shipped seed table's own


def test_a_price_file_whose_tables_match_nothing_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('version = "1"\n' + _entry(OWN_MODEL, "a") + _entry(OWN_MODEL, "b"))
    with pytest.raises(ConfigError) as info:
        load_prices(str(path))
    assert str(path) in str(info.value) and "[tables.openrouter]" in str(info.value)
    with pytest.raises(ConfigError, match="cannot read"):
        load_prices(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8080/v1", True),
        ("http://localhost:11434/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://127.0.0.2:9000", True),
        ("https://openrouter.ai/api/v1", False),
        ("http://10.0.0.5:8000/v1", False),
        ("http://localhost.example.com/v1", False),
        ("", False),
        (None, False),
    ],
)
def test_is_local_base_url(url: str | None, local: bool) -> None:
    assert is_local_base_url(url) is local


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    with LLMTestServer(models={"*": '{"signal": 0.1}'}) as srv:
        yield srv


def test_a_local_profile_costs_nothing_by_rule(
    server: LLMTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = ProviderProfile("local_test", "", "LOCAL_TEST_API_KEY", local=True)
    monkeypatch.setitem(client_module.PROFILES, "local_test", profile)
    request = ChatRequest(model=OWN_MODEL, messages=({"role": "user", "content": "hi"},))
    priced = PriceTable.load(table="openrouter")  # does not know the model: no matter
    local = LLMClient(None, profile="local_test", base_url=server.base_url, prices=priced)
    result = local.chat(request, CallContext(role="narrative"))
    assert result.call.cost_usd == 0 and result.call.cost_source == "local"
    assert result.usage.prompt_tokens > 0  # tokens are still counted
    remote = LLMClient(None, profile="openai_compatible", base_url=server.base_url, prices=priced)
    # The same loopback server as an ordinary provider: no rule, its own reported figure.
    paid = remote.chat(request, CallContext(role="narrative"))
    assert paid.call.cost_source == "reported"


def test_the_report_reprices_an_alias_as_the_model_requested() -> None:
    from reports.cost import _priced_as, _reprice

    table = PriceTable.load(table="openrouter")
    chat = "deepseek/deepseek-chat"
    assert _priced_as(table, "my-server-alias", chat) == chat
    assert _priced_as(table, "", chat) == chat
    assert _priced_as(table, "qwen/qwen-2.5-72b-instruct", chat) == "qwen/qwen-2.5-72b-instruct"
    calls = pd.DataFrame(
        {
            "strategy": ["llm"],
            "provider": ["upstream"],
            "cost_source": ["table"],
            "model_requested": [chat],
            "model_served": ["deepseek-v3-q4-local-alias"],
            "prompt_tokens": [1000],
            "completion_tokens": [500],
            "cached_prompt_tokens": [0],
            "cost_usd": [0.001],
            "timestamp": [pd.Timestamp("2025-06-02", tz="UTC")],
        }
    )
    out = _reprice(calls)["llm"]
    assert "error" not in out and out["western_usd"] > 0
