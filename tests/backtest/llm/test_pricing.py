"""Price tables: golden costs, dated prices, aliases, re-pricing and the pre-call bounds."""

from __future__ import annotations

import inspect
import math
from datetime import date, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backtest.errors import ConfigError, PricingError
from backtest.llm import pricing
from backtest.llm.pricing import (
    IMAGE_PART_TOKENS,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_REPLY,
    Cost,
    PriceTable,
    count_prompt_tokens,
    count_text_tokens,
    table_names,
)
from backtest.llm.records import Usage

M = 1_000_000
TABLES = {name: PriceTable.load(table=name) for name in table_names()}
SEED = TABLES["seed"]
OPENROUTER = TABLES["openrouter"]
WESTERN = TABLES["western_reference"]
DEEPSEEK = TABLES["deepseek_direct"]

# A table that exercises every price component; figures chosen to be easy to check by hand.
FULL_TOML = """
version = "test"
currency = "USD"

[tables.full]
[[tables.full.models."test/full"]]
input_per_million = 2.0
output_per_million = 8.0
cached_input_per_million = 0.5
cache_write_per_million = 2.5
reasoning_per_million = 12.0
per_image = 0.001
per_request = 0.0002
as_of = "2026-11"
source = "test"
verified = false

[[tables.full.models."test/odd"]]
input_per_million = 1.0
output_per_million = 2.0
cached_input_per_million = 3.0
reasoning_per_million = 7.0
as_of = "2026-11"
source = "test"
verified = false

[[tables.full.models."test/dated"]]
input_per_million = 1.0
output_per_million = 2.0
as_of = "2025-01"
source = "test"
verified = false

[[tables.full.models."test/dated"]]
effective_from = 2025-06-01
input_per_million = 0.5
output_per_million = 1.0
as_of = "2025-06"
source = "test"
verified = false

[[tables.full.models."test/late"]]
effective_from = 2026-01-01
input_per_million = 1.0
output_per_million = 1.0
as_of = "2026-01"
source = "test"
verified = false
"""


def write(tmp: Path, text: str, name: str = "prices.toml") -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> PriceTable:
    return PriceTable.load(write(tmp_path_factory.mktemp("full"), FULL_TOML), table="full")


# ---------------------------------------------------------------------------- golden costs


def test_seed_deepseek_v3_prices_a_million_in_and_a_million_out_at_1_37() -> None:
    cost = SEED.cost("deepseek/deepseek-chat", Usage(prompt_tokens=M, completion_tokens=M))
    assert cost.source == "table"
    assert cost.model == "deepseek/deepseek-chat"
    assert cost.cost_usd == pytest.approx(0.27 + 1.10, rel=1e-12)
    assert cost.breakdown["input"] == pytest.approx(0.27, rel=1e-12)
    assert cost.breakdown["output"] == pytest.approx(1.10, rel=1e-12)


