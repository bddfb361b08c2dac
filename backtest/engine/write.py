"""Stage 5, write: the tracks become Arrow tables; the tables, summary and manifest a run directory.

The tables are built before scoring (the scores read the ledger and the LLM calls);
the manifest records what the run depended on (config, data and input hashes, seeds,
package versions, git revision); the run directory is written into a staging directory
and renamed into place, so a reader never sees half a run.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import os
import platform
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.config import RunConfig, canonical_json
from backtest.data import Bars
from backtest.engine.reuse import refuse_to_replace
from backtest.engine.track import CALL_FIELDS, _Track
from backtest.policy import Decision

__all__ = [
    "DECISION_SCHEMA",
    "LEDGER_COLUMNS",
    "LEDGER_SCHEMA",
    "LLM_CALL_COLUMNS",
    "LLM_CALL_SCHEMA",
]

_TIMESTAMP = pa.timestamp("ns", tz="UTC")
#: Schema of ``ledger.parquet``, one row per strategy per bar.
LEDGER_SCHEMA = pa.schema(
    [
        ("strategy", pa.string()),
        ("timestamp", _TIMESTAMP),
        ("close", pa.float64()),
        ("target_position", pa.float64()),
        ("position_units", pa.float64()),
        ("exposure", pa.float64()),
        ("fill_units", pa.float64()),
        ("fill_price", pa.float64()),
        ("exit_units", pa.float64()),
        ("exit_price", pa.float64()),
        ("exit_reason", pa.string()),
        ("fees_usd", pa.float64()),
        ("financing_usd", pa.float64()),
        ("cash_usd", pa.float64()),
        ("equity_usd", pa.float64()),
        ("llm_cost_usd", pa.float64()),
        ("llm_calls", pa.int64()),
        ("abstain", pa.bool_()),
        ("risk_event", pa.string()),
    ]
)
#: Schema of ``decisions.parquet``, one row per decision.
DECISION_SCHEMA = pa.schema(
    [
        ("strategy", pa.string()),
        ("timestamp", _TIMESTAMP),
        ("action", pa.string()),
        ("target_position", pa.float64()),
        ("confidence", pa.float64()),
        ("abstain", pa.bool_()),
        ("reasoning", pa.string()),
        ("signals", pa.string()),
        ("llm_calls", pa.int64()),
    ]
)
#: Columns of ``ledger.parquet`` in order.
LEDGER_COLUMNS: tuple[str, ...] = tuple(LEDGER_SCHEMA.names)

#: Columns of ``llm_calls.parquet`` and their Arrow types.
LLM_CALL_COLUMNS: dict[str, pa.DataType] = {
    "strategy": pa.string(),
    "timestamp": pa.timestamp("ns", tz="UTC"),
    "role": pa.string(),
    "model_requested": pa.string(),
    "model_served": pa.string(),
    "provider": pa.string(),
    "prompt_tokens": pa.int64(),
    "cached_prompt_tokens": pa.int64(),
    "completion_tokens": pa.int64(),
    "cost_usd": pa.float64(),
    "spend_usd": pa.float64(),
    "cost_source": pa.string(),
    "cache": pa.string(),
    "fallback_from": pa.string(),
    "retries": pa.int64(),
    "error": pa.string(),
    "latency_ms": pa.float64(),
    "prompt_version": pa.string(),
    "finish_reason": pa.string(),
    "http_status": pa.int64(),
    "answer_error": pa.string(),
    "raw_answer": pa.string(),
}

#: Schema of ``llm_calls.parquet``.
LLM_CALL_SCHEMA = pa.schema([pa.field(c, t) for c, t in LLM_CALL_COLUMNS.items()])
if tuple(LLM_CALL_COLUMNS)[2:] != CALL_FIELDS:  # the replay keeps exactly these fields
    raise ImportError("backtest.engine.replay.CALL_FIELDS differs from LLM_CALL_COLUMNS")

_VERSIONED_PACKAGES = (
    "hybrid-backtest",
    "numpy",
    "pandas",
    "pyarrow",
    "gymnasium",
    "stable-baselines3",
    "torch",
    "openai",
    "exchange-calendars",
    "pydantic",
)


def _tables(
    tracks: dict[str, _Track], index: pd.DatetimeIndex, close: np.ndarray
) -> dict[str, pa.Table]:
    """``ledger``, ``decisions`` and ``llm_calls`` of the tracks over ``index``."""
    return {
        "ledger": _ledger_table(tracks, index, close),
        "decisions": _decisions_table(tracks, index),
        "llm_calls": _llm_calls_table(tracks, index),
    }


def _manifest(
    config: RunConfig,
    bars: Bars,
    index: pd.DatetimeIndex,
    *,
    run_id: str,
    data_sha: str,
    inputs: dict[str, str],
    strategy_seeds: dict[str, int],
    warnings: list[str],
    estimate: dict[str, Any],
    leakage: list[dict[str, Any]],
    reached_live: bool = False,
) -> dict[str, Any]:
    """What the run depended on (``manifest.json``), JSON-safe."""
    return _json_safe(
        {
            "run_id": run_id,
            "name": config.name,
            "config": json.loads(canonical_json(config)),
            "data": {
                "path": str(Path(config.data.file)),
                "sha256": data_sha,
                "symbol": bars.symbol,
                "frequency": bars.frequency,
                "calendar": bars.meta.calendar,
                "source": bars.meta.source,
                "rows_loaded": len(bars),
                "evaluated": [index[0].isoformat(), index[-1].isoformat()],
            },
            "inputs": inputs,
            "reached_live": reached_live,
            "seed": config.seed,
            "strategy_seeds": strategy_seeds,
            "versions": dict(_versions()),
            "git_revision": _git_revision(),
            "warnings": warnings,
            "llm_cost_estimate": estimate,
            "leakage": leakage,
        }
    )


@functools.lru_cache(maxsize=1)
def _git_revision() -> str | None:
    """The commit of the source tree this package runs from, read from .git (no subprocess)."""
    for folder in Path(__file__).resolve().parents:
        git = folder / ".git"
        if not git.is_dir():
            continue
        try:
            head = (git / "HEAD").read_text().strip()
            if not head.startswith("ref: "):
                return head or None
            ref = head[5:]
            if (git / ref).is_file():
                return (git / ref).read_text().strip() or None
            packed = git / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
        except OSError:
            return None
        return None
    return None


def _version(name: str) -> str | None:
    """``importlib.metadata.version(name)`` without parsing the whole metadata file as an
    e-mail message (that parse was ~1.4 ms a package, 14 ms of a run's first call): the
    ``Version:`` header is read from the header block directly."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return None
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    for line in (text or "").splitlines():
        if not line:  # end of the headers
            break
        if line.startswith("Version:"):
            return line[len("Version:") :].strip()
    return dist.version


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        versions[name] = _version(name)
    return versions


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _signals_json(decision: Decision) -> str:
    if not decision.signals:
        return ""
    return json.dumps(
        [
            {
                "agent": s.agent_name,
                "signal": s.signal,
                "confidence": s.confidence,
                "abstain": s.abstain,
                "features": dict(s.features),
                "reasoning": s.reasoning,
            }
            for s in decision.signals
        ],
        sort_keys=True,
        default=float,
    )


def _repeat(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int32)), pa.array([value])
    ).cast(pa.string())


