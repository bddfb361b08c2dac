"""The engine: determinism, no look-ahead for every policy, LLM cost, artifacts, oracles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import vectorbt as vbt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtest import RunConfig, run
from backtest.data import BarMeta, write_bars
from backtest.engine import LEDGER_COLUMNS, LLM_CALL_COLUMNS
from backtest.errors import ConfigError
from backtest.features import compute_features
from strategies.base import Decision, MarketView, Observation
from tests.backtest.strategies_data import bar_frames

ALL_BASELINES = [
    {"name": "sma", "kind": "sma", "params": {"fast": 3, "slow": 8}},
    {"name": "sma_short", "kind": "sma", "params": {"fast": 5, "slow": 12, "short": True}},
    {"name": "random", "kind": "random"},
    {"name": "buy_and_hold", "kind": "buy_and_hold"},
]


def _config(path: Path, out: Path, **overrides: object) -> RunConfig:
    raw: dict[str, object] = {
        "data": {"path": str(path), "max_gap": None},
        "strategies": ALL_BASELINES,
        "env": {"window": 5},
        "output_dir": str(out),
        "seed": 7,
    }
    raw.update(overrides)
    return RunConfig.model_validate(raw)


def _sp500_config(samples_dir: Path, out: Path, **overrides: object) -> RunConfig:
    raw: dict[str, object] = {
        "data": {"path": str(samples_dir / "SP500.parquet")},
        "splits": {"train_end": "2013-01-01", "validation_end": "2016-01-01"},
        "strategies": [
            {"name": "sma", "kind": "sma", "params": {"fast": 10, "slow": 30}},
            {"name": "random", "kind": "random"},
        ],
        "output_dir": str(out),
        "seed": 3,
    }
    raw.update(overrides)
    return RunConfig.model_validate(raw)


# --------------------------------------------------------------------- determinism


def test_same_inputs_give_byte_identical_artifacts(samples_dir: Path, tmp_path: Path) -> None:
    a = run(_sp500_config(samples_dir, tmp_path / "a"))
    b = run(_sp500_config(samples_dir, tmp_path / "b"))
    assert a.run_id == b.run_id  # the output directory is not part of the id
    for name in ("ledger.parquet", "decisions.parquet", "llm_calls.parquet", "summary.json"):
        assert (a.run_dir / name).read_bytes() == (b.run_dir / name).read_bytes(), name
    c = run(_sp500_config(samples_dir, tmp_path / "c", seed=4))
    assert c.run_id != a.run_id
    random_a = a.ledger[a.ledger.strategy == "random"]["equity_usd"].to_numpy()
    random_c = c.ledger[c.ledger.strategy == "random"]["equity_usd"].to_numpy()
    assert not np.array_equal(random_a, random_c)


def test_run_directory_contents(samples_dir: Path, tmp_path: Path) -> None:
    result = run(_sp500_config(samples_dir, tmp_path))
    files = sorted(p.name for p in result.run_dir.iterdir())
    assert files == [
        "decisions.parquet",
        "ledger.parquet",
        "llm_calls.parquet",
        "manifest.json",
        "summary.json",
    ]
    assert not list(tmp_path.glob(".*tmp*"))
    ledger = pq.read_table(result.run_dir / "ledger.parquet").to_pandas()
    assert tuple(ledger.columns) == LEDGER_COLUMNS
    assert set(ledger["strategy"]) == {"sma", "random", "buy_and_hold"}
    calls = pq.read_table(result.run_dir / "llm_calls.parquet")
    assert calls.num_rows == 0 and calls.schema.names == list(LLM_CALL_COLUMNS)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["run_id"] == result.run_id
    assert len(manifest["data"]["sha256"]) == 64
    assert manifest["versions"]["numpy"] and manifest["versions"]["python"]
    assert manifest["config"]["env"]["fee_bps"] == 1.0
    summary = json.loads((result.run_dir / "summary.json").read_text())
    # The test split: 2016-2018, every strategy on the same dates.
    assert summary["start"].startswith("2016-01-04") and summary["end"].startswith("2018-12-31")
    assert summary["periods_per_year"] == pytest.approx(251.63, abs=0.01)
    sma = summary["strategies"]["sma"]
    assert {"sharpe", "alpha", "beta", "information_ratio", "trade_count"} <= set(sma)
    assert "alpha" not in summary["strategies"]["buy_and_hold"]
    equity = result.equity
    assert list(equity.columns) == ["buy_and_hold", "random", "sma"]
    assert equity.notna().all().all()


def test_public_api_is_importable_from_the_package() -> None:
    import backtest

    assert backtest.run is run and backtest.RunConfig is RunConfig
    assert set(backtest.__all__) == {"RunConfig", "RunResult", "run"}


# ----------------------------------------------------------------------- look-ahead


def _write(frame: pd.DataFrame, path: Path) -> Path:
    return write_bars(frame, path, BarMeta(symbol="T", frequency="1d"))


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)
@given(
    frame=bar_frames(min_size=70, max_size=110),
    cut=st.floats(0.1, 0.9),
    factors=st.lists(st.floats(0.5, 2.0), min_size=110, max_size=110),
)
def test_changing_the_future_changes_nothing_before_it(
    tmp_path_factory: pytest.TempPathFactory,
    frame: pd.DataFrame,
    cut: float,
    factors: list[float],
) -> None:
    tmp = tmp_path_factory.mktemp("lookahead")
    t = 45 + int(cut * (len(frame) - 47))  # a bar after the warm-up, before the end
    future = frame.copy()
    scale = np.ones(len(frame))
    scale[t + 1 :] = factors[: len(frame) - t - 1]
    for column in ("open", "high", "low", "close"):
        future[column] = future[column].to_numpy() * scale
    future["volume"] = future["volume"].to_numpy() * scale**2
    # Features: bitwise identical up to t.
    f1 = compute_features(
        *(frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume"))
    )
    f2 = compute_features(
        *(future[c].to_numpy() for c in ("open", "high", "low", "close", "volume"))
    )
    np.testing.assert_array_equal(f1.values[: t + 1], f2.values[: t + 1])
    # Decisions and the ledger: identical for every bar up to t, for every policy.
    a = run(_config(_write(frame, tmp / "a.parquet"), tmp / "ra"), write=False)
    b = run(_config(_write(future, tmp / "b.parquet"), tmp / "rb"), write=False)
    cutoff = frame.index[t]
    for result in (a, b):
        assert set(result.decisions["strategy"]) == {s["name"] for s in ALL_BASELINES}
    for name in ("decisions", "ledger"):
        before_a = getattr(a, name).loc[lambda f: f.timestamp <= cutoff].reset_index(drop=True)
        before_b = getattr(b, name).loc[lambda f: f.timestamp <= cutoff].reset_index(drop=True)
        pd.testing.assert_frame_equal(before_a, before_b)


class PeekingPolicy:
    """Tries to read the bar after the decision through the market view."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[int] = []

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        self.seen.clear()

    def act(self, obs: Observation) -> Decision:
        closes = obs.market.close
        self.seen.append(len(closes) - 1)
        assert not closes.flags.writeable
        assert obs.market.frame().index[-1] == obs.market.timestamp
        return Decision(target_position=None)