@pytest.mark.parametrize(
    ("model", "input_usd", "output_usd"),
    [
        ("qwen/qwen-2-vl-72b-instruct", 0.40, 0.40),
        ("moonshotai/kimi-vl-a3b-thinking", 0.15, 0.15),
        ("qwen/qwen-2.5-7b-instruct", 0.09, 0.09),  # "$0.00009 per 1k"
        ("moonshot/moonshot-v1-128k", 0.55, 0.55),  # "0.00055 per 1k"
        ("openai/gpt-4-turbo", 10.0, 30.0),
        ("anthropic/claude-3.5-sonnet", 3.0, 15.0),
    ],
)
def test_seed_table_holds_the_seed_figures(model: str, input_usd: float, output_usd: float) -> None:
    price = SEED.price(model)
    assert (price.input_per_million, price.output_per_million) == (input_usd, output_usd)
    cost = SEED.cost(model, Usage(prompt_tokens=2 * M, completion_tokens=M // 2))
    assert cost.cost_usd == pytest.approx(2 * input_usd + output_usd / 2, rel=1e-12)


def test_every_component_is_priced_by_hand(full: PriceTable) -> None:
    usage = Usage(
        prompt_tokens=10_000,
        cached_prompt_tokens=4_000,
        cache_write_tokens=1_000,
        completion_tokens=2_000,
        reasoning_tokens=500,
        image_inputs=3,
    )
    cost = full.cost("test/full", usage)
    expected = {
        "input": 5_000 * 2.0 / M,  # 10,000 - 4,000 cached - 1,000 written
        "cached_input": 4_000 * 0.5 / M,
        "cache_write": 1_000 * 2.5 / M,
        "output": 1_500 * 8.0 / M,  # 2,000 - 500 reasoning
        "reasoning": 500 * 12.0 / M,
        "images": 3 * 0.001,
        "request": 0.0002,
    }
    assert cost.breakdown == pytest.approx(expected, rel=1e-12)
    assert cost.cost_usd == pytest.approx(0.0357, rel=1e-12)
    assert cost.cost_usd == pytest.approx(math.fsum(cost.breakdown.values()), rel=1e-15)


def test_missing_cache_and_reasoning_prices_fall_back_to_input_and_output() -> None:
    usage = Usage(
        prompt_tokens=3_000,
        cached_prompt_tokens=1_000,
        cache_write_tokens=500,
        completion_tokens=500,
        reasoning_tokens=200,
    )
    cost = SEED.cost("deepseek/deepseek-chat", usage)
    assert cost.cost_usd == pytest.approx((3_000 * 0.27 + 500 * 1.10) / M, rel=1e-12)


def test_claude_cache_reads_and_writes_at_anthropic_rates() -> None:
    usage = Usage(
        prompt_tokens=10_000,
        cached_prompt_tokens=8_000,
        cache_write_tokens=1_000,
        completion_tokens=1_000,
    )
    cost = WESTERN.cost("anthropic/claude-3.5-sonnet", usage)
    expected = (1_000 * 3.0 + 8_000 * 0.30 + 1_000 * 3.75 + 1_000 * 15.0) / M
    assert cost.cost_usd == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------- reported costs


def test_reported_cost_wins_and_can_be_turned_off() -> None:
    usage = Usage(prompt_tokens=M, completion_tokens=M, reported_cost_usd=0.5)
    reported = SEED.cost("deepseek/deepseek-chat", usage)
    assert reported == Cost(0.5, "reported", {"reported": 0.5})
    table = SEED.cost("deepseek/deepseek-chat", usage, prefer_reported=False)
    assert table.source == "table"
    assert table.cost_usd == pytest.approx(1.37, rel=1e-12)


def test_a_reported_cost_needs_no_table_price() -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=10, reported_cost_usd=0.0001)
    assert SEED.cost("somebody/unlisted-model", usage).cost_usd == 0.0001
    with pytest.raises(PricingError, match="unlisted-model"):
        SEED.cost("somebody/unlisted-model", usage, prefer_reported=False)


def test_a_negative_reported_cost_is_refused() -> None:
    usage = Usage(prompt_tokens=10, completion_tokens=10, reported_cost_usd=-1.0)
    with pytest.raises(PricingError, match="prefer_reported=False"):
        SEED.cost("deepseek/deepseek-chat", usage)


@pytest.mark.parametrize(
    ("usage", "rule"),
    [
        (Usage(prompt_tokens=10, cached_prompt_tokens=8, cache_write_tokens=5), "exceeds prompt"),
        (Usage(completion_tokens=10, reasoning_tokens=11), "exceeds completion"),
        (Usage(prompt_tokens=-1), "negative"),
    ],
)
def test_usage_whose_parts_exceed_its_totals_is_refused(usage: Usage, rule: str) -> None:
    with pytest.raises(PricingError, match=rule):
        SEED.cost("deepseek/deepseek-chat", usage)


# ---------------------------------------------------------------------------- dated prices


def test_a_call_is_priced_at_the_price_in_force_on_its_date(full: PriceTable) -> None:
    usage = Usage(prompt_tokens=M, completion_tokens=M)
    assert full.cost("test/dated", usage, date(2025, 5, 31)).cost_usd == pytest.approx(3.0)
    assert full.cost("test/dated", usage, date(2025, 6, 1)).cost_usd == pytest.approx(1.5)
    assert full.cost("test/dated", usage, datetime(2025, 6, 1, 23, 59)).cost_usd == 1.5
    assert full.cost("test/dated", usage, date(1999, 1, 1)).cost_usd == pytest.approx(3.0)
    assert full.cost("test/dated", usage).cost_usd == pytest.approx(1.5)  # latest
    assert [p.effective_from for p in full.history("test/dated")] == [None, date(2025, 6, 1)]


def test_deepseek_direct_price_changes_on_2025_09_05_and_2025_09_29() -> None:
    prices = [
        DEEPSEEK.price("deepseek-chat", day).input_per_million
        for day in (date(2025, 1, 10), date(2025, 9, 4), date(2025, 9, 5), date(2025, 10, 1))
    ]
    assert prices == [0.27, 0.27, 0.56, 0.28]


def test_no_price_before_the_earliest_dated_entry(full: PriceTable) -> None:
    with pytest.raises(PricingError, match="in force on 2025-12-31"):
        full.price("test/late", date(2025, 12, 31))
    assert full.price("test/late", date(2026, 1, 1)).input_per_million == 1.0


# ---------------------------------------------------------------------------- aliases


# Every model id the seed's CHINESE_LLM_STACK routes to (primary and fallback).
SEED_STACK_IDS = [
    "qwen/qwen-2-vl-72b-instruct",
    "deepseek/deepseek-chat",
    "qwen/qwen-2.5-72b-instruct",
    "qwen/qwen-2.5-7b-instruct",
    "moonshot/moonshot-v1-128k",
]


@pytest.mark.parametrize("table", ["seed", "openrouter"])
@pytest.mark.parametrize("model", SEED_STACK_IDS)
def test_the_seed_stack_ids_price_in_seed_and_openrouter(table: str, model: str) -> None:
    cost = TABLES[table].cost(model, Usage(prompt_tokens=1_000, completion_tokens=100))
    assert cost.cost_usd > 0


@pytest.mark.parametrize(
    ("alias", "model"),
    [
        ("qwen/qwen-2-vl-72b-instruct", "qwen/qwen2.5-vl-72b-instruct"),
        ("moonshot/moonshot-v1-128k", "moonshotai/kimi-k2"),
        ("deepseek/deepseek-chat-v3", "deepseek/deepseek-chat"),
    ],
)
def test_an_alias_prices_as_its_model_and_is_recorded(alias: str, model: str) -> None:
    price = OPENROUTER.price(alias)
    assert (price.model, price.alias, price.table) == (model, alias, "openrouter")
    assert OPENROUTER.price(model).alias is None
    usage = Usage(prompt_tokens=1_234, completion_tokens=567)
    assert OPENROUTER.cost(alias, usage) == OPENROUTER.cost(model, usage)
    assert OPENROUTER.cost(alias, usage).model == model


def test_an_unknown_model_says_did_you_mean_and_how_to_fix() -> None:
    with pytest.raises(PricingError) as info:
        OPENROUTER.price("deepseek/deepseek-chatt")
    message = str(info.value)
    assert "'deepseek/deepseek-chatt'" in message
    assert "'openrouter'" in message
    assert "Did you mean 'deepseek/deepseek-chat'" in message
    assert "prices.toml" in message
    assert 'llm.prices = "<that file>.toml"' in message
    assert 'tables.openrouter.models."deepseek/deepseek-chatt"' in message


# ---------------------------------------------------------------------------- file errors


def test_an_unknown_table_is_a_config_error_listing_the_tables() -> None:
    with pytest.raises(ConfigError) as info:
        PriceTable.load(table="open_router")
    message = str(info.value)
    assert "deepseek_direct, local, openrouter, seed, western_reference" in message
    assert "Did you mean 'openrouter'" in message


ENTRY = 'as_of = "2026-11"\nsource = "test"\nverified = true\n'
HEAD = 'version = "t"\ncurrency = "USD"\n[tables.t]\n[[tables.t.models."m/x"]]\n'


@pytest.mark.parametrize(
    ("text", "key", "rule"),
    [
        (
            HEAD + "input_per_million = -0.5\noutput_per_million = 1\n" + ENTRY,
            'tables.t.models."m/x".input_per_million',
            "greater than or equal to 0",
        ),
        (
            HEAD + "input_per_million = 1\n" + ENTRY,
            'tables.t.models."m/x".output_per_million',
            "Field required",
        ),
        (
            HEAD
            + "input_per_million = 1\noutput_per_million = 1\n"
            + ENTRY.replace("verified = true\n", ""),
            'tables.t.models."m/x".verified',
            "Field required",
        ),
        (
            HEAD + 'input_per_million = 1\noutput_per_million = 1\nverified = "yes"\n'
            'as_of = "2026-11"\nsource = "t"\n',
            'tables.t.models."m/x".verified',
            "boolean",
        ),
        (
            HEAD + "input_per_million = 1\noutput_per_million = 1\nper_token = 2\n" + ENTRY,
            'tables.t.models."m/x".per_token',
            "Extra inputs",
        ),
        (
            HEAD
            + 'input_per_million = 1\noutput_per_million = 1\ntraining_cutoff = "2024"\n'
            + ENTRY,
            'tables.t.models."m/x".training_cutoff',
            "pattern",
        ),
        (
            HEAD
            + "input_per_million = 1\noutput_per_million = 1\n"
            + ENTRY
            + '[tables.t.aliases]\n"a/b" = "m/nope"\n',
            'tables.t.aliases."a/b"',
            "m/nope",
        ),
        (
            HEAD
            + "input_per_million = 1\noutput_per_million = 1\n"
            + ENTRY
            + '[[tables.t.models."m/x"]]\ninput_per_million = 2\noutput_per_million = 2\n'
            + ENTRY,
            'tables.t.models."m/x"',
            "same date",
        ),
        (
            HEAD.replace('"USD"', '"EUR"')
            + "input_per_million = 1\noutput_per_million = 1\n"
            + ENTRY,
            "currency",
            "USD",
        ),
        (HEAD + "input_per_million = = 1\n", "not valid TOML", "syntax"),
    ],
)
def test_a_malformed_file_is_a_config_error_naming_file_and_key(
    tmp_path: Path, text: str, key: str, rule: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        PriceTable.load(path, table="t")
    message = str(info.value)
    assert str(path) in message
    assert key in message
    assert rule in message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        PriceTable.load(tmp_path / "nope.toml")


# ---------------------------------------------------------------------------- every entry


def all_entries() -> list[pricing.ModelPrice]:
    return [entry for t in TABLES.values() for m in t.names() for entry in t.history(m)]


def test_every_entry_has_non_negative_prices_a_source_and_a_verified_flag() -> None:
    entries = all_entries()
    assert len(entries) >= 20
    for entry in entries:
        prices = [
            entry.input_per_million,
            entry.output_per_million,
            entry.cached_input_price,
            entry.cache_write_price,
            entry.reasoning_price,
            entry.per_image,
            entry.per_request,
        ]
        assert all(math.isfinite(p) and p >= 0 for p in prices), entry
        assert entry.source.strip(), entry
        assert isinstance(entry.verified, bool), entry
        assert entry.as_of, entry


def test_the_packaged_file_is_versioned_in_usd() -> None:
    assert {t.version for t in TABLES.values()} == {"2026-11-27"}
    assert {t.currency for t in TABLES.values()} == {"USD"}
    assert {"seed", "openrouter", "western_reference"} <= set(TABLES)


def test_every_chinese_model_has_a_western_equivalent_that_is_priced() -> None:
    western = set(WESTERN.names())
    chinese = [m for t in ("seed", "openrouter") for m in TABLES[t].names() if m not in western]
    chinese += [*SEED.aliases, *OPENROUTER.aliases, *DEEPSEEK.names()]
    for model in chinese:
        assert WESTERN.equivalents.get(model) in western, model
    assert WESTERN.equivalents["deepseek/deepseek-chat"] == "openai/gpt-4-turbo"


# ---------------------------------------------------------------------------- re-pricing


TYPICAL = Usage(prompt_tokens=3_000, completion_tokens=500)  # one "market analysis" call


def test_market_analysis_savings_multiple_deepseek_v3_vs_gpt_4_turbo() -> None:
    # The seed claims 10-30x. At its own prices, the arithmetic for a typical call:
    deepseek_usd = (3_000 * 0.27 + 500 * 1.10) / M  # 0.00136
    gpt4_turbo_usd = (3_000 * 10.0 + 500 * 30.0) / M  # 0.045
    calls = [("deepseek/deepseek-chat", TYPICAL, None)]
    assert SEED.reprice(calls, WESTERN) == pytest.approx(gpt4_turbo_usd, rel=1e-12)
    multiple = SEED.savings_multiple(calls, WESTERN)
    assert multiple == pytest.approx(gpt4_turbo_usd / deepseek_usd, rel=1e-12)
    assert multiple == pytest.approx(33.088235294117645, rel=1e-12)  # above the claimed 30x


def test_savings_multiple_at_current_openrouter_prices() -> None:
    calls = [("deepseek/deepseek-chat", TYPICAL, date(2026, 9, 1))]
    expected = (3_000 * 10.0 + 500 * 30.0) / (3_000 * 0.2574 + 500 * 1.0287)
    assert OPENROUTER.savings_multiple(calls, WESTERN) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(34.977, abs=1e-3)


def test_reprice_follows_the_equivalent_rule_and_model_map_overrides_it() -> None:
    calls = [("moonshot/moonshot-v1-128k", TYPICAL, None)]
    sonnet = (3_000 * 3.0 + 500 * 15.0) / M
    assert OPENROUTER.reprice(calls, WESTERN) == pytest.approx(sonnet, rel=1e-12)
    override = {"moonshot/moonshot-v1-128k": "openai/gpt-4-turbo"}
    assert OPENROUTER.reprice(calls, WESTERN, model_map=override) == pytest.approx(0.045)


def test_reprice_ignores_the_reported_cost_of_the_model_that_answered() -> None:
    usage = Usage(prompt_tokens=3_000, completion_tokens=500, reported_cost_usd=0.002)
    calls = [("deepseek/deepseek-chat", usage, None)]
    assert OPENROUTER.reprice(calls, WESTERN) == pytest.approx(0.045, rel=1e-12)
    assert OPENROUTER.savings_multiple(calls, WESTERN) == pytest.approx(0.045 / 0.002)


def test_reprice_into_another_table_with_the_same_ids() -> None:
    calls = [("qwen/qwen-2.5-7b-instruct", TYPICAL, None)]
    assert OPENROUTER.reprice(calls, SEED) == pytest.approx(3_500 * 0.09 / M, rel=1e-12)
    calls = [("deepseek/deepseek-chat", TYPICAL, date(2025, 3, 1))]
    assert OPENROUTER.reprice(calls, DEEPSEEK) == pytest.approx(0.00136, rel=1e-12)


def test_reprice_without_an_equivalent_says_how_to_fix() -> None:
    with pytest.raises(PricingError, match=r"tables\.western_reference\.equivalent"):
        DEEPSEEK.reprice([("someone/else", TYPICAL, None)], WESTERN)


def test_savings_multiple_of_free_calls() -> None:
    free = Usage(prompt_tokens=100, completion_tokens=10, reported_cost_usd=0.0)
    assert OPENROUTER.savings_multiple([("deepseek/deepseek-chat", free, None)], WESTERN) == (
        math.inf
    )
    assert OPENROUTER.savings_multiple([], WESTERN) == 1.0


# ---------------------------------------------------------------------------- pre-call bound


def test_estimate_max_cost_by_hand(full: PriceTable) -> None:
    assert SEED.estimate_max_cost("deepseek/deepseek-chat", 3_000, 500) == pytest.approx(
        0.00136, rel=1e-12
    )
    # Claude: prompt at the 3.75 cache-write price, which is dearer than the 3.00 input.
    assert WESTERN.estimate_max_cost("anthropic/claude-3.5-sonnet", 1_000, 100) == pytest.approx(
        (1_000 * 3.75 + 100 * 15.0) / M, rel=1e-12
    )
    # Reasoning dearer than output, an image fee and a request fee.
    assert full.estimate_max_cost("test/full", 1_000, 100, images=2) == pytest.approx(
        (1_000 * 2.5 + 100 * 12.0) / M + 0.002 + 0.0002, rel=1e-12
    )
    with pytest.raises(ValueError, match="must be >= 0"):
        SEED.estimate_max_cost("deepseek/deepseek-chat", -1, 10)


PRICED = [(name, model) for name, t in TABLES.items() for model in t.names()]
PRICED += [("full", m) for m in ("test/full", "test/odd", "test/dated")]


@st.composite
def bounded_calls(draw: st.DrawFn) -> tuple[str, str, int, int, int, Usage, date]:
    table, model = draw(st.sampled_from(PRICED))
    counted = draw(st.integers(0, 200_000))
    max_tokens = draw(st.integers(0, 32_768))
    images = draw(st.integers(0, 8))
    prompt = draw(st.integers(0, counted))
    cached = draw(st.integers(0, prompt))
    written = draw(st.integers(0, prompt - cached))
    completion = draw(st.integers(0, max_tokens))
    reasoning = draw(st.integers(0, completion))
    usage = Usage(
        prompt_tokens=prompt,
        cached_prompt_tokens=cached,
        cache_write_tokens=written,
        completion_tokens=completion,
        reasoning_tokens=reasoning,
        image_inputs=draw(st.integers(0, images)),
    )
    day = draw(st.dates(date(2024, 1, 1), date(2027, 12, 31)))
    return table, model, counted, max_tokens, images, usage, day


@given(call=bounded_calls())
def test_estimate_max_cost_never_below_the_actual_cost(
    full: PriceTable, call: tuple[str, str, int, int, int, Usage, date]
) -> None:
    name, model, counted, max_tokens, images, usage, day = call
    table = full if name == "full" else TABLES[name]
    actual = table.cost(model, usage, day, prefer_reported=False).cost_usd
    bound = table.estimate_max_cost(model, counted, max_tokens, images, at=day)
    assert actual <= bound * (1 + 1e-12) + 1e-15


# ---------------------------------------------------------------------------- token counts


ENGLISH = (
    "Summarise the market regime for AAPL: the 20-day moving average crossed above the "
    "50-day, volume rose 35% week over week, and the RSI sits at 61.4. Answer in JSON."
)
CHINESE = "请分析苹果公司股票的市场走势：二十日均线上穿五十日均线，成交量环比上升。"  # noqa: RUF001
OHLC = "date,open,high,low,close,volume\n2024-03-01,179.55,180.53,177.38,179.66,73488997\n"


def chars_over_4(text: str) -> int:
    return math.ceil(len(text) / 4)


@pytest.mark.parametrize("text", [ENGLISH, CHINESE, OHLC])
def test_text_count_exceeds_a_plain_chars_over_4_estimate(text: str) -> None:
    assert count_text_tokens(text) > chars_over_4(text)


def test_chinese_counts_at_least_one_token_per_character() -> None:
    assert count_text_tokens(CHINESE) >= len(CHINESE)  # ~1 token per CJK char for Qwen


def test_digits_and_punctuation_count_one_token_each() -> None:
    digits_and_punct = sum(1 for c in OHLC if c.isdigit() or c in ",.-")
    assert count_text_tokens(OHLC) >= digits_and_punct
    assert count_text_tokens("0123456789") == 10  # Qwen splits numbers into single digits


def test_prompt_count_by_hand() -> None:
    messages = [{"role": "user", "content": "Hello"}]
    # reply priming + per message + "user" (4 bytes -> 2) + "Hello" (5 bytes -> 2)
    assert count_prompt_tokens(messages) == TOKENS_PER_REPLY + TOKENS_PER_MESSAGE + 2 + 2
    assert count_prompt_tokens([]) == TOKENS_PER_REPLY


def test_each_image_part_adds_a_fixed_count() -> None:
    text = {"type": "text", "text": "What pattern is on this chart?"}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    base = count_prompt_tokens([{"role": "user", "content": [text]}])
    two = count_prompt_tokens([{"role": "user", "content": [text, image, image]}])
    assert two - base == 2 * IMAGE_PART_TOKENS


def test_tool_calls_and_names_are_counted() -> None:
    bare = [{"role": "assistant", "content": None}]
    with_tools = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "1", "function": {"name": "quote", "arguments": "{}"}}],
        }
    ]
    assert count_prompt_tokens(with_tools) > count_prompt_tokens(bare)


