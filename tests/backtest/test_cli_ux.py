"""What a terminal user sees: tables that fit 80 columns without breaking a word, help texts
with their brackets, warnings collapsed with a count, and input errors that name the fix
(a close column by another name, weekends without a calendar, a repeated timestamp)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from backtest import cli
from backtest.cli_signals import install
from backtest.data import load_bars

ROOT = Path(__file__).resolve().parents[2]
BACKTEST = str(Path(sys.executable).with_name("backtest"))

SUMMARY = {
    "symbol": "SP500",
    "start": "2016-01-04T00:00:00+00:00",
    "end": "2018-12-31T00:00:00+00:00",
    "bars": 754,
    "benchmark": "buy_and_hold",
    "strategies": {
        name: {
            "total_return": 0.1234,
            "sharpe": -1.95,
            "max_drawdown": -0.4838,
            "trade_count": 452,
            "fees_usd": 4104.2,
            "llm_cost_usd": 0.25,
            "llm_calls": 152,
            "final_equity_usd": 124460.0,
        }
        for name in (
            "buy_and_hold",
            "drl_a2c@0",
            "hybrid~random_llm@0",
            "buy_and_hold~voltarget:hybrid",
        )
    },
}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BACKTEST, *args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )


@pytest.mark.parametrize("width", [80, 100, 60])
def test_the_metrics_table_fits_without_breaking_a_word(
    width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=width, color_system=None))
    cli._print_metrics("quickstart", SUMMARY)
    text = out.getvalue()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "-48.4%" in text and "+12.3%" in text
    flat = " ".join(text.split())
    if width < 80:  # too narrow for the longest name: cut with an ellipsis, never folded
        assert "left out to fit the terminal: see summary.json" in flat
        assert "buy_and_hold~voltarget:hybr…" in text
        return
    for name in SUMMARY["strategies"]:
        shown = f"{name}*" if name == "buy_and_hold" else name
        assert shown in text, f"{shown!r} was broken across lines:\n{text}"
    # Columns are dropped (and said so) only when the words would not fit otherwise.
    if width >= 100:
        assert "equity $" in text and "124,460" in text and "left out" not in text
    else:
        assert "left out to fit the terminal: see summary.json" in flat


def test_help_texts_keep_their_brackets(tmp_path: Path) -> None:
    result = _cli("sweep", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "(base + [grid])" in result.stdout


def test_a_repeated_warning_is_printed_once_then_counted() -> None:
    lines: list[str] = []
    handler, restore = install(lines.append)
    try:
        log = logging.getLogger("backtest.llm.somewhere")
        for _ in range(2400):
            log.warning("budget cap reached: %s", "hybrid@0")
        log.warning("another one")
    finally:
        restore()
    assert lines == ["warning: budget cap reached: hybrid@0", "warning: another one"]
    assert handler.summary() == ["warning repeated 2400 times in all: budget cap reached: hybrid@0"]
    assert handler not in logging.getLogger("backtest").handlers


@pytest.fixture
def frame(samples_dir: Path):
    bars = load_bars(samples_dir / "SP500.parquet").frame.loc["2015-01-01":"2015-12-31"]
    out = bars[["open", "high", "low", "close", "volume"]].copy()
    out.index = out.index.strftime("%Y-%m-%d")
    out.index.name = "date"
    return out


def test_a_close_by_another_name_is_suggested(tmp_path: Path, frame) -> None:
    frame.rename(columns={"close": "PX_LAST", "volume": "Vol"}).to_csv(tmp_path / "b.csv")
    result = _cli("data", "import", "b.csv", "--symbol", "B", "--dest", "d", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    err = " ".join(result.stderr.split())
    assert "px_last looks like close" in err and "vol looks like volume" in err
    assert "close, volume are missing" in err and "unknown_column" in err


def test_weekend_gaps_without_a_calendar_name_the_flag(tmp_path: Path, frame) -> None:
    frame.to_csv(tmp_path / "b.csv")
    result = _cli("data", "import", "b.csv", "--symbol", "B", "--dest", "d", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "are weekends" in out and "--calendar XNYS" in out
    info = _cli("data", "info", "d/B.parquet", cwd=tmp_path)
    assert "--calendar XNYS" in " ".join(info.stdout.split())
    with_calendar = _cli(
        "data",
        "import",
        "b.csv",
        "--symbol",
        "C",
        "--dest",
        "d",
        "--calendar",
        "XNYS",
        cwd=tmp_path,
    )
    assert with_calendar.returncode == 0 and "weekends" not in with_calendar.stdout


def test_a_repeated_date_is_named_not_an_unknown_frequency(tmp_path: Path, frame) -> None:
    three = frame.iloc[:3].copy()
    three.index = [three.index[0], three.index[1], three.index[1]]
    three.index.name = "date"
    three.to_csv(tmp_path / "b.csv")
    result = _cli("data", "import", "b.csv", "--symbol", "B", "--dest", "d", cwd=tmp_path)
    assert result.returncode == 1
    err = " ".join(result.stderr.split())
    assert "duplicate_timestamp" in err and "unknown_frequency" not in err
    assert f"{three.index[1]} 00:00:00+00:00 appears twice" in err


def test_summary_fixture_is_json() -> None:
    json.dumps(SUMMARY)