def test_market_view_ends_at_the_decision_bar(samples_dir: Path, tmp_path: Path) -> None:
    policy = PeekingPolicy("peek")
    from backtest import engine

    original = engine.build_policy
    engine.build_policy = lambda spec, i: policy if spec.name == "peek" else original(spec, i)
    try:
        result = run(
            _sp500_config(
                samples_dir, tmp_path, strategies=[{"name": "peek", "kind": "buy_and_hold"}]
            ),
            write=False,
        )
    finally:
        engine.build_policy = original
    ledger = result.ledger[result.ledger.strategy == "peek"]
    assert policy.seen == sorted(policy.seen) and len(policy.seen) == len(ledger)
    assert all(b - a == 1 for a, b in zip(policy.seen, policy.seen[1:], strict=False))


# ------------------------------------------------------------------ LLM cost, abstain


class CostlyPolicy:
    """Long always; every decision reports one LLM call costing $0.25 (or an abstain)."""

    def __init__(self, name: str, *, cost_usd: float = 0.25, abstain_every: int = 0) -> None:
        self.name = name
        self.cost_usd = cost_usd
        self.abstain_every = abstain_every
        self._k = 0

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        self._k = 0

    def act(self, obs: Observation) -> Decision:
        self._k += 1
        from backtest.llm.records import LLMCall

        call = LLMCall(
            role="meta_orchestrator",
            model_requested="deepseek/deepseek-chat",
            model_served="deepseek/deepseek-chat-v3-0324",
            cost_usd=self.cost_usd,
            spend_usd=0.0,
            prompt_tokens=900,
            completion_tokens=120,
            cache="hit",
        )
        if self.abstain_every and self._k % self.abstain_every == 0:
            return Decision(
                target_position=None, abstain=True, reasoning="unparseable", llm_calls=(call,)
            )
        return Decision(target_position=1.0, action="BUY", llm_calls=(call,))


