"""Ctrl-C: one line, exit status 130, and nothing half-written left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BACKTEST = str(Path(sys.executable).with_name("backtest"))
SP500 = ROOT / "data" / "SP500.parquet"  # replaced by the session's sample, below


@pytest.fixture(autouse=True)
def _sample_bars(samples_dir: Path) -> None:
    """The S&P 500 sample (written for the session: a fresh clone has no data/)."""
    global SP500
    SP500 = samples_dir / "SP500.parquet"


def test_ctrl_c_during_training_exits_130_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    models, runs = tmp_path / "models", tmp_path / "runs"
    experiment = tmp_path / "exp.toml"
    experiment.write_text(
        f"""
output_dir = "runs"
[data]
path = "{SP500}"
[splits]
train_end = 2013-01-01
validation_end = 2016-01-01
[[strategies]]
name = "drl"
kind = "drl"
seeds = 1
params = {{ timesteps = 2_000_000, eval_every = 4096, cache_dir = "models" }}
"""
    )
    proc = subprocess.Popen(
        [BACKTEST, "run", str(experiment), "--no-progress"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        # Training has started once its staging folder exists.
        while not list(models.glob("*.tmp-*")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert list(models.glob("*.tmp-*")), "training never started"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "Aborted" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted (Ctrl-C)"), err
    assert list(models.glob("*.tmp-*")) == []  # no half-trained model
    assert not runs.exists() or list(runs.glob(".*.tmp-*")) == []
