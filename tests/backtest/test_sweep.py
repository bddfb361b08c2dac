"""Sweeps: grid expansion, selection discipline and its statistics, skipping complete runs,
failures recorded, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest.errors import ConfigError
from backtest.metrics import returns_from_equity
from backtest.selection import (
    deflated_sharpe_ratio,
    probability_of_backtest_overfitting,
    spa_pvalue,
)
from backtest.sweep import expand_grid, load_sweep, run_sweep, select_top_k

BACKTEST = str(Path(sys.executable).with_name("backtest"))


def _files(tmp_path: Path, samples_dir: Path, grid: str, head: str = "") -> Path:
    (tmp_path / "base.toml").write_text(f"""
name = "s"
[data]
path = "{samples_dir / "SP500.parquet"}"
[splits]
train_end = "2013-01-01"
validation_end = "2016-01-01"
[[strategies]]
name = "sma"
kind = "sma"
params = {{ fast = 10, slow = 30 }}
""")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'base = "base.toml"\noutput_dir = "out"\n{head}\n[grid]\n{grid}\n')
    return sweep


def test_grid_points_in_sorted_key_order(tmp_path: Path, samples_dir: Path) -> None:
    spec = load_sweep(_files(tmp_path, samples_dir, '"env.fee_bps" = [1.0, 2.0]\nseed = [0, 1, 2]'))
    points = expand_grid(spec)
    assert [p.values for p in points][:3] == [
        {"env.fee_bps": 1.0, "seed": 0},
        {"env.fee_bps": 1.0, "seed": 1},
        {"env.fee_bps": 1.0, "seed": 2},
    ]
    assert len(points) == 6 and points[5].config.env.fee_bps == 2.0
    assert all(p.config.output_dir == str(tmp_path / "out") for p in points)
    # Every point is scored on the validation split, whatever the base experiment says.
    assert {(p.split, p.config.splits.evaluate) for p in points} == {("validation", "validation")}
    bad = _files(tmp_path, samples_dir, '"env.fee_bp" = [1.0]')
    with pytest.raises(ConfigError, match=r"(?s)grid point 0 .*Did you mean 'fee_bps'"):
        expand_grid(load_sweep(bad))
    (tmp_path / "empty.toml").write_text('base = "base.toml"\n')
    with pytest.raises(ConfigError, match="grid"):
        load_sweep(tmp_path / "empty.toml")


def test_sweep_file_mistakes_name_the_key(tmp_path: Path, samples_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"validation split.*remove this key"):
        load_sweep(_files(tmp_path, samples_dir, '"splits.evaluate" = ["test"]'))
    with pytest.raises(ConfigError, match=r"'metrc' \(did you mean 'metric'\?\)"):
        load_sweep(_files(tmp_path, samples_dir, "seed = [0]", head='metrc = "sharpe"'))
    with pytest.raises(ConfigError, match=r"Did you mean 'sortino'"):
        load_sweep(_files(tmp_path, samples_dir, "seed = [0]", head='metric = "sortno"'))
    with pytest.raises(ConfigError, match=r"top_k: Input should be greater than or equal to 1"):
        load_sweep(_files(tmp_path, samples_dir, "seed = [0]", head="top_k = 0"))
    bad_baseline = _files(tmp_path, samples_dir, "seed = [0]", head='baseline = "drl_pp"')
    with pytest.raises(ConfigError, match=r"baseline = 'drl_pp' is not a strategy"):
        expand_grid(load_sweep(bad_baseline))
    bad_strategy = _files(tmp_path, samples_dir, "seed = [0]", head='strategy = "smaa"')
    with pytest.raises(ConfigError, match=r"Did you mean 'sma'"):
        expand_grid(load_sweep(bad_strategy))
    sweep = _files(tmp_path, samples_dir, "seed = [0]")
    base = (tmp_path / "base.toml").read_text()
    without_splits = base.replace(
        '[splits]\ntrain_end = "2013-01-01"\nvalidation_end = "2016-01-01"\n', ""
    )
    assert without_splits != base
    (tmp_path / "base.toml").write_text(without_splits)
    with pytest.raises(ConfigError, match=r"no validation split.*train_end and validation_end"):
        expand_grid(load_sweep(sweep))


def test_top_k_follows_the_metric_direction() -> None:
    scores = {0: 0.5, 1: None, 2: 1.5, 3: float("nan"), 4: 1.5, 5: -2.0}
    assert select_top_k(scores, 2, "sharpe") == [2, 4]  # ties go to the lower index
    assert select_top_k({0: -0.3, 1: -0.1}, 1, "max_drawdown") == [1]  # the smaller fall
    assert select_top_k(scores, 3, "annual_volatility") == [5, 0, 2]
    assert select_top_k(scores, 10, "sharpe") == [2, 4, 0, 5]  # no score, never selected


def test_complete_runs_are_skipped_and_failures_recorded(tmp_path: Path, samples_dir: Path) -> None:
    sweep = _files(
        tmp_path,
        samples_dir,
        '"strategies[0].params.fast" = [5, 10, 40]\n"env.fee_bps" = [1.0, 3.0]',
    )
    statuses: list[tuple[str, str]] = []
    table = run_sweep(
        load_sweep(sweep),
        workers=2,
        on_done=lambda point, status: statuses.append((point.split, status)),
    )
    # fast = 40 > slow = 30 is a config error inside the run: recorded, the others go on.
    assert statuses.count(("validation", "failed")) == 2
    assert statuses.count(("validation", "done")) == 4
    assert statuses[-1] == ("test", "done")  # then the selected one, on test
    failed = table[table.status == "failed"]
    assert set(failed["grid.strategies[0].params.fast"]) == {"40"}
    assert failed["error"].str.contains("strategies\\[0\\].params").all()
    done = table[table.status == "done"]
    assert set(done["strategy"]) == {"sma", "buy_and_hold"} and done["sharpe"].notna().all()
    assert pd.read_parquet(tmp_path / "out" / "sweep_runs.parquet").equals(table)
    selection = json.loads((tmp_path / "out" / "selection.json").read_text())
    assert selection["n_configs_tried"] == 4 and selection["n_configs_failed"] == 2
    statuses.clear()
    again = run_sweep(
        load_sweep(sweep),
        workers=1,
        on_done=lambda point, status: statuses.append((point.split, status)),
    )
    assert statuses.count(("validation", "skipped")) == 4
    assert statuses.count(("validation", "failed")) == 2
    assert statuses.count(("test", "skipped")) == 1
    pd.testing.assert_frame_equal(again.drop(columns="status"), table.drop(columns="status"))


def _fee_sweep(tmp_path: Path, samples_dir: Path, head: str = "top_k = 2") -> Path:
    # SMA(10/30) trades ~30 times over 2013-2015: the higher the fee, the lower its Sharpe
    # ratio, so fee 0 is clearly the best configuration and 2 bps the second best.
    return _files(tmp_path, samples_dir, '"env.fee_bps" = [50.0, 0.0, 200.0, 2.0]', head=head)


def test_selection_runs_only_the_best_on_test(tmp_path: Path, samples_dir: Path) -> None:
    table = run_sweep(load_sweep(_fee_sweep(tmp_path, samples_dir)), workers=2)
    out = tmp_path / "out"
    selection = json.loads((out / "selection.json").read_text())
    assert selection["metric"] == "sharpe" and selection["top_k"] == 2
    assert (selection["selection_split"], selection["test_split"]) == ("validation", "test")
    assert selection["n_configs_tried"] == 4 and (table["n_configs_tried"] == 4).all()
    assert [s["params"] for s in selection["selected"]] == [
        {"env.fee_bps": 0.0},
        {"env.fee_bps": 2.0},
    ]
    best = selection["selected"][0]
    assert best["strategy"] == "sma" and best["point"] == 1
    assert best["validation"]["sharpe"] > selection["selected"][1]["validation"]["sharpe"]
    assert set(best["test"]) >= {"sharpe", "total_return", "max_drawdown"}

    # On disk: four validation runs, and a test run for the two selected points only.
    evaluated = {}
    for manifest in out.glob("*/manifest.json"):
        data = json.loads(manifest.read_text())
        split = data["config"]["splits"]["evaluate"]
        evaluated.setdefault(split, []).append(data["config"]["env"]["fee_bps"])
        assert data["data"]["evaluated"][0][:4] == ("2013" if split == "validation" else "2016")
    assert sorted(evaluated["validation"]) == [0.0, 2.0, 50.0, 200.0]
    assert sorted(evaluated["test"]) == [0.0, 2.0]
    assert set(evaluated) == {"validation", "test"}
    rows = table[table.strategy == "sma"]
    assert sorted(rows.groupby("split").size().items()) == [("test", 2), ("validation", 4)]
    assert rows[rows.split == "test"]["selected"].all()
    assert rows[rows.split == "validation"]["selected"].sum() == 2
    test_row = rows[(rows.split == "test") & (rows["grid.env.fee_bps"] == "0.0")].iloc[0]
    assert test_row.run_id == best["test_run_id"] and test_row.sharpe == best["test"]["sharpe"]

    # The statistics are those of backtest.selection on the validation ledgers.
    validation = rows[rows.split == "validation"].sort_values("point")
    returns = {}
    for point, run_id in zip(validation.point, validation.run_id, strict=True):
        ledger = pd.read_parquet(out / run_id / "ledger.parquet")
        returns[point] = returns_from_equity(ledger[ledger.strategy == "sma"].equity_usd)
    matrix = np.column_stack([returns[p] for p in sorted(returns)])
    sharpes = matrix.mean(axis=0) / matrix.std(axis=0, ddof=1)
    dsr = selection["deflated_sharpe"]
    assert dsr["n_trials"] == 4
    assert dsr["sharpe"] == pytest.approx(sharpes[1], rel=1e-12)
    assert dsr["dsr"] == pytest.approx(deflated_sharpe_ratio(matrix[:, 1], sharpes), rel=1e-12)
    assert selection["pbo"] == {
        "pbo": pytest.approx(probability_of_backtest_overfitting(matrix, 16), rel=1e-12),
        "n_splits": 16,
        "ties": "half-counted",
    }
    best_ledger = pd.read_parquet(out / best["run_id"] / "ledger.parquet")
    bench = returns_from_equity(best_ledger[best_ledger.strategy == "buy_and_hold"].equity_usd)
    spa = selection["spa"]
    assert spa["benchmark"] == "buy_and_hold" and spa["reps"] == 1000
    assert spa["p_value"] == pytest.approx(spa_pvalue(bench, matrix, reps=1000, seed=0))
    assert 0.0 <= spa["p_value"] <= 1.0 and 0.0 <= selection["pbo"]["pbo"] <= 1.0


def test_a_killed_sweep_resumes_without_redoing_runs(tmp_path: Path, samples_dir: Path) -> None:
    sweep = _files(tmp_path, samples_dir, 'seed = [0, 1, 2, 3, 4, 5]\n"env.fee_bps" = [1.0]')
    proc = subprocess.Popen(
        [BACKTEST, "sweep", str(sweep), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out = tmp_path / "out"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(list(out.glob("*/summary.json"))) >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    assert 2 <= len(finished) < 6
    result = subprocess.run(
        [BACKTEST, "sweep", str(sweep), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} already complete" in result.stdout.replace("\n", " ")
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    # Six seeds of one configuration on validation; it is selected, so its six on test.
    assert len(after) == 12
    assert all(after[k] == v for k, v in finished.items())  # finished runs were not redone
    # The killed run's half-written staging folder was cleared when that run was redone.
    assert not list(out.glob(".*.tmp-*"))


def test_shipped_sweeps_expand() -> None:
    repo = Path(__file__).resolve().parents[2]
    for path in sorted((repo / "experiments" / "sweeps").glob("*.toml")):
        points = expand_grid(load_sweep(path))
        assert points and all(p.config.output_dir.startswith(str(repo / "runs")) for p in points)


def _llm_answer(body: dict[str, object]) -> str:
    # A deterministic analyst: every role answers the same way to the same prompt.
    system = str(body["messages"][0]["content"])  # type: ignore[index]
    answers = {
        "technical analyst": '{"trend": "up", "support": 1, "resistance": 2, "patterns": [], '
        '"signal": 0.6, "confidence": 0.8, "reasoning": "uptrend"}',
        "expert market analyst": '{"regime": "bull", "drivers": [], "risks": [], '
        '"signal": 0.4, "confidence": 0.7, "reasoning": "bull"}',
        "order-flow": '{"order_flow_imbalance": 0.1, "volume_spike": false, "signal": 0.1, '
        '"confidence": 0.5, "reasoning": "flow"}',
        "orchestrator": '{"action": "BUY", "size": 0.5, "signal": 0.5, "confidence": 0.75, '
        '"risk_level": "low", "reasoning": "agree"}',
    }
    return next((a for marker, a in answers.items() if marker in system), "{}")


def test_ray_backend_gives_the_local_backends_summary(tmp_path: Path, samples_dir: Path) -> None:
    import ray

    from backtest.llm.cassette import Cassette
    from backtest.llm.testing import LLMTestServer

    repo = Path(__file__).resolve().parents[2]
    routing = tmp_path / "routing.toml"  # the seed's routing, sent to the loopback server
    routing.write_text(
        (repo / "experiments/routing/seed_stack.toml")
        .read_text()
        .replace('profile = "openrouter"', 'profile = "openai_compatible"')
    )
    cassette = tmp_path / "cassette"
    models = tmp_path / "models"  # the DRL model cache every worker shares
    shard_pids: set[str] = set()

    def watch(point: object, status: str) -> None:
        shard_pids.update(p.name.split("-")[-2] for p in cassette.glob("shard-*.tsv"))

    with LLMTestServer(models={"*": _llm_answer}, prices={"*": (0.27, 1.10)}) as server:
        llm = (
            f'{{ mode = "live", routing = "{routing}", cassette = "{cassette}", '
            f'base_url = "{server.base_url}", every_n_bars = 40 }}'
        )
        drl = (
            f"{{ timesteps = 256, episode_bars = 64, eval_every = 128, seed = 0, "
            f'cache_dir = "{models}", hyperparameters = {{ n_steps = 64, batch_size = 32 }} }}'
        )
        (tmp_path / "base.toml").write_text(f"""
