"""``backtest report`` from the console script: writes the page, or one message and exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from backtest.engine import RunResult

BACKTEST = str(Path(sys.executable).with_name("backtest"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BACKTEST, *args], capture_output=True, text=True, timeout=300)


def test_report_command_writes_the_run_report(hostile_run: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    done = _cli("report", str(hostile_run.run_dir), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "Report written to" in done.stdout and out.stat().st_size > 1_000_000


def test_report_command_on_a_wrong_directory(tmp_path: Path) -> None:
    done = _cli("report", str(tmp_path))
    assert done.returncode == 1
    assert "not a complete run directory" in done.stderr and "Fix:" in done.stderr
    assert "Traceback" not in done.stderr
