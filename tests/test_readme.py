"""The README's walkthrough is a path that works: every ``backtest`` command of its block runs,
in order, in a fresh folder holding a copy of the experiments and the committed cassette.

Only two things differ from typing the block: the quickstart's DRL gets a tiny training budget
(the same ``--set``s as ``tests/test_quickstart.py``; its full run is timed in BENCHMARKS.md),
and ``my_prices.csv`` is written here, from the S&P 500 sample, with a header a user's file
would have (``Date,Open,High,Low,Close,Adj Close,Volume``).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backtest.data import load_bars

ROOT = Path(__file__).resolve().parents[1]
BACKTEST = str(Path(sys.executable).with_name("backtest"))
TINY_DRL = (
    "timesteps=256",
    "eval_every=128",
    "episode_bars=64",
    "hyperparameters={ n_steps = 8 }",
)


def _walkthrough() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Walkthrough", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "the README's walkthrough has no bash block"
    lines = [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line.startswith("backtest ")]


def test_the_walkthrough_block_is_what_this_test_runs() -> None:
    commands = _walkthrough()
    assert [c.split()[1] for c in commands] == [
        "data",
        "run",
        "run",
        "data",
        "run",
        "compare",
        "report",
    ]


def test_every_walkthrough_command_runs(tmp_path: Path, samples_dir: Path) -> None:
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    shutil.copytree(ROOT / "cassettes" / "quickstart", tmp_path / "cassettes" / "quickstart")
    sample = load_bars(samples_dir / "SP500.parquet").frame
    csv = sample.loc["2008-01-01":].copy()
    csv.index = csv.index.strftime("%Y-%m-%d")
    csv.index.name = "Date"
    csv = csv.rename(columns=str.title)[["Open", "High", "Low", "Close", "Volume"]]
    csv.insert(4, "Adj Close", csv["Close"])
    csv.to_csv(tmp_path / "my_prices.csv")
    run_id = None
    for command in _walkthrough():
        args = shlex.split(command)
        if args[1] == "run" and args[2].endswith("quickstart.toml"):
            for key in TINY_DRL:
                args += [
                    "--set",
                    f"strategies[3].params.{key}",
                    "--set",
                    f"strategies[5].params.drl.{key}",
                ]
            args.append("--no-progress")
        if run_id is not None:
            args = [a.replace("RUN_ID", run_id) for a in args]
        done = subprocess.run(
            [BACKTEST, *args[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr
        found = re.search(r"Run (\w+) written to", done.stdout.replace("\n", " "))
        if found:
            run_id = found.group(1)
    assert run_id is not None
    assert (tmp_path / "runs" / run_id / "report.html").is_file()
    assert (tmp_path / "data" / "ACME.parquet").is_file()


@pytest.mark.parametrize("needle", ["docs/strategies.md", "experiments/custom_strategy.toml"])
def test_the_walkthrough_points_at_the_docs(needle: str) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert needle in text.split("## Walkthrough", 1)[1].split("\n## ", 1)[0]
