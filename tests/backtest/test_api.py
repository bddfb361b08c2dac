"""The Python API: run() takes a file, a config or a dict, and bars as a path or a DataFrame;
the result has tidy metrics, consistent properties, a short repr, and no run_dir when nothing
is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import backtest
from backtest.config import RunConfig
from backtest.data import load_bars
from backtest.errors import BacktestError, ConfigError

ROOT = Path(__file__).resolve().parents[2]
SP500 = ROOT / "data" / "SP500.parquet"  # replaced by the session's sample, below


@pytest.fixture(autouse=True)
def _sample_bars(samples_dir: Path) -> None:
    """The S&P 500 sample (written for the session: a fresh clone has no data/)."""
    global SP500
    SP500 = samples_dir / "SP500.parquet"


def _spec(**extra: object) -> dict[str, object]:
    return {
        "data": {"path": str(SP500), "start": "2016-01-01", "end": "2017-12-31"},
        "strategies": [
            {"name": "sma", "kind": "sma", "params": {"fast": 5, "slow": 20}},
            {"name": "coin", "kind": "random", "seeds": 3},
        ],
        **extra,
    }


def _bars() -> pd.DataFrame:
    frame = load_bars(SP500).frame.loc["2016-01-01":"2017-12-31"]
    return frame[["open", "high", "low", "close", "volume"]]


def test_a_file_a_config_and_a_dict_give_the_same_run(tmp_path: Path) -> None:
    toml = tmp_path / "exp.toml"
    toml.write_text(
        f"""
[data]
path = "{SP500}"
start = 2016-01-01
end = 2017-12-31
[[strategies]]
name = "sma"
kind = "sma"
params = {{ fast = 5, slow = 20 }}
[[strategies]]
name = "coin"
kind = "random"
seeds = 3
"""
    )
    a = backtest.run(toml, write=False)
    b = backtest.run(_spec(), write=False)
    c = backtest.run(RunConfig.model_validate(_spec()), write=False)
    assert a.run_id == b.run_id == c.run_id
    pd.testing.assert_frame_equal(a.ledger, b.ledger)
    d = backtest.run(_spec(), overrides=["strategies[0].params.fast=3"], write=False)
    assert d.run_id != a.run_id


def test_bars_from_a_dataframe_equal_bars_from_the_file(tmp_path: Path) -> None:
    subset = tmp_path / "sub.parquet"
    from backtest.data import write_bars

    meta = load_bars(SP500).meta
    write_bars(_bars(), subset, meta)
    from_file = backtest.run(_spec(), data=subset, write=False)
    from_frame = backtest.run(_spec(), data=_bars(), write=False)
    cols = ["strategy", "timestamp", "exposure", "equity_usd", "fees_usd"]
    pd.testing.assert_frame_equal(from_file.ledger[cols], from_frame.ledger[cols])
    # A dict without [data] is enough when the bars are given; the frame is kept under
    # <output_dir>/.data when the run is written, so the run id follows its contents.
    spec = _spec(output_dir=str(tmp_path / "runs"))
    del spec["data"]
    written = backtest.run(spec, data=_bars())
    stored = list((tmp_path / "runs" / ".data").rglob("*.parquet"))
    assert len(stored) == 1 and written.run_dir is not None
    again = backtest.run(spec, data=_bars())
    assert again.reused and again.run_id == written.run_id
    shifted = _bars().assign(close=lambda f: f["close"] * 1.0)
    shifted.iloc[-1, shifted.columns.get_loc("close")] = shifted["close"].iloc[-1] * 1.01
    shifted.iloc[-1, shifted.columns.get_loc("high")] = max(
        shifted["high"].iloc[-1], shifted["close"].iloc[-1]
    )
    assert backtest.run(spec, data=shifted).run_id != written.run_id


def test_a_broken_dataframe_names_the_row_and_bad_data_is_refused() -> None:
    bars = _bars()
    bars.iloc[10, bars.columns.get_loc("high")] = bars["low"].iloc[10] - 1.0
    with pytest.raises(BacktestError) as info:
        backtest.run(_spec(), data=bars, write=False)
    assert str(bars.index[10].date()) in str(info.value)
    with pytest.raises(ConfigError, match="not bars"):
        backtest.run(_spec(), data=[1, 2, 3], write=False)  # type: ignore[arg-type]


def test_tidy_metrics_properties_repr_and_no_run_dir_in_memory() -> None:
    result = backtest.run(_spec(), write=False)
    assert result.run_dir is None
    metrics = result.metrics
    assert list(metrics.index) == ["sma", "coin", "buy_and_hold"]  # the run's order
    assert metrics.loc["coin", "seeds"] == 3 and metrics.loc["sma", "seeds"] == 1
    assert bool(metrics.loc["buy_and_hold", "benchmark"])
    by_seed = result.metrics_by_seed
    coin = by_seed.xs("coin", level="strategy")["sharpe"]
    assert list(coin.index) == [0, 1, 2]
    # The mean over seeds is the seed group's mean, and it matches the per-seed rows.
    assert metrics.loc["coin", "sharpe"] == pytest.approx(np.mean(coin.to_numpy()))
    assert metrics.loc["coin", "sharpe_std"] == pytest.approx(np.std(coin.to_numpy(), ddof=1))
    assert metrics.loc["sma", "sharpe"] == result.summary["strategies"]["sma"]["sharpe"]
    # Properties, not methods; the nested summary is still there.
    assert isinstance(result.equity, pd.DataFrame) and "sma" in result.equity.columns
    assert isinstance(result.ledger, pd.DataFrame)
    assert "seed_groups" in result.summary
    text = repr(result)
    assert len(text) < 200 and result.run_id in text and "not written" in text
    assert "<table" in result._repr_html_()
