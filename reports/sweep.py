"""The sweep report: ``backtest report SWEEP_DIR`` writes ``SWEEP_DIR/sweep_report.html``.

Built from ``sweep_runs.parquet`` (one row per run and strategy; sweeps written before it
existed kept that table in ``sweep_summary.parquet``), ``sweep_summary.parquet`` (one row
per configuration: its seeds' mean, spread and interval) and, when the sweep ran with
selection, ``selection.json``:

- the seed spread: per configuration, how many seeds (NaN ones counted apart), the mean,
  standard deviation and t-interval over seeds on validation, its distinct trial, and the
  selected configuration's test numbers;
- the table of runs (sortable), with the split each number comes from;
- LLM cost against total return and against Sharpe, one marker per configuration and
  strategy, with the Pareto front (no other point is cheaper and better) marked;
- return and LLM cost per configuration;
- selection discipline: how many configurations were tried, which were selected on the
  validation split, their test-split numbers, and the Deflated Sharpe Ratio, the
  probability of backtest overfitting and Hansen's SPA p-value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.errors import BacktestError
from backtest.seed_scores import CI_METHOD
from reports import figures
from reports._render import figure_json, render_template, write_atomic

__all__ = ["load_configurations", "load_sweep_dir", "sweep_report_html", "write_sweep_report"]

_COLUMNS = (
    ("total_return", "Total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("trade_count", "Trades", "int"),
    ("fees_usd", "Fees", "usd"),
    ("llm_cost_usd", "LLM cost", "usd"),
    ("llm_cost_per_decision_usd", "LLM cost / decision", "usd"),
    ("llm_calls", "LLM calls", "int"),
    ("abstains", "Abstains", "int"),
    ("final_equity_usd", "Final equity", "usd"),
)


def load_sweep_dir(sweep_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """The table of runs as a DataFrame and ``selection.json`` (None when absent).

    Raises:
        BacktestError: The table is missing or unreadable, naming the file.
    """
    path = Path(sweep_dir)
    file = path / "sweep_runs.parquet"
    if not file.is_file():
        file = path / "sweep_summary.parquet"  # written before sweep_runs.parquet existed
    if not file.is_file():
        raise BacktestError(
            f"{path}: no sweep_summary.parquet. Fix: pass a directory written by "
            "`backtest sweep` (its output_dir), or a run directory (runs/<run-id>/)."
        )
    try:
        table = pd.read_parquet(file)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise BacktestError(f"{file}: cannot read ({exc}). Fix: rerun the sweep.") from exc
    selection = None
    if (path / "selection.json").is_file():
        try:
            selection = json.loads((path / "selection.json").read_text("utf-8"))
        except ValueError as exc:
            raise BacktestError(
                f"{path / 'selection.json'}: not JSON ({exc}). Fix: rerun the sweep."
            ) from exc
    return table, selection


def load_configurations(sweep_dir: str | Path) -> pd.DataFrame | None:
    """``sweep_summary.parquet`` when it is the one-row-per-configuration table, else None."""
    file = Path(sweep_dir) / "sweep_summary.parquet"
    if not (Path(sweep_dir) / "sweep_runs.parquet").is_file() or not file.is_file():
        return None
    try:
        return pd.read_parquet(file)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise BacktestError(f"{file}: cannot read ({exc}). Fix: rerun the sweep.") from exc


def _configuration_rows(table: pd.DataFrame | None) -> list[dict[str, Any]]:
    if table is None:
        return []

    def value(row: pd.Series, key: str) -> Any:
        item = row.get(key)
        return None if item is None or pd.isna(item) else item

    grid = [c for c in table.columns if c.startswith("grid.")]
    return [
        {
            "configuration": int(row["configuration"]),
            "grid": [(c.removeprefix("grid."), row[c]) for c in grid],
            "strategy": row.get("strategy"),
            "seeds": int(row["seeds"]),
            "n_nan_seeds": int(row["n_nan_seeds"]),
            "mean": value(row, "validation_mean"),
            "std": value(row, "validation_std"),
            "ci_low": value(row, "validation_ci_low"),
            "ci_high": value(row, "validation_ci_high"),
            "distinct_trial": value(row, "distinct_trial"),
            "selected": bool(row["selected"]),
            "test_seeds": value(row, "test_seeds"),
            "test_mean": value(row, "test_mean"),
            "test_std": value(row, "test_std"),
        }
        for _, row in table.iterrows()
    ]


def _label(row: pd.Series, grid_columns: list[str]) -> str:
    parts = [f"{c.removeprefix('grid.')}={row[c]}" for c in grid_columns]
    parts.append(str(row.get("strategy") or "—"))
    return " · ".join(parts)


def sweep_report_html(sweep_dir: str | Path) -> str:
    """The HTML text of a sweep's report (see the module docstring)."""
    table, selection = load_sweep_dir(sweep_dir)
    grid_columns = [c for c in table.columns if c.startswith("grid.")]
    table = table.copy()
    table["label"] = [_label(row, grid_columns) for _, row in table.iterrows()]
    done = table[(table["status"] != "failed") & table["strategy"].notna()].copy()
    split_known = "split" in table.columns
    if split_known:
        # Plots compare configurations where they were scored (validation): putting the
        # selected configuration's test numbers beside them would compare unlike things.
        done = done[done["split"] == (selection or {}).get("selection_split", "validation")]
    for key, _, _ in _COLUMNS:
        if key not in done:
            done[key] = np.nan
        done[key] = pd.to_numeric(done[key], errors="coerce")
    plots: list[tuple[str, str]] = []
    if not done.empty:
        labels = list(done["label"])
        plots = [
            (
                "cost-return",
                figure_json(
                    figures.cost_return_scatter(done, "total_return", "total return", labels, ".1%")
                ),
            ),
            (
                "cost-sharpe",
                figure_json(figures.cost_return_scatter(done, "sharpe", "Sharpe", labels, ".2f")),
            ),
            ("per-config", figure_json(figures.per_config_bars(done, labels))),
        ]
    front_cost = done["llm_cost_usd"].to_numpy(dtype=np.float64)
    front = set(
        figures.pareto_front(front_cost, done["total_return"].to_numpy(np.float64)).tolist()
    )
    selected_ids = {s.get("run_id") for s in (selection or {}).get("selected", [])}
    selected_ids |= {s.get("test_run_id") for s in (selection or {}).get("selected", [])}
    rows = []
    for pos, (_, row) in enumerate(table.iterrows()):
        ok = row["status"] != "failed" and row.get("strategy") is not None
        position = done.index.get_loc(row.name) if ok and row.name in done.index else None
        rows.append(
            {
                "point": row.get("point"),
                "grid": [(c.removeprefix("grid."), row[c]) for c in grid_columns],
                "strategy": row.get("strategy") or "—",
                "run_id": row.get("run_id"),
                "status": row.get("status"),
                "error": row.get("error") or "",
                "split": row.get("split") if split_known else None,
                "pareto": position is not None and position in front,
                "selected": bool(row.get("selected"))
                if "selected" in table.columns
                else row.get("run_id") in selected_ids,
                "cells": [
                    (kind, None if pd.isna(row.get(key)) else row.get(key))
                    for key, _, kind in _COLUMNS
                ],
                "order": pos,
            }
        )
    scored = table[table["split"] != "test"] if split_known else table
    points = scored["point"].nunique() if "point" in scored else len(scored)
    failed = int((table["status"] == "failed").sum())
    context = {
        "title": f"Sweep · {Path(sweep_dir).name}",
        "sweep_dir": str(sweep_dir),
        "grid_keys": [c.removeprefix("grid.") for c in grid_columns],
        "headers": [(header, kind) for _, header, kind in _COLUMNS],
        "rows": rows,
        "plots": plots,
        "n_points": int(points),
        "n_failed": failed,
        "split_known": split_known,
        "selection": selection,
        "configurations": _configuration_rows(load_configurations(sweep_dir)),
        "ci_method": CI_METHOD,
    }
    return render_template("sweep.html.j2", **context)


def write_sweep_report(sweep_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the sweep's report (default ``SWEEP_DIR/sweep_report.html``); return its path."""
    target = Path(out) if out is not None else Path(sweep_dir) / "sweep_report.html"
    return write_atomic(target, sweep_report_html(sweep_dir))