def test_llm_cost_is_charged_against_equity(samples_dir: Path, tmp_path: Path) -> None:
    path = "tests.backtest.test_engine:CostlyPolicy"
    result = run(
        _sp500_config(
            samples_dir,
            tmp_path,
            strategies=[
                {"name": "free", "kind": path, "params": {"cost_usd": 0.0}},
                {"name": "paid", "kind": path, "params": {"cost_usd": 0.25, "abstain_every": 10}},
            ],
        )
    )
    ledger = result.ledger
    free = ledger[ledger.strategy == "free"].reset_index(drop=True)
    paid = ledger[ledger.strategy == "paid"].reset_index(drop=True)
    n = len(paid)
    assert paid["llm_cost_usd"].sum() == pytest.approx(0.25 * n)
    assert paid["abstain"].sum() == n // 10
    # With the same targets, net equity differs by the LLM bill (and the tiny effect the
    # bill has on sizing), never by more than the bill itself.
    gap = free["equity_usd"] - paid["equity_usd"]
    assert (gap > 0).iloc[1:].all()
    assert gap.iloc[-1] == pytest.approx(0.25 * n, rel=0.3)
    calls = result.llm_calls
    assert len(calls) == 2 * n
    assert set(calls["role"]) == {"meta_orchestrator"}
    assert set(calls["cache"]) == {"hit"} and calls["prompt_tokens"].sum() == 900 * 2 * n
    assert calls["spend_usd"].sum() == 0.0
    assert calls[calls.strategy == "paid"]["cost_usd"].sum() == pytest.approx(0.25 * n)
    summary = result.summary["strategies"]["paid"]
    assert summary["llm_calls"] == n and summary["abstains"] == n // 10
    decisions = result.decisions[result.decisions.strategy == "paid"]
    assert decisions["abstain"].sum() == n // 10
    assert (decisions[decisions.abstain]["reasoning"] == "unparseable").all()


# ------------------------------------------------------------------ config mistakes


def test_strategy_mistakes_name_the_key(samples_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.kind.*Did you mean 'sma'"):
        run(_sp500_config(samples_dir, tmp_path, strategies=[{"name": "x", "kind": "smaa"}]))
    with pytest.raises(ConfigError, match=r"strategies\[0\]\.params"):
        run(
            _sp500_config(
                samples_dir,
                tmp_path,
                strategies=[{"name": "x", "kind": "sma", "params": {"fast": 30, "slow": 10}}],
            )
        )
    with pytest.raises(ConfigError, match=r"cannot import"):
        run(
            _sp500_config(
                samples_dir, tmp_path, strategies=[{"name": "x", "kind": "nowhere.module:Thing"}]
            )
        )
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="fee_bp"):
        _sp500_config(samples_dir, tmp_path, env={"fee_bp": 1})