def _floats(values: np.ndarray | list[float]) -> pa.Array:
    # NaN stays NaN (no fill price, HOLD target); it is not turned into null.
    return pa.array(values, type=pa.float64())


def _ledger_table(
    tracks: dict[str, _Track], index: pd.DatetimeIndex, close: np.ndarray
) -> pa.Table:
    ts = pa.array(index.asi8, type=pa.int64()).cast(_TIMESTAMP)
    closes = pa.array(close, type=pa.float64())
    parts = []
    for name, tr in tracks.items():
        n = len(index)
        parts.append(
            pa.Table.from_arrays(
                [
                    _repeat(name, n),
                    ts,
                    closes,
                    _floats(tr.target),
                    _floats(tr.units),
                    _floats(tr.exposure),
                    _floats(tr.fill_units),
                    _floats(tr.fill_price),
                    _floats(tr.exit_units),
                    _floats(tr.exit_price),
                    pa.array(tr.exit_reason, type=pa.string()),
                    _floats(tr.fees),
                    _floats(tr.financing),
                    _floats(tr.cash),
                    _floats(tr.equity),
                    _floats(tr.llm_cost),
                    pa.array(tr.llm_calls, type=pa.int64()),
                    pa.array(tr.abstain, type=pa.bool_()),
                    pa.array(tr.risk_event, type=pa.string()),
                ],
                schema=LEDGER_SCHEMA,
            )
        )
    return pa.concat_tables(parts)


