"""Stage 5, write (before it): runs are immutable; reuse a complete one, never overwrite live spend.

A run directory is renamed into place only when complete (it holds ``summary.json``), and
its name is the run id, the hash of every input (:mod:`backtest.engine.provenance`). So:

- **Reuse.** When ``<output_dir>/<run_id>/`` is complete and its manifest's ``inputs`` are
  the run's, the run is not redone: :func:`load_run` reads it back (``RunResult.reused``),
  and the CLI says ``reused run <id> from <dir>, --force to redo``.
- **Never overwrite a live run.** A run that reached a live provider (a row of
  ``llm_calls.parquet`` whose ``cache`` is ``live`` or ``recorded``, or whose ``spend_usd``
  is above 0; the manifest also says ``reached_live``) recorded money actually spent, which
  no rerun can reproduce: a redo (``--force``) goes to a new directory,
  ``<run_id>.2``, ``<run_id>.3``, ... (:func:`redo_dir`), whatever the flags, and the
  writer refuses to replace such a directory.
- A complete run that stayed offline or replayed a cassette is replaced by ``--force``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backtest.errors import BacktestError

__all__ = [
    "LIVE_CACHE",
    "calls_reached_live",
    "load_run",
    "reached_live",
    "redo_dir",
    "refuse_to_replace",
]

#: ``cache`` values of ``llm_calls.parquet`` rows whose answer came from a provider.
LIVE_CACHE = ("live", "recorded")
_TABLES = ("ledger", "decisions", "llm_calls")


def calls_reached_live(calls: pa.Table) -> bool:
    """True when a call of this ``llm_calls`` table went to a provider or spent money."""
    if calls.num_rows == 0:
        return False
    live = pc.any(pc.is_in(calls["cache"], pa.array(LIVE_CACHE))).as_py()
    spent = pc.any(pc.greater(pc.fill_null(calls["spend_usd"], 0.0), 0.0)).as_py()
    return bool(live or spent)


def reached_live(run_dir: Path) -> bool:
    """True when the run in ``run_dir`` reached a live provider (see the module docstring)."""
    manifest = run_dir / "manifest.json"
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("reached_live"):
                return True
        except ValueError:
            pass
    calls = run_dir / "llm_calls.parquet"
    if not calls.is_file():
        return False
    try:
        return calls_reached_live(pq.read_table(calls, columns=["cache", "spend_usd"]))
    except (OSError, pa.ArrowInvalid, KeyError):
        return True  # unreadable: keep it rather than risk destroying a record of spend


def load_run(run_dir: Path, inputs: dict[str, str]) -> dict[str, Any] | None:
    """The complete run in ``run_dir`` when its recorded inputs are ``inputs``, else None.

    Returns:
        ``{"tables", "summary", "manifest"}`` as the engine's :class:`RunResult` holds them.
    """
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
        summary = json.loads((run_dir / "summary.json").read_text())
        if manifest.get("inputs") != inputs:
            return None
        tables = {name: pq.read_table(run_dir / f"{name}.parquet") for name in _TABLES}
    except (OSError, ValueError, pa.ArrowInvalid):
        return None
    return {"tables": tables, "summary": summary, "manifest": manifest}


def redo_dir(run_dir: Path) -> Path:
    """The first free ``<run_id>.<n>`` (n >= 2) beside ``run_dir``, for a redo of a live run."""
    n = 2
    while (candidate := run_dir.with_name(f"{run_dir.name}.{n}")).exists():
        n += 1
    return candidate


def refuse_to_replace(run_dir: Path) -> None:
    """Raise when ``run_dir`` holds a run that reached a live provider (the writer's guard).

    Raises:
        BacktestError: Naming the directory and what to do instead.
    """
    if run_dir.exists() and reached_live(run_dir):
        raise BacktestError(
            f"{run_dir}: this run reached a live LLM provider and its recorded spend cannot "
            "be reproduced, so it is never overwritten. Fix: write the redo elsewhere "
            "(backtest run --force puts it in a new directory), or move this one away."
        )
