"""Loading canonical bar Parquet (a file or a directory of symbols) back into :class:`Bars`.

:func:`load_bars` checks the stored types and metadata, reads only the requested time range
and applies the corporate-action rule of :mod:`backtest.data`; :func:`describe` summarises a
dataset (rows, range, gaps, off-calendar bars) for ``backtest data info``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from backtest.calendars import Gap, find_gaps
from backtest.data_schema import (
    BAR_COLUMNS,
    DEFAULT_MAX_GAP,
    META_KEY,
    OPTIONAL_COLUMNS,
    BarMeta,
    Bars,
    _safe_name,
    _utc,
)
from backtest.data_validate import validate_bars
from backtest.errors import DataFormatError, DataValidationError

__all__ = ["DataInfo", "adjust_for_corporate_actions", "describe", "load_bars"]


def _parquet_files(path: Path, symbol: str | None) -> tuple[Path | list[str], str]:
    if path.is_file():
        return path, str(path)
    if not path.is_dir():
        raise DataFormatError(
            f"{path}: no such file or directory. Fix: run "
            "`backtest data samples` or `backtest data import` first."
        )
    if symbol is not None:
        for candidate in (path / f"{_safe_name(symbol)}.parquet", path / _safe_name(symbol)):
            if candidate.exists():
                return _parquet_files(candidate, None)
    files = sorted(str(p) for p in path.rglob("*.parquet"))
    if not files:
        raise DataFormatError(
            f"{path}: the directory holds no .parquet files. Fix: point at a "
            "dataset written by `backtest data import`."
        )
    return files, str(path)


def _check_stored_types(schema: pa.Schema, source: str) -> None:
    """Refuse a stored file whose columns have the wrong Arrow types (nothing is cast)."""
    if "timestamp" in schema.names:
        ts_type = schema.field("timestamp").type
        if not pa.types.is_timestamp(ts_type):
            raise DataValidationError(
                source,
                "timestamp_type",
                f"the timestamp column is stored as {ts_type}, not as a timestamp (text with "
                "mixed UTC offsets, or epoch numbers, end up like this)",
                "re-import the source with `backtest data import FILE --symbol SYM --tz ZONE`",
            )
        if ts_type.tz is None:
            raise DataValidationError(
                source,
                "naive_timestamp",
                f"the timestamp column is {ts_type}, with no time zone",
                "re-import with `backtest data import FILE --symbol SYM --tz ZONE`",
            )
    for column in (*BAR_COLUMNS, *OPTIONAL_COLUMNS):
        if column not in schema.names:
            continue
        kind = schema.field(column).type
        if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
            raise DataValidationError(
                source,
                "column_type",
                f"column {column!r} is stored as {kind}, not as numbers",
                f"store {column!r} as float64 (re-import the source with "
                "`backtest data import`, which parses and checks it)",
            )


def _check_one_symbol(dataset: pads.Dataset, source: str) -> None:
    symbols = pc.unique(dataset.to_table(columns=["symbol"]).column("symbol")).to_pylist()
    if len(symbols) > 1:
        shown = ", ".join(map(str, symbols[:5]))
        raise DataValidationError(
            source,
            "multiple_symbols",
            f"the file holds {len(symbols)} symbols ({shown}); bars of different "
            "instruments would be read as one series",
            "write one file per symbol: `backtest data import FILE --symbol SYM` picks one",
        )


def load_bars(
    path: str | Path,
    *,
    symbol: str | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    adjust: bool = True,
    max_gap: pd.Timedelta | None = DEFAULT_MAX_GAP,
) -> Bars:
    """Load validated bars from a Parquet file or a directory of Parquet files.

    A directory is read through :mod:`pyarrow.dataset` (one file per symbol, or one
    symbol's files partitioned by year, hive style ``year=2019``), projecting only the bar
    columns and pushing the ``[start, end]`` time range down to the files, so a large
    history need not fit in memory to take a slice of it.

    Args:
        path: A ``.parquet`` file or a directory of them.
        symbol: Pick ``SYMBOL.parquet`` (or a ``SYMBOL/`` sub-directory) inside a directory.
        start: First timestamp to keep (inclusive, UTC when naive).
        end: Last timestamp to keep (inclusive, UTC when naive).
        adjust: Apply the corporate-action rule when ``adj_close`` is present.
        max_gap: See :func:`validate_bars`.

    Raises:
        DataFormatError: The file cannot be read or carries no metadata.
        DataValidationError: The bars break a schema rule.
    """
    target, source = _parquet_files(Path(path), symbol)
    try:
        dataset = pads.dataset(target, format="parquet", partitioning="hive")
        names = [
            c for c in ("timestamp", *BAR_COLUMNS, *OPTIONAL_COLUMNS) if c in dataset.schema.names
        ]
        # Types first: a time filter on a naive timestamp fails inside Arrow with a message
        # about kernels, and a string or bool column would be silently cast to float below.
        _check_stored_types(dataset.schema, source)
        if "symbol" in dataset.schema.names:
            _check_one_symbol(dataset, source)
        condition = None
        if start is not None:
            condition = pads.field("timestamp") >= _utc(start)
        if end is not None:
            upper = pads.field("timestamp") <= _utc(end)
            condition = upper if condition is None else condition & upper
        table = dataset.to_table(columns=names, filter=condition)
        first_file = target if isinstance(target, Path) else Path(target[0])
        metadata = pq.read_schema(first_file).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(
            f"{source}: cannot be read as Parquet ({type(exc).__name__}: {exc}). "
            "Fix: the file may be truncated; re-import it with `backtest data import`."
        ) from exc
    if META_KEY not in metadata:
        raise DataFormatError(
            f"{source}: no hybrid_backtest metadata (symbol, frequency) in the Parquet schema. "
            "Fix: bring the file in with `backtest data import FILE --symbol SYM`."
        )
    meta = BarMeta.from_json(metadata[META_KEY], path=source)
    if "timestamp" not in names:
        raise DataValidationError(
            source,
            "missing_column",
            "no timestamp column",
            "re-import the file with `backtest data import`",
        )
    ts_type = dataset.schema.field("timestamp").type
    if not pa.types.is_timestamp(ts_type) or ts_type.tz is None:
        raise DataValidationError(
            source,
            "naive_timestamp",
            f"timestamp column is {ts_type}, not a UTC timestamp",
            "re-import with `backtest data import FILE --tz ZONE`",
        )
    if isinstance(target, list) and len(target) > 1:
        # Files of one dataset may come back in any order; sort by time, then check uniqueness.
        table = table.sort_by("timestamp")
    index = pd.DatetimeIndex(table.column("timestamp").to_pandas(), name="timestamp")
    columns = {
        name: table.column(name).to_numpy().astype(np.float64, copy=False)
        for name in names
        if name != "timestamp"
    }
    frame = pd.DataFrame(columns, index=index.tz_convert("UTC").as_unit("ns"), copy=False)
    validate_bars(
        frame, source=source, frequency=meta.frequency, calendar=meta.calendar, max_gap=max_gap
    )
    if adjust and "adj_close" in frame.columns:
        frame = adjust_for_corporate_actions(frame)
    return Bars(frame=frame, meta=meta, path=source)


def adjust_for_corporate_actions(frame: pd.DataFrame) -> pd.DataFrame:
    """Apply the corporate-action rule of :mod:`backtest.data`'s docstring; return a new frame."""
    factor = frame["adj_close"].to_numpy() / frame["close"].to_numpy()
    columns = {c: frame[c].to_numpy() * factor for c in ("open", "high", "low", "close")}
    columns["volume"] = frame["volume"].to_numpy() / factor
    columns["adj_factor"] = factor
    return pd.DataFrame(columns, index=frame.index, copy=False)


@dataclass(frozen=True, slots=True)
class DataInfo:
    """Summary of a bar dataset, as ``backtest data info`` prints it."""

    path: str
    meta: BarMeta
    rows: int
    first: pd.Timestamp
    last: pd.Timestamp
    gaps: list[Gap] = field(default_factory=list)
    off_calendar_bars: int = 0
    adjusted: bool = False


def describe(path: str | Path, *, symbol: str | None = None) -> DataInfo:
    """Load a dataset (gap rule off) and summarise it: rows, range, frequency and gaps."""
    bars = load_bars(path, symbol=symbol, adjust=False, max_gap=None)
    index = bars.frame.index
    gaps, off = find_gaps(index, bars.frequency, bars.meta.calendar)
    return DataInfo(
        path=bars.path,
        meta=bars.meta,
        rows=len(bars),
        first=index[0],
        last=index[-1],
        gaps=gaps,
        off_calendar_bars=off,
        adjusted="adj_close" in bars.frame.columns,
    )