def test_ruin_stops_trading_and_is_reported(tmp_path: Path) -> None:
    index = pd.date_range("2020-01-01", periods=120, freq="1D", tz="UTC", name="timestamp").as_unit(
        "ns"
    )
    close = 100 * np.exp(np.cumsum(np.r_[np.zeros(60), np.full(60, 0.15)]))
    frame = pd.DataFrame(
        {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1.0},
        index=index,
    )
    cfg = _config(
        _write(frame, tmp_path / "up.parquet"),
        tmp_path,
        strategies=[{"name": "short3x", "kind": "buy_and_hold", "params": {"exposure": -3.0}}],
        env={"window": 5},
        risk={"max_leverage": 3.0},
    )
    result = run(cfg, write=False)
    assert any("lost its whole equity" in w for w in result.manifest["warnings"])
    equity = result.ledger[result.ledger.strategy == "short3x"]["equity_usd"].to_numpy()
    assert equity[-1] <= 0 and np.all(equity[-5:] == equity[-1])


# -------------------------------------------------------------------------- oracles


def test_sma_crossover_matches_vectorbt_from_signals(samples_dir: Path, tmp_path: Path) -> None:
    """Frictionless SMA(10/30) long/flat over the whole S&P 500 sample, against vectorbt."""
    cfg = RunConfig.model_validate(
        {
            "data": {"path": str(samples_dir / "SP500.parquet")},
            "strategies": [{"name": "sma", "kind": "sma", "params": {"fast": 10, "slow": 30}}],
            "benchmark": None,
            "env": {"fee_bps": 0, "spread_bps": 0, "slippage_bps": 0, "rebalance_band": 0},
            "output_dir": str(tmp_path),
        }
    )
    result = run(cfg, write=False)
    ledger = result.ledger.set_index("timestamp")
    frame = pd.read_parquet(samples_dir / "SP500.parquet").set_index("timestamp")
    frame = frame.loc[ledger.index]
    close = frame["close"]
    fast, slow = close.rolling(10).mean(), close.rolling(30).mean()
    # The engine only sees bars from its first decision on; vectorbt must too, but the SMA
    # window reaches back, so compute the averages on the full history first.
    full = pd.read_parquet(samples_dir / "SP500.parquet").set_index("timestamp")["close"]
    fast = full.rolling(10).mean().loc[ledger.index]
    slow = full.rolling(30).mean().loc[ledger.index]
    above = (fast > slow).to_numpy()
    entries = pd.Series(np.r_[False, above[:-1]], index=close.index)
    exits = pd.Series(np.r_[False, ~above[:-1]], index=close.index)
    portfolio = vbt.Portfolio.from_signals(
        close, entries, exits, price=frame["open"], init_cash=100_000.0, fees=0.0
    )
    np.testing.assert_allclose(
        ledger["equity_usd"].to_numpy(), portfolio.value().to_numpy(), rtol=1e-9
    )
    assert result.summary["strategies"]["sma"]["trade_count"] == int(portfolio.orders.count())


def test_risk_free_rate_as_a_series_of_published_rates(samples_dir: Path, tmp_path: Path) -> None:
    from backtest.metrics import returns_from_equity, sharpe

    rates = tmp_path / "rates.csv"
    pd.DataFrame({"timestamp": ["2015-12-15", "2017-06-14"], "rate": [0.005, 0.0125]}).to_csv(
        rates, index=False
    )
    constant = run(_sp500_config(samples_dir, tmp_path, risk_free_rate=0.005), write=False)
    series = run(_sp500_config(samples_dir, tmp_path, risk_free_rate=str(rates)), write=False)
    equity = series.equity["sma"].to_numpy()
    index = series.equity.index
    per_bar = np.where(index >= pd.Timestamp("2017-06-14", tz="UTC"), 0.0125, 0.005)
    ppy = series.summary["periods_per_year"]
    expected = sharpe(returns_from_equity(equity), ppy, per_bar[1:])
    assert series.summary["strategies"]["sma"]["sharpe"] == pytest.approx(expected, rel=1e-12)
    assert (
        series.summary["strategies"]["sma"]["sharpe"]
        != constant.summary["strategies"]["sma"]["sharpe"]
    )
    late = tmp_path / "late.csv"
    pd.DataFrame({"timestamp": ["2017-01-01"], "rate": [0.01]}).to_csv(late, index=False)
    with pytest.raises(ConfigError, match="add earlier rates"):
        run(_sp500_config(samples_dir, tmp_path, risk_free_rate=str(late)), write=False)


