"""Paired comparison: the block bootstrap on series with a known difference, and on runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backtest import RunConfig, run
from backtest.cli import main
from backtest.compare import (
    Pair,
    break_even_capital,
    compare,
    compare_run_dir,
    mean_return_diff,
    optimal_block_size,
    paired_bootstrap,
    resolve_pairs,
    sharpe_diff,
    stationary_bootstrap_indices,
)
from backtest.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
D_KEYS = {"estimate", "ci_low", "ci_high", "p_value", "seed_mean", "seed_std"}


def _ar1(rng: np.random.Generator, n: int, phi: float = 0.5, scale: float = 0.01) -> np.ndarray:
    noise = rng.normal(0.0, scale, n)
    x = np.empty(n)
    x[0] = noise[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    return x


def test_stationary_indices_have_geometric_blocks_of_the_mean_length() -> None:
    rng = np.random.default_rng(1)
    idx = stationary_bootstrap_indices(500, 200, 8.0, rng)
    assert idx.shape == (200, 500) and idx.min() >= 0 and idx.max() < 500
    continues = (idx[:, 1:] == (idx[:, :-1] + 1) % 500).mean()
    # A block continues with probability 1 - 1/8 (plus the chance a new start lands there).
    assert continues == pytest.approx(1 - 1 / 8, abs=0.01)
    iid = stationary_bootstrap_indices(500, 200, 1.0, rng)
    assert (iid[:, 1:] == (iid[:, :-1] + 1) % 500).mean() < 0.01
    with pytest.raises(ConfigError, match="block_size"):
        stationary_bootstrap_indices(10, 1, 0.5, rng)


def test_detects_a_large_difference() -> None:
    rng = np.random.default_rng(2)
    a = _ar1(rng, 750)
    b = a + 0.002 + rng.normal(0.0, 0.003, 750)
    for statistic in (mean_return_diff, sharpe_diff(252)):
        d = paired_bootstrap(a, b, statistic, rng=rng, reps=1000, block_size=5)
        assert d["p_value"] < 0.01
        assert 0 < d["ci_low"] < d["estimate"] < d["ci_high"]
    d = paired_bootstrap(a, b, mean_return_diff, rng=rng, reps=1000, block_size=5)
    assert d["estimate"] == pytest.approx(np.mean(b - a))


def test_identical_series_show_no_difference() -> None:
    rng = np.random.default_rng(3)
    a = _ar1(rng, 400)
    d = paired_bootstrap(a, a.copy(), sharpe_diff(252), rng=rng, reps=500, block_size=4)
    assert d["estimate"] == 0.0 and d["p_value"] > 0.05
    assert d["ci_low"] == d["ci_high"] == 0.0


def test_interval_covers_the_truth_at_about_the_nominal_rate() -> None:
    # Two AR(1) series whose means differ by exactly 0.0005 per bar.
    rng = np.random.default_rng(4)
    truth, covered, rejected, repeats = 0.0005, 0, 0, 200
    for _ in range(repeats):
        a = _ar1(rng, 300)
        b = _ar1(rng, 300) + truth
        d = paired_bootstrap(a, b, mean_return_diff, rng=rng, reps=400, block_size=6)
        covered += d["ci_low"] <= truth <= d["ci_high"]
        same = paired_bootstrap(a, a + _ar1(rng, 300), mean_return_diff, rng=rng, reps=400)
        rejected += same["p_value"] < 0.05
    # Percentile intervals of a dependent series run a little narrow; 95% nominal.
    assert 0.86 <= covered / repeats <= 0.99
    assert rejected / repeats <= 0.12  # size of the test under the null


def test_standard_error_matches_arch_stationary_bootstrap() -> None:
    from arch.bootstrap import StationaryBootstrap

    rng = np.random.default_rng(5)
    a, b = _ar1(rng, 600), _ar1(rng, 600)
    ours = []
    for _ in range(3):
        idx = stationary_bootstrap_indices(600, 2000, 10.0, rng)
        ours.append(np.std(b[idx].mean(axis=1) - a[idx].mean(axis=1)))
    bs = StationaryBootstrap(10, a, b, seed=6)
    theirs = np.std(bs.apply(lambda x, y: np.array([y.mean() - x.mean()]), 2000))
    assert np.mean(ours) == pytest.approx(theirs, rel=0.1)


def test_several_pairs_average_and_spread() -> None:
    rng = np.random.default_rng(7)
    a = np.stack([_ar1(rng, 300) for _ in range(3)])
    b = a + np.array([[0.001], [0.002], [0.003]])
    d = paired_bootstrap(a, b, mean_return_diff, rng=rng, reps=300, block_size=3)
    assert d["estimate"] == pytest.approx(0.002) and d["seed_mean"] == d["estimate"]
    assert d["seed_std"] == pytest.approx(0.001)
    assert d["ci_low"] == pytest.approx(0.002) and d["ci_high"] == pytest.approx(0.002)


def test_block_size_is_one_without_variation_and_longer_with_dependence() -> None:
    assert optimal_block_size(np.zeros(100)) == 1
    rng = np.random.default_rng(8)
    assert optimal_block_size(_ar1(rng, 2000, phi=0.9)) > optimal_block_size(rng.normal(size=2000))


@given(
    excess=st.floats(1e-6, 10.0),
    cost=st.floats(1e-3, 1e6),
)
def test_break_even_capital_makes_excess_pnl_equal_cost(excess: float, cost: float) -> None:
    capital = break_even_capital(excess, cost)
    assert capital is not None
    assert excess * capital == pytest.approx(cost)
    assert break_even_capital(-excess, cost) is None
    assert break_even_capital(0.0, cost) is None
    # Earning less before cost is "never", even when the LLM costs nothing extra.
    assert break_even_capital(-excess, 0.0) is None
    assert break_even_capital(excess, 0.0) == 0.0


def test_pairs_by_seed_and_unknown_names() -> None:
    names = ["bh", "drl@0", "drl@1", "drl@2", "hybrid@0", "hybrid@1", "llm"]
    assert resolve_pairs("drl", "hybrid", names) == [
        Pair(0, "drl@0", "hybrid@0"),
        Pair(1, "drl@1", "hybrid@1"),
    ]
    assert resolve_pairs("bh", "drl", names) == [
        Pair(0, "bh", "drl@0"),
        Pair(1, "bh", "drl@1"),
        Pair(2, "bh", "drl@2"),
    ]
    assert resolve_pairs("drl@1", "llm", names) == [Pair(1, "drl@1", "llm")]
    with pytest.raises(ConfigError, match="Did you mean 'hybrid'"):
        resolve_pairs("drl", "hybird", names)
    with pytest.raises(ConfigError, match="both"):
        resolve_pairs("drl", "drl", names)


def _ledger(columns: dict[str, tuple[np.ndarray, np.ndarray]]) -> pa.Table:
    rows: dict[str, list[object]] = {"strategy": [], "equity_usd": [], "llm_cost_usd": []}
    for name, (equity, cost) in columns.items():
        rows["strategy"] += [name] * len(equity)
        rows["equity_usd"] += list(equity)
        rows["llm_cost_usd"] += list(cost)
    return pa.table(rows)


def test_gross_and_net_of_llm_cost_and_break_even() -> None:
    rng = np.random.default_rng(9)
    n, capital = 500, 100_000.0
    base = capital * np.cumprod(1 + _ar1(rng, n))
    cost = np.full(n, 2.0)  # $2 of LLM calls every bar
    same_gross = base - np.cumsum(cost)
    ledger = _ledger({"drl": (base, np.zeros(n)), "hybrid": (same_gross, cost)})
    out = compare(
        ledger, "drl", "hybrid", periods_per_year=252, initial_capital_usd=capital, seed=0, reps=300
    )
    assert out["gross"]["mean_return_diff"]["estimate"] == pytest.approx(0.0, abs=1e-12)
    assert out["net"]["mean_return_diff"]["estimate"] < 0
    assert out["net"]["mean_return_diff"]["p_value"] < 0.01  # a steady drain is significant
    assert out["llm_cost_usd"] == pytest.approx(2.0 * n)
    assert out["break_even_capital_usd"] is None  # no excess ever pays for it
    # Give the hybrid an extra gross $5,000: it pays $1,000 of LLMs at a $20,000 account.
    richer = same_gross + np.linspace(0, 5_000.0, n)
    ledger = _ledger({"drl": (base, np.zeros(n)), "hybrid": (richer, cost)})
    out = compare(
        ledger, "drl", "hybrid", periods_per_year=252, initial_capital_usd=capital, seed=0, reps=300
    )
    assert out["break_even_capital_usd"] == pytest.approx(capital * 1_000.0 / 5_000.0)


def _tiny_run_config(samples_dir: Path, tmp_path: Path) -> RunConfig:
    drl = {
        "timesteps": 128,
        "episode_bars": 64,
        "eval_every": 64,
        "hyperparameters": {"n_steps": 64, "batch_size": 32},
        "cache_dir": str(tmp_path / "models"),
    }
    llm = {"mode": "offline", "routing": str(REPO / "experiments/routing/seed_stack.toml")}
    return RunConfig.model_validate(
        {
            "data": {"path": str(samples_dir / "SP500.parquet"), "end": "2016-06-30"},
            "splits": {"train_end": "2015-06-01", "validation_end": "2016-01-01"},
            "strategies": [
                {"name": "drl", "kind": "drl", "seeds": 2, "params": drl},
                {
                    "name": "hybrid",
                    "kind": "hybrid",
                    "seeds": 2,
                    "params": {"drl": drl, "llm": llm},
                },
            ],
            "output_dir": str(tmp_path / "runs"),
            "seed": 11,
        }
    )


def test_run_writes_seed_groups_and_the_comparison_the_cli_recomputes(
    samples_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(_tiny_run_config(samples_dir, tmp_path))
    # drl@k and hybrid@k share a seed and so one trained model; the two k differ.
    assert len(list((tmp_path / "models").iterdir())) == 2
    seeds = result.manifest["strategy_seeds"]
    assert seeds["drl@0"] == seeds["hybrid@0"] != seeds["drl@1"] == seeds["hybrid@1"]
    summary = json.loads((result.run_dir / "summary.json").read_text())
    members = {"drl@0", "drl@1", "hybrid@0", "hybrid@1", "buy_and_hold"}
    controls = {f"hybrid~{c}@{k}" for c in ("llm0", "random_llm") for k in (0, 1)}
    assert set(summary["strategies"]) == members | controls
    group = summary["seed_groups"]["drl"]
    assert group["members"] == ["drl@0", "drl@1"]
    sharpes = [summary["strategies"][m]["sharpe"] for m in group["members"]]
    assert group["mean"]["sharpe"] == pytest.approx(np.mean(sharpes))
    assert group["std"]["sharpe"] == pytest.approx(np.std(sharpes, ddof=1))
    [comparison] = summary["comparisons"]
    assert set(comparison) == {
        "a", "b", "n_seeds", "reps", "block_size", "confidence", "gross", "net",
        "break_even_capital_usd", "llm_cost_usd", "per_seed",
    }  # fmt: skip
    assert (comparison["a"], comparison["b"], comparison["n_seeds"]) == ("drl", "hybrid", 2)
    assert comparison["confidence"] == 0.95
    for basis in ("gross", "net"):
        for key in ("sharpe_diff", "mean_return_diff"):
            assert set(comparison[basis][key]) == D_KEYS
    assert [p["seed"] for p in comparison["per_seed"]] == [0, 1]
    assert comparison["per_seed"][1] == {
        "seed": 1,
        "a": "drl@1",
        "b": "hybrid@1",
        "gross_sharpe_diff": pytest.approx(comparison["per_seed"][1]["gross_sharpe_diff"]),
        "net_sharpe_diff": pytest.approx(comparison["per_seed"][1]["net_sharpe_diff"]),
    }
    recomputed = json.loads(json.dumps(compare_run_dir(result.run_dir, "drl", "hybrid")))
    assert recomputed == comparison
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["compare", str(result.run_dir), "--a", "drl", "--b", "hybrid", "--reps", "200"])
    assert info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "Sharpe net" in out and "return bp gross" in out and "Break-even capital" in out
    with pytest.raises(SystemExit) as info:
        main(["compare", str(result.run_dir), "--a", "drl", "--b", "hybrd"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "no strategy or seed group named 'hybrd'" in err and "Did you mean 'hybrid'" in err
    with pytest.raises(SystemExit) as info:
        main(["compare", str(tmp_path), "--a", "drl", "--b", "hybrid"])
    assert info.value.code == 1
    assert "not a run directory" in capsys.readouterr().err


def test_a_fixed_seed_with_several_seeds_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"params\.drl\.seed fixes one training seed"):
        RunConfig.model_validate(
            {
                "data": {"path": "x"},
                "strategies": [{"name": "h", "kind": "hybrid", "params": {"drl": {"seed": 1}}}],
            }
        )
    config = RunConfig.model_validate(
        {
            "data": {"path": "x"},
            "strategies": [{"name": "d", "kind": "drl"}, {"name": "s", "kind": "sma"}],
        }
    )
    assert [s.seeds for s in config.strategies] == [5, 1]