[data]
path = "{samples_dir / "SP500.parquet"}"
[splits]
train_end = "2013-01-01"
validation_end = "2016-01-01"
[[strategies]]
name = "sma"
kind = "sma"
params = {{ fast = 10, slow = 30 }}
[[strategies]]
name = "llm"
kind = "llm"
params = {llm}
[[strategies]]
name = "drl"
kind = "drl"
seeds = 1
params = {drl}
""")
        grid = '[grid]\n"env.fee_bps" = [1.0, 20.0]\nseed = [0, 1]\n'
        for name in ("ray", "local"):
            (tmp_path / f"{name}.toml").write_text(
                f'base = "base.toml"\noutput_dir = "out-{name}"\nstrategy = "llm"\n{grid}'
            )
        try:
            # Ray first, recording every answer through two workers; then the local pool
            # replays what Ray recorded (and the driver merged).
            by_ray = run_sweep(
                load_sweep(tmp_path / "ray.toml"), workers=2, backend="ray", on_done=watch
            )
        finally:
            ray.shutdown()
        assert not ray.is_initialized()
        assert len(shard_pids) >= 2 and str(os.getpid()) not in shard_pids  # one per worker
        assert [p.name for p in cassette.glob("shard-*.tsv")] == ["shard-merged.tsv"]
        recorded = Cassette(cassette, "none")
        assert recorded.verify() == [] and len(recorded) > 0
        # One model per distinct training (the fee is part of the training env; the test
        # run trains on more bars), however many workers and points needed it.
        trained = {p.name: p.stat().st_mtime_ns for p in models.iterdir()}
        assert len(trained) == 3 and not list(models.glob("*.tmp-*"))
        requests_after_ray = len(server.requests)
        by_pool = run_sweep(load_sweep(tmp_path / "local.toml"), workers=2, backend="local")
        assert len(server.requests) == requests_after_ray  # everything replayed
        assert {p.name: p.stat().st_mtime_ns for p in models.iterdir()} == trained
    assert (by_ray.status == "done").all() and by_ray.llm_calls.max() > 0
    pd.testing.assert_frame_equal(by_ray, by_pool)
    assert json.loads((tmp_path / "out-ray/selection.json").read_text()) == json.loads(
        (tmp_path / "out-local/selection.json").read_text()
    )
    for run_id in by_ray.run_id.unique():
        ledger = f"{run_id}/ledger.parquet"
        assert (tmp_path / "out-ray" / ledger).read_bytes() == (
            tmp_path / "out-local" / ledger
        ).read_bytes()


def test_grid_values_that_resolve_to_one_config_run_once(tmp_path: Path, samples_dir: Path) -> None:
    # 1 and 1.0 are one fee: one run directory, shared by both points, not raced for.
    sweep = _files(tmp_path, samples_dir, '"env.fee_bps" = [1, 1.0, 3.0]')
    seen: list[tuple[int, str, str]] = []
    table = run_sweep(
        load_sweep(sweep), workers=2, on_done=lambda p, s: seen.append((p.index, p.split, s))
    )
    validation = table[table["split"] == "validation"]
    ids = dict(zip(validation["point"], validation["run_id"], strict=False))
    assert ids[0] == ids[1] != ids[2]
    from backtest.sweep import sweep_warnings

    (warning,) = sweep_warnings(expand_grid(load_sweep(sweep)))
    assert "'env.fee_bps': values 1 and 1.0 give the same run" in warning
    assert sorted(s for i, split, s in seen if split == "validation") == ["done", "done", "skipped"]
    assert (validation["status"] != "failed").all()
    runs = [p for p in (tmp_path / "out").iterdir() if (p / "summary.json").exists()]
    assert len(runs) == 2 + 1  # two configs on validation, the selected one on test
    pd.testing.assert_series_equal(
        validation[validation.point == 0]["sharpe"].reset_index(drop=True),
        validation[validation.point == 1]["sharpe"].reset_index(drop=True),
    )


def _seeded_sweep(tmp_path: Path, samples_dir: Path) -> Path:
    # A strategy named like the hybrid and run with three seeds: its runs hold hybrid@0,
    # hybrid@1, hybrid@2, never "hybrid" (the name the sweep used to look up, so that it
    # selected nothing and deflated over "None trials"). Two flat configurations never
    # trade: their runs are the same, one trial.
    (tmp_path / "base.toml").write_text(f"""