# ------------------------------------------------------------------------ walk-forward


def _walk_forward_config(path: Path, out: Path, models: Path, **walk_forward: object) -> RunConfig:
    drl = {
        "timesteps": 128,
        "episode_bars": 64,
        "eval_every": 64,
        "hyperparameters": {"n_steps": 64, "batch_size": 32},
        "cache_dir": str(models),
    }
    return RunConfig.model_validate(
        {
            "data": {"path": str(path), "start": "2012-01-01", "end": "2016-12-31"},
            "splits": {"walk_forward": {"n_folds": 3, "test_size": 120, **walk_forward}},
            "strategies": [
                {"name": "sma", "kind": "sma", "params": {"fast": 5, "slow": 20}},
                {"name": "drl", "kind": "drl", "seeds": 1, "params": drl},
            ],
            "output_dir": str(out),
        }
    )


def test_walk_forward_refits_per_fold_and_stitches_the_test_blocks(
    samples_dir: Path, tmp_path: Path
) -> None:
    from backtest.data import load_bars, walk_forward_folds

    path = samples_dir / "SP500.parquet"
    models = tmp_path / "models"
    config = _walk_forward_config(path, tmp_path / "runs", models, gap=5)
    result = run(config)
    bars = load_bars(path, start="2012-01-01", end="2016-12-31")
    folds = walk_forward_folds(len(bars), n_folds=3, test_size=120, gap=5)
    index = bars.frame.index
    # One model per fold, each trained (and validated) only on its fold's train block: the
    # gap's 5 bars before the test block are not trained on.
    manifests = [json.loads((m / "manifest.json").read_text()) for m in models.iterdir()]
    assert len(manifests) == 3
    last_seen = sorted(m["last_validation_bar"] for m in manifests)
    for fold, seen in zip(folds, last_seen, strict=True):
        assert pd.Timestamp(seen) == index[fold.train.stop - 1] == index[fold.test.start - 6]
    # The ledger is the stitched out-of-sample curve: every test bar once, in order.
    ledger = result.ledger
    for name in ("sma", "drl", "buy_and_hold"):
        rows = ledger[ledger.strategy == name]
        assert list(rows.timestamp) == list(index[folds[0].test.start :])
        equity = rows.equity_usd.to_numpy()
        for fold in folds[1:]:
            k = fold.test.start - folds[0].test.start
            # A fold starts flat with the equity the last one ended with.
            assert equity[k] == pytest.approx(equity[k - 1], rel=1e-12)
            assert rows.position_units.to_numpy()[k] == 0.0
    summary = result.summary
    assert [f["fold"] for f in summary["folds"]] == [0, 1, 2]
    for fold, entry in zip(folds, summary["folds"], strict=True):
        assert entry["test_start"] == index[fold.test.start].isoformat()
        assert entry["test_end"] == index[fold.test.stop - 1].isoformat()
        assert entry["train_end"] == index[fold.train.stop - 1].isoformat()
        assert set(entry["strategies"]) == {"sma", "drl", "buy_and_hold"}
        assert "sharpe" in entry["strategies"]["drl"]
    # A rerun hits the model cache and repeats the ledger byte for byte.
    again = run(config)
    assert len(list(models.iterdir())) == 3
    assert (again.run_dir / "ledger.parquet").read_bytes() == (
        result.run_dir / "ledger.parquet"
    ).read_bytes()