@given(st.text())
def test_any_text_counts_at_least_a_third_of_a_token_per_character(text: str) -> None:
    tokens = count_text_tokens(text)
    assert tokens >= len(text) / 3
    assert tokens >= chars_over_4(text)


@given(st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)))
def test_cjk_text_counts_exactly_one_token_per_character(text: str) -> None:
    assert count_text_tokens(text) == len(text)


MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["system", "user"]), "content": st.text()})


@given(st.lists(MESSAGE, max_size=5), MESSAGE, st.text())
def test_prompt_count_grows_with_messages_and_text(
    messages: list[dict[str, str]], extra: dict[str, str], more: str
) -> None:
    before = count_prompt_tokens(messages)
    assert count_prompt_tokens([*messages, extra]) >= before + TOKENS_PER_MESSAGE
    if messages:
        longer = [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + more}]
        assert count_prompt_tokens(longer) >= before
    text = "".join(m["content"] for m in messages)
    assert before >= chars_over_4(text) + TOKENS_PER_MESSAGE * len(messages)


# ---------------------------------------------------------------------------- public API


def test_all_lists_every_public_definition() -> None:
    defined = {
        key
        for key, value in vars(pricing).items()
        if not key.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == pricing.__name__
    }
    assert defined <= set(pricing.__all__)
    assert all(hasattr(pricing, name) for name in pricing.__all__)


def test_the_local_table_prices_every_model_at_zero_and_keeps_smollm2_cutoff() -> None:
    table = PriceTable.load(table="local")
    listed = table.price("smollm2-135m-instruct")
    assert listed.training_cutoff == "2024-06" and listed.input_per_million == 0
    # Any model a local server serves (an Ollama id, say) is $0 by rule...
    other = table.price("llama3.2:1b")
    assert other.input_per_million == 0 and other.output_per_million == 0
    # ...while a hosted table still refuses a model it does not price.
    with pytest.raises(PricingError, match="No price for model"):
        PriceTable.load(table="openrouter").price("llama3.2:1b")
