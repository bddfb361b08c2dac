"""Sweeps: one base experiment, a grid of overrides, every point a run; resumable.

A sweep file (TOML) names a base experiment and a grid of dotted keys, each with a list of
values (the same keys ``--set`` takes)::

    base = "quickstart.toml"          # relative to this file
    output_dir = "../runs/sweep-fees" # where the runs and sweep_summary.parquet go

    [grid]
    "env.fee_bps" = [0.5, 1.0, 2.0]
    seed = [0, 1]

Every point of the grid (the Cartesian product, in sorted key order) is a run whose id is
the hash of its resolved config and data, so a run already complete (its directory holds a
``summary.json``: directories are renamed into place only when complete) is skipped, and a
killed sweep resumes where it stopped. A run that fails is recorded with its error and does
not stop the others. ``sweep_summary.parquet`` has one row per run and strategy: the grid
values, run id, status, error, and the strategy's metrics and LLM counts.

The local backend is a process pool (default: one worker per core) whose workers fork from a
forkserver that has the engine imported.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from backtest.config import RunConfig, load_experiment, read_toml
from backtest.errors import BacktestError, ConfigError

__all__ = ["SweepPoint", "SweepSpec", "expand_grid", "load_sweep", "run_sweep"]


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One grid point: its overrides and the resolved config."""

    index: int
    values: dict[str, Any]
    config: RunConfig


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """A loaded sweep file."""

    path: Path
    base: Path
    output_dir: Path
    grid: dict[str, list[Any]]


def load_sweep(path: str | Path) -> SweepSpec:
    """Read a sweep file.

    Raises:
        ConfigError: Missing file or keys, a grid value that is not a non-empty list.
    """
    path = Path(path)
    raw = read_toml(path, "sweep", "check the path")
    unknown = sorted(set(raw) - {"base", "output_dir", "grid"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}. Fix: a sweep file has "
            "base, output_dir and [grid]."
        )
    if "base" not in raw:
        raise ConfigError(
            f"{path}: 'base' (the experiment file) is missing. Fix: add base = \"quickstart.toml\"."
        )
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(
            f"{path}: [grid] is empty. Fix: add dotted keys with lists of values, "
            'e.g. "env.fee_bps" = [0.5, 1.0].'
        )
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.{key} must be a non-empty list of values.")
    here = path.resolve().parent
    output = raw.get("output_dir", f"runs/sweep-{path.stem}")
    return SweepSpec(
        path=path,
        base=(here / raw["base"]).resolve(),
        output_dir=(here / output).resolve(),
        grid=dict(grid),
    )


def expand_grid(spec: SweepSpec) -> list[SweepPoint]:
    """Every grid point as a validated config (errors name the sweep file and the point)."""
    keys = sorted(spec.grid)
    points = []
    for index, combo in enumerate(itertools.product(*(spec.grid[k] for k in keys))):
        values = dict(zip(keys, combo, strict=True))
        # JSON spells TOML's strings, numbers, booleans and arrays the same way.
        overrides = [f"{k}={json.dumps(v)}" for k, v in values.items()]
        try:
            config = load_experiment(spec.base, overrides, output_dir=spec.output_dir)
        except ConfigError as exc:
            raise ConfigError(f"{spec.path}, grid point {index} {values}: {exc}") from exc
        points.append(SweepPoint(index, values, config))
    return points


def _watch_parent(sweep_pid: int) -> None:
    """Worker initializer: exit as soon as the sweep process is gone.

    A sweep killed with SIGKILL cannot stop its pool; without this its workers would go on
    with the runs already queued to them, unseen (racing a restarted sweep for the same run
    directories), and then wait forever for work that never comes.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.2)
            if os.getppid() != parent:  # the forkserver went away with the sweep
                os._exit(1)
            try:
                os.kill(sweep_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="sweep-watch-parent", daemon=True).start()


def _execute(config_json: str) -> dict[str, Any]:
    """Run one point in a worker process; never raises (a failure is a result)."""
    from backtest.engine import run

    config = RunConfig.model_validate_json(config_json)
    try:
        result = run(config)
    except BacktestError as exc:
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    return {"status": "done", "run_id": result.run_id}


def _summary_rows(point: SweepPoint, run_id: str, status: str, error: str) -> list[dict[str, Any]]:
    base = {
        "point": point.index,
        **{f"grid.{k}": str(v) for k, v in point.values.items()},
        "run_id": run_id,
        "status": status,
        "error": error,
    }
    summary_path = Path(point.config.output_dir) / run_id / "summary.json"
    if status == "failed" or not summary_path.exists():
        return [{**base, "strategy": None}]
    summary = json.loads(summary_path.read_text())
    rows = []
    for name, stats in summary["strategies"].items():
        decisions = stats.get("decisions") or 0
        rows.append(
            {
                **base,
                "strategy": name,
                **{
                    k: stats.get(k)
                    for k in (
                        "total_return",
                        "cagr",
                        "sharpe",
                        "sortino",
                        "max_drawdown",
                        "trade_count",
                        "fees_usd",
                        "llm_cost_usd",
                        "llm_calls",
                        "abstains",
                        "final_equity_usd",
                    )
                },
                "llm_cost_per_decision_usd": (stats.get("llm_cost_usd") or 0.0) / decisions
                if decisions
                else None,
            }
        )
    return rows


def run_sweep(
    spec: SweepSpec,
    *,
    workers: int | None = None,
    on_done: Callable[[SweepPoint, str], None] | None = None,
) -> pd.DataFrame:
    """Run every grid point not already complete; write ``sweep_summary.parquet``.

    Args:
        spec: The sweep.
        workers: Processes (default: one per core; 1 runs in this process).
        on_done: Called after each point with its status (``done``, ``skipped``, ``failed``).

    Returns:
        The summary table (one row per run and strategy).
    """
    from backtest.engine import run_id_for

    points = expand_grid(spec)
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    ids = {p.index: run_id_for(p.config) for p in points}
    status: dict[int, tuple[str, str]] = {}
    todo = []
    for point in points:
        if (spec.output_dir / ids[point.index] / "summary.json").exists():
            status[point.index] = ("skipped", "")
            if on_done:
                on_done(point, "skipped")
        else:
            todo.append(point)
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(todo) <= 1:
        for point in todo:
            outcome = _execute(point.config.model_dump_json())
            status[point.index] = (outcome["status"], outcome.get("error", ""))
            if on_done:
                on_done(point, outcome["status"])
    else:
        # forkserver: workers fork from a clean server process (no inherited threads, numba or
        # torch state) that has already imported the engine, so they start in milliseconds.
        context = get_context("forkserver")
        context.set_forkserver_preload(["backtest.engine", "strategies.baselines"])
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_watch_parent,
            initargs=(os.getpid(),),
        ) as pool:
            futures = {pool.submit(_execute, p.config.model_dump_json()): p for p in todo}
            for future in as_completed(futures):
                point = futures[future]
                outcome = future.result()
                status[point.index] = (outcome["status"], outcome.get("error", ""))
                if on_done:
                    on_done(point, outcome["status"])
    rows = []
    for point in points:
        state, error = status[point.index]
        rows += _summary_rows(point, ids[point.index], state, error)
    table = pd.DataFrame(rows)
    tmp = spec.output_dir / "sweep_summary.parquet.tmp"
    table.to_parquet(tmp, index=False)
    tmp.replace(spec.output_dir / "sweep_summary.parquet")
    return table