def test_rolling_walk_forward_hides_bars_before_the_train_block(
    samples_dir: Path, tmp_path: Path
) -> None:
    from backtest.data import load_bars

    path = samples_dir / "SP500.parquet"
    models = tmp_path / "models"
    run(
        _walk_forward_config(path, tmp_path / "runs", models, n_folds=2, train_size=400),
        write=False,
    )
    index = load_bars(path, start="2012-01-01", end="2016-12-31").frame.index
    firsts = sorted(
        json.loads((m / "manifest.json").read_text())["first_train_bar"] for m in models.iterdir()
    )
    n = len(index)
    expected = [index[n - 2 * 120 - 400], index[n - 120 - 400]]
    assert [pd.Timestamp(f) for f in firsts] == expected
    with pytest.raises(ConfigError, match="train block"):
        run(
            _walk_forward_config(path, tmp_path / "r2", models, n_folds=2, train_size=20),
            write=False,
        )
    with pytest.raises(ValueError, match="walk_forward replaces"):
        RunConfig.model_validate(
            {
                "data": {"path": "x"},
                "splits": {
                    "train_end": "2015-01-01",
                    "validation_end": "2016-01-01",
                    "walk_forward": {"n_folds": 2, "test_size": 10},
                },
                "strategies": [{"name": "s", "kind": "sma"}],
            }
        )


# ------------------------------------------- LLM leakage guard and cost estimate

EVENTS: list[str] = []


class FakeLLM:
    """Buys and holds, and answers the engine's two optional LLM questions."""

    def __init__(
        self,
        name: str,
        models: tuple[str, ...] = (),
        usd_per_bar: float = 0.01,
        max_run_usd: float | None = None,
    ) -> None:
        self.name = name
        self.models = list(models)
        self.usd_per_bar = usd_per_bar
        self.max_run_usd = max_run_usd

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        EVENTS.append("reset")

    def act(self, obs: Observation) -> Decision:
        EVENTS.append("act")
        return Decision(target_position=1.0)

    def models_used(self) -> list[str]:
        return self.models

    def estimate_llm_cost(self, market: MarketView, first_bar: int) -> dict[str, float]:
        EVENTS.append(f"estimate {first_bar} {len(market)}")
        bars = len(market) - first_bar
        return {
            "calls": 4 * bars,
            "usd": self.usd_per_bar * bars,
            "max_run_usd": self.max_run_usd,
        }


def _dated_bars(tmp_path: Path, start: str, end: str) -> Path:
    index = pd.bdate_range(start, end, tz="UTC").as_unit("ns")
    rng = np.random.default_rng(5)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(index))))
    open_ = np.r_[100.0, close[:-1]]
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.002,
            "low": np.minimum(open_, close) * 0.998,
            "close": close,
            "volume": rng.uniform(1e5, 2e5, len(index)),
        },
        index=pd.DatetimeIndex(index, name="timestamp"),
    )
    return _write(frame, tmp_path / "bars.parquet")


def _fake(models: list[str], name: str = "llm") -> dict[str, object]:
    return {
        "name": name,
        "kind": "tests.backtest.test_engine:FakeLLM",
        "params": {"models": models},
    }