name = "seeded"
[data]
path = "{samples_dir / "SP500.parquet"}"
[splits]
train_end = "2013-01-01"
validation_end = "2016-01-01"
[[strategies]]
name = "hybrid"
kind = "random"
seeds = 3
""")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        'base = "base.toml"\noutput_dir = "out"\nstrategy = "hybrid"\n[grid]\n'
        '"strategies[0].params.positions" = [[0.0, 1.0], [-1.0, 0.0, 1.0], [0.0], [0.0, 0.0]]\n'
        "seed = [0, 1]\n"
    )
    return sweep


def test_seeded_strategies_are_scored_over_their_seeds(tmp_path: Path, samples_dir: Path) -> None:
    from scipy.stats import t

    spec = load_sweep(_seeded_sweep(tmp_path, samples_dir))
    points = expand_grid(spec)
    assert len(points) == 8 and [p.configuration for p in points] == [0, 1, 2, 3] * 2
    runs = run_sweep(spec, workers=1)
    out = tmp_path / "out"
    selection = json.loads((out / "selection.json").read_text())
    assert len(selection["selected"]) == 1  # the old lookup of "hybrid" selected nothing
    best = selection["selected"][0]
    assert best["strategy"] == "hybrid" and best["replications"] == {"seed": [0, 1]}

    # The objective is the mean over the six seeds (two run seeds x hybrid@0..2).
    values = []
    for run_id in best["run_ids"]:
        stats = json.loads((out / run_id / "summary.json").read_text())["strategies"]
        assert "hybrid" not in stats
        values += [stats[f"hybrid@{k}"]["sharpe"] for k in range(3)]
    seeds = best["validation_seeds"]
    assert seeds["n_seeds"] == 6 and seeds["n_nan_seeds"] == 0
    assert seeds["values"] == pytest.approx(values)
    assert seeds["mean"] == pytest.approx(np.mean(values)) == best["validation"]["sharpe"]
    assert seeds["std"] == pytest.approx(np.std(values, ddof=1))
    half = t.ppf(0.975, 5) * np.std(values, ddof=1) / np.sqrt(6)
    assert seeds["ci"] == pytest.approx([np.mean(values) - half, np.mean(values) + half])
    assert "seeds" in seeds["ci_method"]
    assert best["test_seeds"]["n_seeds"] == 6 and best["test"]["sharpe"] is not None

    # One row per configuration, in Parquet and CSV.
    summary = pd.read_parquet(out / "sweep_summary.parquet")
    csv = pd.read_csv(out / "sweep_summary.csv")
    assert list(summary["configuration"]) == list(csv["configuration"]) == [0, 1, 2, 3]
    assert "grid.seed" not in summary and (summary["seeds"] == 6).all()
    chosen = summary[summary["selected"]]
    assert list(chosen["configuration"]) == [best["configuration"]]
    assert chosen["validation_mean"].iloc[0] == pytest.approx(seeds["mean"])
    assert chosen["validation_std"].iloc[0] == pytest.approx(seeds["std"])
    assert chosen["test_mean"].iloc[0] == pytest.approx(best["test_seeds"]["mean"])
    assert summary[~summary["selected"]]["test_mean"].isna().all()
    # A series that is 0 on every bar has a Sharpe ratio of 0 (backtest.metrics), not NaN.
    flat = summary[summary["configuration"] >= 2]
    assert (flat["n_nan_seeds"] == 0).all() and (flat["validation_mean"] == 0.0).all()

    # Distinct trials: the two flat configurations are one trial, counted once.
    assert flat["distinct_trial"].nunique() == 1
    assert (summary["n_distinct_trials"] == 3).all() and selection["n_distinct_trials"] == 3
    assert selection["deflated_sharpe"]["n_trials"] == 3
    assert selection["deflated_sharpe"]["n_configurations"] == 4

    # Only the selected configuration reached the test split, with both of its run seeds.
    tested = runs[runs["split"] == "test"]
    assert set(tested["configuration"]) == {best["configuration"]}
    assert tested["point"].nunique() == 2
    assert len(list(out.glob("*/summary.json"))) == 8 + 2


def test_seed_scores_follow_the_nan_rule() -> None:
    from backtest.seed_scores import member_names, score_seeds

    score = score_seeds([1.0, None, float("nan"), 3.0])
    assert (score.n_seeds, score.n_nan_seeds, score.mean) == (4, 2, 2.0)
    assert score.std == pytest.approx(np.sqrt(2.0)) and score.ci_low < 2.0 < score.ci_high
    one = score_seeds([0.5, float("nan")])
    assert (one.mean, one.std, one.ci_low, one.n_nan_seeds) == (0.5, None, None, 1)
    assert score_seeds([None, None]).mean is None  # never selected
    assert select_top_k({0: None, 1: 0.2, 2: float("nan")}, 2, "sharpe") == [1]
    # The run's seed groups (summary.json, the run report) follow the same rule.
    from backtest.engine.score import _seed_groups

    stats = {f"h@{k}": {"sharpe": v} for k, v in enumerate([1.0, None, float("nan"), 3.0])}
    (group,) = _seed_groups({"h": list(stats)}, stats).values()
    assert (group["mean"]["sharpe"], group["std"]["sharpe"]) == (score.mean, score.std)
    assert group["n_nan_seeds"]["sharpe"] == score.n_nan_seeds == 2
    names = ["hybrid@10", "hybrid@2", "hybrid~llm0@0", "drl@0", "hybrid"]
    assert member_names(names, "hybrid") == ["hybrid@2", "hybrid@10"]
    assert member_names(["a", "b"], "b") == ["b"] and member_names(["a"], "x") == []


def test_the_shipped_routing_sweep_with_three_seeds_selects_a_configuration(
    tmp_path: Path, samples_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from backtest.sweep import sweep_warnings

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # routing paths are relative to the repository root
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    spec = load_sweep(repo / "experiments" / "sweeps" / "routing.toml")
    assert spec.grid["strategies[5].seeds"] == [3] and spec.selection.strategy == "hybrid"
    models, cassette = str(tmp_path / "models"), str(tmp_path / "no-cassette")
    tiny = {
        "timesteps": [128],
        "eval_every": [64],
        "episode_bars": [32],
        "hyperparameters.n_steps": [8],  # the quickstart trains A2C
        "cache_dir": [models],
    }
    grid = {
        **spec.grid,
        "data.path": [str(samples_dir / "SP500.parquet")],
        "splits.last_bars": [30],
        "verdict.reps": [100],
        "llm.cassette": [cassette],
        **{f"strategies[3].params.{k}": v for k, v in tiny.items()},
        **{f"strategies[5].params.drl.{k}": v for k, v in tiny.items()},
    }
    spec = dataclasses.replace(spec, grid=grid, output_dir=tmp_path / "out")
    points = expand_grid(spec)
    assert len(points) == 3 and len({p.configuration for p in points}) == 3
    # No key, no cassette: the offline analyst answers, and the sweep says so first.
    (warning,) = sweep_warnings(points)
    assert "strategies[5].params.llm.routing" in warning and "offline analyst" in warning

    run_sweep(spec, workers=1)
    selection = json.loads((tmp_path / "out" / "selection.json").read_text())
    (best,) = selection["selected"]
    assert best["strategy"] == "hybrid" and best["validation_seeds"]["n_seeds"] == 3
    assert best["validation"]["sharpe"] is not None and best["test_seeds"]["n_seeds"] == 3
    summary = pd.read_parquet(tmp_path / "out" / "sweep_summary.parquet")
    assert len(summary) == 3 and (summary["seeds"] == 3).all()
    assert summary["validation_std"].notna().all() and summary["selected"].sum() == 1
    assert selection["warnings"] == [warning]
    # The offline analyst ignores which models a routing names: every routing with the
    # same roles is one trial, and the Deflated Sharpe counts it once.
    assert selection["deflated_sharpe"]["n_trials"] == summary["distinct_trial"].nunique()
    assert selection["deflated_sharpe"]["n_configurations"] == 3
    from reports import write_report

    html = write_report(tmp_path / "out").read_text("utf-8")
    assert 'id="seeds"' in html and "t-interval over seeds" in html