def _decision_row(d: Decision) -> tuple[Any, ...]:
    target = math.nan if d.target_position is None else float(d.target_position)
    return (
        d.action,
        target,
        float(d.confidence),
        bool(d.abstain),
        d.reasoning,
        _signals_json(d),
    )


def _decisions_table(tracks: dict[str, _Track], index: pd.DatetimeIndex) -> pa.Table:
    parts = []
    for name, tr in tracks.items():
        ds = tr.decisions
        # Baselines hand back the same few Decision objects bar after bar: convert each once.
        seen: dict[int, tuple[Any, ...]] = {}
        rows = []
        for d in ds:
            row = seen.get(id(d))
            if row is None:
                row = seen[id(d)] = _decision_row(d)
            rows.append(row)
        columns = list(zip(*rows, strict=True)) if rows else [()] * 6
        n = len(ds)
        # The replay keeps a decision without its call objects and counts them per bar.
        columns.append(tr.llm_calls[:n].tolist())
        parts.append(
            pa.Table.from_arrays(
                [
                    _repeat(name, n),
                    pa.array(index.asi8[:n], type=pa.int64()).cast(_TIMESTAMP),
                    pa.array(columns[0], type=pa.string()),
                    pa.array(columns[1], type=pa.float64()),
                    pa.array(columns[2], type=pa.float64()),
                    pa.array(columns[3], type=pa.bool_()),
                    pa.array(columns[4], type=pa.string()),
                    pa.array(columns[5], type=pa.string()),
                    pa.array(columns[6], type=pa.int64()),
                ],
                schema=DECISION_SCHEMA,
            )
        )
    return pa.concat_tables(parts)


def _llm_calls_table(tracks: dict[str, _Track], index: pd.DatetimeIndex) -> pa.Table:
    # From the columns the replay kept (a run of 100,000 bars makes 400,000 calls: a dict
    # or an object per call would be the run's largest allocation).
    columns: dict[str, list[Any]] = {c: [] for c in LLM_CALL_COLUMNS}
    stamps: list[int] = []
    names: list[str] = []
    asi8 = index.asi8
    for name, tr in tracks.items():
        if not tr.call_bars:
            continue
        for field, values in tr.call_columns.items():
            columns[field] += values
        names += [name] * len(tr.call_bars)
        stamps += asi8[tr.call_bars].tolist()
    if not names:
        return LLM_CALL_SCHEMA.empty_table()
    columns["strategy"] = names
    arrays = [
        pa.array(stamps, type=pa.int64()).cast(_TIMESTAMP)
        if column == "timestamp"
        else pa.array(values, type=LLM_CALL_COLUMNS[column])
        for column, values in columns.items()
    ]
    return pa.Table.from_arrays(arrays, schema=LLM_CALL_SCHEMA)


def _pid_alive(text: str) -> bool:
    try:
        os.kill(int(text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _write_run_dir(
    run_dir: Path, tables: dict[str, pa.Table], summary: dict[str, Any], manifest: dict[str, Any]
) -> None:
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.parent.glob(f".{run_dir.name}.tmp-*"):
        # A writer that was killed mid-write left this; a live one is left alone.
        if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    staging = run_dir.with_name(f".{run_dir.name}.tmp-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        # The Parquet files are encoded and compressed concurrently (Arrow releases the GIL
        # while it writes), the JSON files meanwhile: the same bytes, less wall time.
        with ThreadPoolExecutor(max_workers=len(tables) or 1) as pool:
            pending = [
                pool.submit(pq.write_table, table, staging / f"{name}.parquet", compression="zstd")
                for name, table in tables.items()
            ]
            text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
            (staging / "summary.json").write_text(text)
            text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            (staging / "manifest.json").write_text(text)
            for done in pending:
                done.result()
        refuse_to_replace(run_dir)  # a live run's spend is never overwritten
        if run_dir.exists():
            shutil.rmtree(run_dir)
        staging.rename(run_dir)
    except BaseException:
        # Ctrl-C or a failure while writing: the staging folder goes, nothing half-written
        # is left (a killed writer's is cleared by the next write, above).
        shutil.rmtree(staging, ignore_errors=True)
        raise