def test_a_window_before_a_training_cutoff_is_flagged_and_split(tmp_path: Path) -> None:
    from backtest import metrics

    path = _dated_bars(tmp_path, "2023-09-01", "2024-03-29")
    models = ["openai/gpt-4-turbo", "anthropic/claude-3.5-sonnet", "acme/unpriced-model"]
    config = _config(path, tmp_path / "runs", strategies=[_fake(models)], benchmark=None)
    result = run(config)
    window = (result.summary["start"], result.summary["end"])
    leakage = result.manifest["leakage"]
    assert leakage == [
        {
            "strategy": "llm",
            "model": "anthropic/claude-3.5-sonnet",
            "training_cutoff": "2024-04",
            "window_start": window[0],
            "window_end": window[1],
        },
        {
            "strategy": "llm",
            "model": "openai/gpt-4-turbo",
            "training_cutoff": "2023-12",
            "window_start": window[0],
            "window_end": window[1],
        },
    ]
    warnings = result.manifest["warnings"]
    assert any("before the training cutoff" in w and "gpt-4-turbo (2023-12)" in w for w in warnings)
    assert any("acme/unpriced-model" in w and "cannot be ruled out" in w for w in warnings)
    split = {e["model"]: e for e in result.summary["cutoff_split"]["llm"]}
    equity = result.equity["llm"]
    ppy = result.summary["periods_per_year"]
    # The oracle: summarize on each side of 2024-01-01, straight from the ledger.
    cut = equity.index < pd.Timestamp("2024-01-01", tz="UTC")
    before = metrics.summarize(equity[cut].to_numpy(), periods_per_year=ppy)
    after = metrics.summarize(equity[~cut].to_numpy(), periods_per_year=ppy)
    gpt = split["openai/gpt-4-turbo"]
    assert gpt["cutoff"] == "2023-12"
    for key in ("total_return", "sharpe", "max_drawdown", "annual_volatility", "cagr"):
        assert gpt["before"][key] == pytest.approx(before[key], rel=1e-12)
        assert gpt["after"][key] == pytest.approx(after[key], rel=1e-12)
    claude = split["anthropic/claude-3.5-sonnet"]
    assert claude["after"] is None  # the whole window is before its cutoff
    whole = result.summary["strategies"]["llm"]
    assert claude["before"]["total_return"] == pytest.approx(whole["total_return"], rel=1e-12)
    on_disk = json.loads((result.run_dir / "manifest.json").read_text())
    assert on_disk["leakage"] == leakage
    assert (
        json.loads((result.run_dir / "summary.json").read_text())["cutoff_split"]
        == (result.summary["cutoff_split"])
    )


def test_a_window_after_every_cutoff_raises_nothing(tmp_path: Path) -> None:
    path = _dated_bars(tmp_path, "2024-01-02", "2024-04-30")
    config = _config(
        path,
        tmp_path / "runs",
        strategies=[_fake(["openai/gpt-4-turbo"]), {"name": "bh", "kind": "buy_and_hold"}],
    )
    result = run(config, write=False)
    assert result.manifest["leakage"] == [] and result.summary["cutoff_split"] == {}
    assert not any("cutoff" in w for w in result.manifest["warnings"])


def test_the_cost_estimate_comes_before_any_decision(tmp_path: Path) -> None:
    path = _dated_bars(tmp_path, "2024-01-02", "2024-04-30")
    config = _config(
        path,
        tmp_path / "runs",
        strategies=[
            _fake([], "a"),
            {**_fake([], "b"), "params": {"usd_per_bar": 0.5, "max_run_usd": 10.0}},
            {**_fake([], "c"), "params": {"usd_per_bar": 0.01, "max_run_usd": 10.0}},
            {"name": "bh", "kind": "buy_and_hold"},
        ],
    )
    seen: list[dict[str, object]] = []
    EVENTS.clear()
    result = run(config, write=False, on_estimate=lambda e: (seen.append(e), EVENTS.append("cb")))
    bars = result.summary["bars"]
    first = len(pd.bdate_range("2024-01-02", "2024-04-30")) - bars
    assert EVENTS[:4] == [f"estimate {first} {first + bars}"] * 3 + ["cb"]
    assert EVENTS.index("act") > EVENTS.index("cb")
    expected = {
        "calls": 12 * bars,
        "usd": pytest.approx(0.52 * bars),
        "per_strategy": {
            "a": {"calls": 4 * bars, "usd": pytest.approx(0.01 * bars)},
            "b": {"calls": 4 * bars, "usd": pytest.approx(0.5 * bars)},
            "c": {"calls": 4 * bars, "usd": pytest.approx(0.01 * bars)},
        },
    }
    assert seen == [expected] and result.manifest["llm_cost_estimate"] == expected
    # b's estimate passes its hard cap ($0.5 x bars > $10); c's does not; a has none.
    capped = [w for w in result.manifest["warnings"] if "above its hard cap" in w]
    assert len(capped) == 1 and capped[0].startswith("strategy 'b'")


