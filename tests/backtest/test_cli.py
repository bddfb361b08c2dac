"""The CLI: user mistakes exit non-zero with one message and no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from backtest.cli import main
from backtest.data import load_bars

BACKTEST = str(Path(sys.executable).with_name("backtest"))


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BACKTEST, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def test_console_script_writes_the_samples(tmp_path: Path) -> None:
    result = _run("data", "samples", "--dest", str(tmp_path / "d"), "--symbol", "GOOG")
    assert result.returncode == 0, result.stderr
    assert "GOOG" in result.stdout and "2148" in result.stdout
    assert len(load_bars(tmp_path / "d" / "GOOG.parquet")) == 2148
    assert (tmp_path / "d" / "manifest.json").exists()


def test_bad_file_exits_1_with_the_rule_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "date,open,high,low,close,volume\n2020-01-02,1,2,0.5,1.5,10\n2020-01-03,1,0.9,0.5,1.5,10\n"
    )
    result = _run("data", "import", str(bad), "--symbol", "X", "--dest", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert str(bad) in result.stderr
    assert "2020-01-03" in result.stderr
    assert "high_below_body" in result.stderr and "Fix:" in result.stderr
    assert not (tmp_path / "X.parquet").exists()


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = _run("data", "import", str(tmp_path / "x.csv"))
    assert result.returncode == 2
    assert "--symbol" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["data", "import", "missing.csv", "--symbol", "X"], "no such file"),
        (["data", "samples", "--symbol", "SPX"], "no such sample"),
        (["data", "info", "nowhere"], "no such file or directory"),
        (["data", "import-news", "missing.csv"], "no such file"),
    ],
)
def test_user_mistakes_print_one_message(
    args: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and "Traceback" not in err


def test_import_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = pd.date_range("2021-01-04", periods=10, freq="B", name="timestamp")
    frame = pd.DataFrame(
        {"open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 1000}, index=index
    ).drop(index[4])
    src = tmp_path / "abc.csv"
    frame.reset_index().to_csv(src, index=False)
    with pytest.raises(SystemExit) as info:
        main(
            [
                "data",
                "import",
                str(src),
                "--symbol",
                "ABC",
                "--calendar",
                "XNYS",
                "--dest",
                str(tmp_path),
            ]
        )
    assert info.value.code == 0
    with pytest.raises(SystemExit) as info:
        main(["data", "info", str(tmp_path / "ABC.parquet")])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "9" in out and "XNYS" in out
    # 2021-01-08 was removed and 2021-01-18 (MLK day) is a holiday: one gap of one bar.
    assert "1 run(s), 1 expected bar(s) missing" in out


def test_run_prints_the_llm_cost_estimate_before_it_starts(
    samples_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    routing = Path(__file__).resolve().parents[2] / "experiments" / "routing" / "seed_stack.toml"
    experiment = tmp_path / "llm.toml"
    experiment.write_text(
        f"""
name = "estimate"
seed = 1
output_dir = "{tmp_path / "runs"}"
[data]
path = "{samples_dir / "SP500.parquet"}"
end = "2016-02-12"
[splits]
train_end = "2015-06-01"
validation_end = "2016-01-01"
[[strategies]]
name = "llm"
kind = "llm"
params = {{ routing = "{routing}", mode = "offline", every_n_bars = 5 }}
"""
    )
    with pytest.raises(SystemExit) as info:
        main(["run", str(experiment), "--no-progress"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "LLM cost estimate:" in out
    run_dir = next((tmp_path / "runs").iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    estimate = manifest["llm_cost_estimate"]
    calls = len(pd.read_parquet(run_dir / "llm_calls.parquet"))
    # Every fifth bar, four roles: the schedule is known before the run, so the count is exact.
    assert estimate["calls"] == estimate["per_strategy"]["llm"]["calls"] == calls
    assert f"{calls:,} calls" in out and 0 < estimate["usd"] < 1
    assert out.index("LLM cost estimate:") < out.index("Run ")


def _sweep_files(tmp_path: Path, samples_dir: Path) -> Path:
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
""")
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        'base = "base.toml"\noutput_dir = "out"\n[grid]\n"strategies[0].params.fast" = [5, 40]\n'
    )
    return sweep


def test_progress_bars_only_on_a_terminal(
    tmp_path: Path,
    samples_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from rich.console import Console

    import backtest.cli as cli

    sweep = _sweep_files(tmp_path, samples_dir)
    # Captured output (pipes, CI, tests) gets the results and no progress bars.
    piped = _run("run", str(tmp_path / "base.toml"), "--out", str(tmp_path / "runs"))
    assert piped.returncode == 0, piped.stderr
    assert "sma" in piped.stdout and "100%" not in piped.stdout and "0:00:0" not in piped.stdout
    result = _run("sweep", str(sweep), "--workers", "1")
    assert result.returncode == 0, result.stderr
    # Two points on validation (fast = 40 > slow fails), the other one on test.
    assert "3 run(s): 2 done, 0 already complete, 1 failed" in result.stdout
    assert f"Selection: {tmp_path / 'out' / 'selection.json'}\n" in result.stdout
    assert "sweep (" not in result.stdout
    # On a terminal the sweep's bar counts runs and failures (the test run included).
    screen = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=screen, force_terminal=True, width=120))
    (tmp_path / "out").rename(tmp_path / "out-before")
    with pytest.raises(SystemExit) as info:
        main(["sweep", str(sweep), "--workers", "1"])
    assert info.value.code == 0
    shown = screen.getvalue()
    assert "sweep (test)" in shown and "3/3" in shown and "1 failed" in shown
    assert "Selected by validation sharpe among 1 configuration(s)" in " ".join(shown.split())
    assert capsys.readouterr().out == ""  # everything went to the console given


def test_sweep_backend_mistakes(tmp_path: Path, samples_dir: Path) -> None:
    sweep = _sweep_files(tmp_path, samples_dir)
    result = _run("sweep", str(sweep), "--backend", "dask")
    assert result.returncode == 1 and "use local or ray" in result.stderr
    result = _run("sweep", str(sweep), "--address", "127.0.0.1:6379")
    assert result.returncode == 1 and "--backend ray" in result.stderr
    # A cluster address where nothing listens fails at once (Ray would retry for minutes).
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = _run("sweep", str(sweep), "--backend", "ray", "--address", f"127.0.0.1:{port}")
    assert result.returncode == 1 and "nothing answers there" in result.stderr
    assert "ray start --head" in result.stderr
    assert not (tmp_path / "out").exists()


def test_the_terminal_says_how_many_llm_calls_failed_and_why_answers_abstained(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from backtest.cli import _print_llm_health

    summary = {
        "strategies": {
            "drl": {"llm_calls": 0},
            "llm": {
                "llm_calls": 120,
                "llm_failed_calls": 7,
                "llm_fallbacks": 5,
                "llm_unusable_answers": 4,
                "abstain_reasons": {"truncated": 3, "unknown_keys": 1},
            },
        }
    }
    _print_llm_health(summary)
    out = " ".join(capsys.readouterr().out.split())
    assert "llm: 120 LLM call(s), 7 failed, 5 fallback(s), 4 unusable answer(s)" in out
    assert "(truncated 3, unknown_keys 1)" in out
    assert "drl" not in out  # no LLM calls, no line
