"""The report of a pooled (several-asset) run: the verdict first, then a link per asset.

A pooled directory (:mod:`backtest.engine.assets`) holds only ``summary.json`` and
``manifest.json``; each asset's own run directory has the full report, which this writes
too when it is missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from backtest.errors import BacktestError
from reports._render import render_template, write_atomic
from reports.run import verdict_rows, write_run_report

__all__ = ["is_pooled", "write_pooled_report"]


def is_pooled(folder: Path) -> bool:
    """Whether ``folder`` is a pooled run's directory (its summary lists ``assets``)."""
    path = folder / "summary.json"
    if not path.is_file() or (folder / "ledger.parquet").is_file():
        return False
    try:
        return "assets" in json.loads(path.read_text("utf-8"))
    except ValueError:
        return False


def write_pooled_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` of a pooled run (and of each asset run that lacks one)."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text("utf-8"))
        manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise BacktestError(
            f"{folder}: cannot read the pooled run ({exc}). Fix: rerun it."
        ) from exc
    target = Path(out) if out is not None else folder / "report.html"
    assets: dict[str, Any] = {}
    for symbol, info in summary["assets"].items():
        run_dir = Path(info["run_dir"])
        report = run_dir / "report.html"
        if not report.is_file() and run_dir.is_dir():
            write_run_report(run_dir)
        assets[symbol] = {**info, "report": os.path.relpath(report, target.parent)}
    html = render_template(
        "pooled.html.j2",
        title=f"{manifest.get('name', 'run')} · {summary.get('symbol', '')}",
        manifest=manifest,
        assets=assets,
        benchmark=summary.get("benchmark"),
        context=summary.get("verdict_context") or {},
        verdict=verdict_rows(summary),
        warnings=manifest.get("warnings", []),
        plots=[],
    )
    return write_atomic(target, html)