def test_runs_without_llm_strategies_estimate_nothing(tmp_path: Path) -> None:
    path = _dated_bars(tmp_path, "2024-01-02", "2024-04-30")
    seen: list[object] = []
    result = run(_config(path, tmp_path / "runs"), write=False, on_estimate=seen.append)
    assert seen == []
    assert result.manifest["llm_cost_estimate"] == {"calls": 0, "usd": 0.0, "per_strategy": {}}
    assert result.manifest["leakage"] == [] and result.summary["cutoff_split"] == {}


# ------------------------------------------------------------------------------ run ids


def test_run_id_changes_with_the_routing_file_and_prompts(
    samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backtest.engine import run_id_for, run_inputs
    from strategies.llm import prompts

    repo = Path(__file__).resolve().parents[2]
    routing = tmp_path / "routing.toml"
    routing.write_text((repo / "experiments/routing/seed_stack.toml").read_text())
    llm = {"mode": "offline", "routing": str(routing), "every_n_bars": 50}
    config = _sp500_config(
        samples_dir,
        tmp_path / "out",
        strategies=[
            {"name": "llm", "kind": "llm", "params": llm},
            {"name": "hybrid", "kind": "hybrid", "params": {"llm": llm}},
        ],
    )
    inputs = run_inputs(config)
    assert set(inputs) == {
        *(
            f"strategies.{name}.{what}"
            for name in ("llm", "hybrid.llm")
            for what in ("routing", "prompts", "prices", "source", "roles")
        ),
        "code.backtest",
        "code.strategies",
    }
    assert inputs["strategies.llm.source"] == "offline"
    before = run_id_for(config)
    assert run_id_for(config) == before  # nothing changed, same id
    # Same path, same config: only the routing file's contents change (a comment).
    routing.write_text(routing.read_text() + "\n# retuned\n")
    after = run_id_for(config)
    assert (
        after != before
        and run_inputs(config)["strategies.llm.routing"] != inputs["strategies.llm.routing"]
    )
    # A prompt edit (simulated: the templates' hash) changes the id as well.
    monkeypatch.setattr(prompts, "prompts_sha256", lambda: "0" * 64)
    import strategies.llm.graph as graph

    monkeypatch.setattr(graph, "prompts_sha256", lambda: "0" * 64)
    assert run_id_for(config) not in (before, after)


def test_files_named_by_other_strategies_enter_the_run_id(
    samples_dir: Path, tmp_path: Path
) -> None:
    from backtest.engine import run_id_for, run_inputs

    notes = tmp_path / "notes.txt"
    notes.write_text("v1")
    config = _sp500_config(
        samples_dir,
        tmp_path / "out",
        strategies=[
            {
                "name": "mine",
                "kind": "tests.backtest.test_engine:FileReadingPolicy",
                "params": {"files": {"notes": str(notes)}, "label": "not a file"},
            }
        ],
        risk_free_rate=0.0,
    )
    assert list(run_inputs(config)) == [
        "code.backtest",
        "code.strategies",
        "code.tests.backtest.test_engine",  # the user's strategy module
        "strategies.mine.params.files.notes",
    ]
    before = run_id_for(config)
    notes.write_text("v2")
    assert run_id_for(config) != before
    result = run(config)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["inputs"] == run_inputs(config)
    # Strategies that read no file: the id of the config, the data and the code.
    plain = _sp500_config(samples_dir, tmp_path / "out")
    assert list(run_inputs(plain)) == ["code.backtest", "code.strategies"]


class FileReadingPolicy:
    """A user's policy that reads a file named in its parameters (it holds flat)."""

    def __init__(self, name: str, files: dict[str, str], label: str = "") -> None:
        self.name = name
        self.files = files

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        return None

    def act(self, obs: Observation) -> Decision:
        return Decision(target_position=0.0, confidence=1.0, action="HOLD")
