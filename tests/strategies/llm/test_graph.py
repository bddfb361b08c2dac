"""Call frequency (schedule, volatility and news events), held signals, the cost estimate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest import RunConfig, run
from backtest.data import import_text, load_bars
from backtest.llm.testing import LLMTestServer
from strategies.llm.graph import volatility_spikes
from tests.strategies.test_llm import answer

REPO = Path(__file__).resolve().parents[3]
ROUTING = REPO / "experiments" / "routing" / "seed_stack.toml"
END = "2016-03-31"


def _config(
    data: Path, tmp: Path, *, strategy: dict[str, Any] | None = None, **params: Any
) -> RunConfig:
    llm = {"routing": str(ROUTING), "mode": "offline", "cassette": str(tmp / "cassette"), **params}
    return RunConfig.model_validate(
        {
            "data": {"path": str(data), "end": END},
            "splits": {"train_end": "2015-06-01", "validation_end": "2016-01-01"},
            "strategies": [strategy or {"name": "llm", "kind": "llm", "params": llm}],
            "benchmark": None,
            "output_dir": str(tmp / "runs"),
            "seed": 1,
        }
    )


def _call_days(result: Any, name: str = "llm") -> list[str]:
    calls = result.llm_calls
    mine = calls[(calls.strategy == name) & (calls.role == "meta_orchestrator")]
    return [str(t.date()) for t in mine["timestamp"]]


@pytest.fixture(autouse=True)
def _local_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    import strategies.llm.graph as graph

    original = graph.load_routing
    monkeypatch.setattr(
        graph,
        "load_routing",
        lambda path: original(path).model_copy(update={"profile": "openai_compatible"}),
    )


# ------------------------------------------------------------------ volatility


@settings(max_examples=60, deadline=None)
@given(
    returns=st.lists(st.floats(-0.1, 0.1), min_size=0, max_size=80),
    k=st.floats(0.5, 4.0),
    window=st.integers(2, 15),
)
def test_volatility_spikes_match_a_pandas_rolling_oracle(
    returns: list[float], k: float, window: int
) -> None:
    close = 100 * np.exp(np.cumsum([0.0, *returns]))
    r = np.log(pd.Series(close)).diff()
    std = r.shift(1).rolling(window).std(ddof=1)
    expected = ((r.abs() > k * std) & (std > 0)).to_numpy()
    got = volatility_spikes(close, k, window)
    # Float noise at the threshold itself may differ between the two computations.
    near = np.isclose(r.abs().to_numpy(), (k * std).to_numpy(), rtol=1e-9, atol=1e-15)
    assert np.array_equal(got[~near], expected[~near])


def test_a_spike_is_seen_only_from_its_own_bar() -> None:
    close = 100 * np.exp(np.cumsum(np.r_[0.0, np.tile([0.01, -0.01], 15), 0.2]))
    flags = volatility_spikes(close, 3.0, 10)
    assert flags[-1] and not flags[:-1].any()
    # Appending later bars never changes an earlier flag (no look-ahead).
    later = np.r_[close, close[-1] * np.exp(np.cumsum([0.3, -0.3, 0.01]))]
    assert np.array_equal(volatility_spikes(later, 3.0, 10)[: len(close)], flags)


# ------------------------------------------------------------------- schedules


def test_between_calls_the_last_signal_holds_with_its_age(
    samples_dir: Path, tmp_path: Path
) -> None:
    result = run(_config(samples_dir / "SP500.parquet", tmp_path, every_n_bars=5), write=False)
    decisions = result.decisions
    days = [str(t.date()) for t in decisions["timestamp"]]
    assert _call_days(result) == days[::5]
    for k, row in enumerate(decisions.itertuples()):
        age = k % 5
        signals = json.loads(row.signals)
        assert {s["features"]["age_bars"] for s in signals} == {float(age)}
        if age:
            assert row.llm_calls == 0 and row.action == "HOLD" and np.isnan(row.target_position)
            assert f"{age} bar(s) old" in row.reasoning
            called = decisions.iloc[k - age]
            assert row.confidence == called.confidence
            before = [{**s, "features": {**s["features"], "age_bars": 0.0}} for s in signals]
            assert before == json.loads(called.signals)
        else:
            assert row.llm_calls == 4
    ledger = result.ledger
    assert (ledger["llm_calls"] > 0).sum() == len(days[::5])


def test_volatility_events_call_the_graph_and_the_estimate_counts_them(
    samples_dir: Path, tmp_path: Path
) -> None:
    config = _config(
        samples_dir / "SP500.parquet",
        tmp_path,
        every_n_bars=0,
        on_volatility_k=2.0,
        volatility_window=20,
    )
    result = run(config, write=False)
    bars = load_bars(samples_dir / "SP500.parquet", end=END).frame
    spikes = volatility_spikes(bars["close"].to_numpy(), 2.0, 20)
    days = [str(t.date()) for t in result.decisions["timestamp"]]
    flagged = {str(t.date()) for t in bars.index[spikes]}
    expected = [d for k, d in enumerate(days) if k == 0 or d in flagged]
    assert len(expected) > 3  # the window has spikes besides the first bar
    assert _call_days(result) == expected
    llm = result.decisions
    spiking = llm[llm["timestamp"].dt.date.astype(str).isin(expected[1:])]
    assert spiking["reasoning"].str.contains(r"\[LLM call: volatility\]").all()
    estimate = result.manifest["llm_cost_estimate"]["per_strategy"]["llm"]
    assert estimate["calls"] == len(result.llm_calls) == 4 * len(expected)


def test_a_news_item_arriving_calls_the_graph(samples_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "SP500.parquet").write_bytes((samples_dir / "SP500.parquet").read_bytes())
    news = tmp_path / "news.csv"
    pd.DataFrame(
        {
            "available_at": [
                "2015-12-01T12:00:00Z",  # before the window: already known at its start
                "2016-01-06T15:00:00Z",
                "2016-01-06T16:00:00Z",  # two items in one bar: one call
                "2016-02-03T21:00:01Z",  # a second after the close: the next bar's
            ],
            "headline": ["old", "first", "second", "late"],
            "text": ["a", "b", "c", "d"],
            "source": ["wire"] * 4,
        }
    ).to_csv(news, index=False)
    import_text(news, kind="news", dest=data)
    config = _config(data / "SP500.parquet", tmp_path, every_n_bars=0, on_news=True)
    result = run(config, write=False)
    first = str(result.decisions["timestamp"].iloc[0].date())
    assert _call_days(result) == [first, "2016-01-06", "2016-02-04"]
    estimate = result.manifest["llm_cost_estimate"]["per_strategy"]["llm"]
    assert estimate["calls"] == len(result.llm_calls) == 12


def test_call_frequency_options_are_validated(tmp_path: Path) -> None:
    from backtest.config import StrategyConfig
    from backtest.engine import build_policy
    from backtest.errors import ConfigError

    for params, message in (
        ({"every_n_bars": -1}, "every_n_bars"),
        ({"on_volatility_k": 0}, "on_volatility_k"),
        ({"volatility_window": 1}, "volatility_window"),
        ({"chart": "svg"}, "chart"),
    ):
        spec = StrategyConfig(name="llm", kind="llm", params={"routing": str(ROUTING), **params})
        with pytest.raises(ConfigError, match=message):
            build_policy(spec, 0)


# --------------------------------------------------------------------- hybrid


def test_the_hybrid_combines_the_held_llm_signal_and_records_its_age(
    samples_dir: Path, tmp_path: Path
) -> None:
    drl = {
        "timesteps": 256,
        "episode_bars": 64,
        "eval_every": 128,
        "seed": 3,
        "hyperparameters": {"n_steps": 64, "batch_size": 32},
        "cache_dir": str(tmp_path / "models"),
    }
    llm = {"mode": "offline", "routing": str(ROUTING), "every_n_bars": 3}
    strategy = {"name": "hybrid", "kind": "hybrid", "seeds": 1, "params": {"drl": drl, "llm": llm}}
    result = run(_config(samples_dir / "SP500.parquet", tmp_path, strategy=strategy), write=False)
    mine = result.decisions[result.decisions["strategy"] == "hybrid"]  # not its controls
    rows = [json.loads(s) for s in mine["signals"]]
    held = [next(s for s in signals if s["agent"] == "llm") for signals in rows]
    assert [s["features"]["age_bars"] for s in held] == [float(k % 3) for k in range(len(held))]
    for k, signal in enumerate(held):
        called = held[k - k % 3]
        # The held view is the call's: same direction and confidence, not a neutral HOLD.
        assert (signal["signal"], signal["confidence"]) == (called["signal"], called["confidence"])
    assert any(s["signal"] != 0 for s in held[1::3])
    estimate = result.manifest["llm_cost_estimate"]["per_strategy"]["hybrid"]
    assert estimate["calls"] == result.summary["strategies"]["hybrid"]["llm_calls"]


# -------------------------------------------------------------- cost estimate


def test_the_estimate_bounds_the_recorded_cost_from_above(
    samples_dir: Path, tmp_path: Path
) -> None:
    from backtest.llm.pricing import PriceTable
    from backtest.llm.router import load_routing

    table = PriceTable.load(table="openrouter")
    # The server reports what each model's listed price makes of the tokens it counts.
    prices = {
        m: (table.price(m).input_per_million, table.price(m).output_per_million)
        for m in load_routing(ROUTING).models()
    }
    with LLMTestServer(models={"*": answer}, prices=prices) as server:
        config = _config(
            samples_dir / "SP500.parquet",
            tmp_path,
            mode="live",
            base_url=server.base_url,
            every_n_bars=2,
        )
        result = run(config, write=False)
    estimate = result.manifest["llm_cost_estimate"]
    cost = result.llm_calls["cost_usd"].sum()
    assert estimate["calls"] == len(result.llm_calls)
    assert cost > 0 and cost <= estimate["usd"] <= 20 * cost


def test_a_held_abstain_holds_no_confidence_and_counts_once(
    samples_dir: Path, tmp_path: Path
) -> None:
    from backtest.llm.testing import Fault

    with LLMTestServer(models={"*": answer}) as server:
        server.inject("*", Fault.BAD_GATEWAY, times=None)
        config = _config(
            samples_dir / "SP500.parquet",
            tmp_path,
            mode="live",
            base_url=server.base_url,
            max_retries=0,
            every_n_bars=3,
        )
        result = run(config, write=False)
    decisions = result.decisions
    called = decisions.iloc[::3]
    held = decisions.drop(index=called.index)
    assert called["abstain"].all() and not held["abstain"].any()
    assert (held["confidence"] == 0).all() and (held["llm_calls"] == 0).all()
    assert result.summary["strategies"]["llm"]["abstains"] == len(called)
