"""Sweeps: grid expansion, skipping complete runs, failures recorded, resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from backtest.errors import ConfigError
from backtest.sweep import expand_grid, load_sweep, run_sweep

BACKTEST = str(Path(sys.executable).with_name("backtest"))


def _files(tmp_path: Path, samples_dir: Path, grid: str) -> Path:
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
    sweep.write_text(f'base = "base.toml"\noutput_dir = "out"\n[grid]\n{grid}\n')
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
    bad = _files(tmp_path, samples_dir, '"env.fee_bp" = [1.0]')
    with pytest.raises(ConfigError, match=r"(?s)grid point 0 .*Did you mean 'fee_bps'"):
        expand_grid(load_sweep(bad))
    (tmp_path / "empty.toml").write_text('base = "base.toml"\n')
    with pytest.raises(ConfigError, match="grid"):
        load_sweep(tmp_path / "empty.toml")


def test_complete_runs_are_skipped_and_failures_recorded(tmp_path: Path, samples_dir: Path) -> None:
    sweep = _files(
        tmp_path,
        samples_dir,
        '"strategies[0].params.fast" = [5, 10, 40]\n"env.fee_bps" = [1.0, 3.0]',
    )
    statuses: list[str] = []
    table = run_sweep(
        load_sweep(sweep), workers=2, on_done=lambda point, status: statuses.append(status)
    )
    # fast = 40 > slow = 30 is a config error inside the run: recorded, the others go on.
    assert statuses.count("failed") == 2 and statuses.count("done") == 4
    failed = table[table.status == "failed"]
    assert set(failed["grid.strategies[0].params.fast"]) == {"40"}
    assert failed["error"].str.contains("strategies\\[0\\].params").all()
    done = table[table.status == "done"]
    assert set(done["strategy"]) == {"sma", "buy_and_hold"} and done["sharpe"].notna().all()
    assert pd.read_parquet(tmp_path / "out" / "sweep_summary.parquet").equals(table)
    statuses.clear()
    run_sweep(load_sweep(sweep), workers=1, on_done=lambda point, status: statuses.append(status))
    assert statuses.count("skipped") == 4 and statuses.count("failed") == 2


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
    assert len(after) == 6
    assert all(after[k] == v for k, v in finished.items())  # finished runs were not redone
    # The killed run's half-written staging folder was cleared when that run was redone.
    assert not list(out.glob(".*.tmp-*"))


def test_shipped_sweeps_expand() -> None:
    repo = Path(__file__).resolve().parents[2]
    for path in sorted((repo / "experiments" / "sweeps").glob("*.toml")):
        points = expand_grid(load_sweep(path))
        assert points and all(p.config.output_dir.startswith(str(repo / "runs")) for p in points)
