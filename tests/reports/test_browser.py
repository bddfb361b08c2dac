"""The reports in a real browser: headless Chromium, from file://, with the network off.

Asserts that no console or page error occurs, that no request leaves the file, that every
plot drew, and that hostile text in a hover label shows as text and runs nothing. The
screenshot is kept as a test artifact (``$REPORT_ARTIFACTS``, else pytest's tmp dir).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backtest.engine import RunResult
from reports import write_report
from tests.reports.browser import chromium_path, load_report

pytestmark = pytest.mark.skipif(
    chromium_path() is None and os.environ.get("REPORT_BROWSER_OPTIONAL") == "1",
    reason="Chromium not installed and REPORT_BROWSER_OPTIONAL=1",
)


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("REPORT_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_run_report_draws_offline_without_errors(hostile_run: RunResult, tmp_path: Path) -> None:
    path = write_report(hostile_run.run_dir)
    shot = _artifacts(tmp_path) / "run_report.png"
    seen = load_report(path, screenshot=shot, hover=("timeline", "llm&lt;i&gt;"))
    # The page's strict Content-Security-Policy (no 'unsafe-inline', no 'unsafe-eval')
    # refused nothing: a refusal is a console error and a report error.
    assert seen.console_errors == [] and seen.page_errors == [] and seen.report_errors == []
    assert seen.plots == 6 and seen.drawn == seen.plots
    assert seen.requests == [path.resolve().as_uri()]  # nothing but the file itself
    # The hostile reasoning shows as text in the hover label, and none of it ran.
    assert "<script>window.__pwned" in seen.hover_text
    assert "<img src=x onerror=" in seen.hover_text
    assert seen.pwned is None and seen.dialogs == []
    assert shot.stat().st_size > 20_000


def test_sweep_report_draws_offline_without_errors(sweep_dir: Path, tmp_path: Path) -> None:
    path = write_report(sweep_dir)
    seen = load_report(path, screenshot=_artifacts(tmp_path) / "sweep_report.png")
    assert seen.console_errors == [] and seen.page_errors == [] and seen.report_errors == []
    assert seen.plots == 3 and seen.drawn == 3
    assert seen.requests == [path.resolve().as_uri()]


def test_the_first_screen_shows_the_verdict(verdict_run: RunResult, tmp_path: Path) -> None:
    """At 1280x800 the answer (the verdict) and the metrics table are on the first screen,
    above every chart, and nothing scrolls sideways."""
    path = write_report(verdict_run.run_dir)
    shot = _artifacts(tmp_path) / "run_report_first_screen.png"
    seen = load_report(
        path,
        screenshot=shot,
        probe="table.verdict",
        probes=("#metrics-table", "div.plot[data-fig]"),
        width=1280,
        height=800,
    )
    assert seen.console_errors == [] and seen.page_errors == [] and seen.report_errors == []
    metrics = seen.probes["#metrics-table"]
    assert metrics is not None and metrics["top"] >= 0 and metrics["bottom"] <= 800, metrics
    assert metrics["right"] <= 1280 and not metrics["scrolls_x"], metrics
    assert "buy_and_hold" in metrics["text"] and "VaR 95%" in metrics["text"]
    assert seen.scroll_width <= 1280
    assert seen.probes["div.plot[data-fig]"]["top"] > metrics["bottom"]  # charts come after
    assert seen.probe is not None, "no verdict table in the report"
    assert seen.probe["top"] >= 0 and seen.probe["bottom"] <= 800, seen.probe
    assert "llm_only vs buy_and_hold" in seen.probe["text"]
    assert "underpowered" in seen.probe["text"]  # one seed: said in words
