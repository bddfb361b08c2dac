"""Reading a user's bar file (CSV, gzip, Parquet) and writing it as canonical Parquet.

:func:`read_bars_file` maps the source's columns and timestamps onto the schema of
:mod:`backtest.data`; :func:`write_bars` writes validated bars atomically with their
:class:`~backtest.data_schema.BarMeta`; :func:`import_bars` does both with validation between.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.calendars import infer_frequency, parse_frequency
from backtest.data_schema import (
    BAR_COLUMNS,
    DEFAULT_MAX_GAP,
    META_KEY,
    OPTIONAL_COLUMNS,
    BarMeta,
    Bars,
    _normalise_name,
    _safe_name,
    _to_utc_index,
    column_suggestions,
    file_sha256,
)
from backtest.data_validate import validate_bars
from backtest.errors import DataFormatError, DataValidationError

__all__ = ["import_bars", "read_bars_file", "write_bars"]


_TIMESTAMP_NAMES = ("timestamp", "date", "datetime", "time", "unnamed:_0", "")


def read_bars_file(
    path: str | Path,
    *,
    symbol: str | None = None,
    tz: str | None = None,
    ignore_columns: Sequence[str] = (),
) -> tuple[pd.DataFrame, dict[bytes, bytes]]:
    """Read a CSV (optionally gzipped) or Parquet file into a frame indexed by UTC timestamp.

    Column names are matched case-insensitively (``Adj Close`` is ``adj_close``; a ``Date``
    or unnamed first column is the timestamp). Integer columns become float64. A file with a
    ``symbol`` column must be filtered with ``symbol``. No row is dropped or reordered.

    Returns:
        The frame and the Parquet schema metadata (empty for CSV).

    Raises:
        DataFormatError: The file is missing, truncated or not a table.
        DataValidationError: Columns or timestamps break the schema.
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise DataFormatError(f"{source}: no such file. Fix: check the path.")
    metadata: dict[bytes, bytes] = {}
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() == ".parquet":
            table = pq.read_table(path)
            metadata = dict(table.schema.metadata or {})
            raw = table.to_pandas()
        elif suffixes.endswith((".csv", ".csv.gz", ".txt")):
            raw = pd.read_csv(path)
        else:
            raise DataFormatError(
                f"{source}: unsupported file type {path.suffix!r}. "
                "Fix: give a .csv, .csv.gz or .parquet file."
            )
    except (
        pa.ArrowException,
        OSError,
        UnicodeDecodeError,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
    ) as exc:
        raise DataFormatError(
            f"{source}: cannot be read as a table ({type(exc).__name__}: {exc}). "
            "Fix: the file may be truncated or not what its name says; re-export it."
        ) from exc
    if isinstance(raw.index, pd.DatetimeIndex):
        raw = raw.reset_index()
    raw.columns = [_normalise_name(c) for c in raw.columns]
    ignore = {_normalise_name(c) for c in ignore_columns}
    raw = raw.drop(columns=[c for c in raw.columns if c in ignore])
    time_cols = [c for c in raw.columns if c in _TIMESTAMP_NAMES]
    if not time_cols:
        raise DataValidationError(
            source,
            "missing_column",
            f"no timestamp column found (columns: {', '.join(raw.columns)})",
            "name the time column 'timestamp' (or 'date')",
        )
    if len(time_cols) > 1:
        raise DataValidationError(
            source,
            "ambiguous_timestamp",
            f"several columns could be the timestamp: {', '.join(time_cols)}",
            f"keep one, or pass --ignore-column {time_cols[1]}",
        )
    if "symbol" in raw.columns:
        symbols = pd.unique(raw["symbol"].astype("string"))
        if symbol is None and len(symbols) > 1:
            raise DataValidationError(
                source,
                "multiple_symbols",
                f"the file holds {len(symbols)} symbols ({', '.join(map(str, symbols[:5]))}...)",
                "pass --symbol to pick one; one instrument per dataset",
            )
        if symbol is not None:
            keep = (raw["symbol"].astype("string") == symbol).to_numpy()
            if not keep.any():
                raise DataValidationError(
                    source,
                    "symbol_not_found",
                    f"symbol {symbol!r} is not in the file "
                    f"(it has {', '.join(map(str, symbols[:5]))})",
                    "pass one of the symbols the file holds",
                )
            raw = raw.loc[keep]
        raw = raw.drop(columns=["symbol"])
    known = {*BAR_COLUMNS, *OPTIONAL_COLUMNS, time_cols[0]}
    extra = [c for c in raw.columns if c not in known]
    if extra:
        missing = [c for c in BAR_COLUMNS if c not in raw.columns]
        hints = column_suggestions(extra, missing)
        fix = (
            f"{'; '.join(hints)}: rename it in the file (the bar columns are "
            f"{', '.join(BAR_COLUMNS)}), or pass --ignore-column NAME for a column to leave out"
            if hints
            else "remove them, or pass --ignore-column NAME for each (nothing is dropped silently)"
        )
        raise DataValidationError(
            source,
            "unknown_column",
            f"column(s) {', '.join(extra)} are not part of the bar schema"
            + (
                f" and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
                if missing
                else ""
            ),
            fix,
        )
    index = _to_utc_index(raw[time_cols[0]], source=source, tz=tz)
    frame = raw.drop(columns=[time_cols[0]])
    frame.index = index
    frame.index.name = "timestamp"
    for column in frame.columns:
        if pd.api.types.is_integer_dtype(frame[column].dtype) or pd.api.types.is_float_dtype(
            frame[column].dtype
        ):
            frame[column] = frame[column].astype(np.float64)
    ordered = [c for c in (*BAR_COLUMNS, *OPTIONAL_COLUMNS) if c in frame.columns]
    return frame[ordered], metadata


def _bars_table(frame: pd.DataFrame, meta: BarMeta) -> pa.Table:
    columns = [c for c in (*BAR_COLUMNS, *OPTIONAL_COLUMNS) if c in frame.columns]
    arrays = [pa.array(frame.index.as_unit("ns"), type=pa.timestamp("ns", tz="UTC"))]
    arrays += [pa.array(frame[c].to_numpy(dtype=np.float64), type=pa.float64()) for c in columns]
    schema = pa.schema(
        [pa.field("timestamp", pa.timestamp("ns", tz="UTC"), nullable=False)]
        + [pa.field(c, pa.float64(), nullable=False) for c in columns],
        metadata={META_KEY: meta.to_json()},
    )
    return pa.Table.from_arrays(arrays, schema=schema)


def write_bars(frame: pd.DataFrame, path: str | Path, meta: BarMeta) -> Path:
    """Validate bars and write them as canonical Parquet (byte-identical for identical input).

    The file is written beside its destination and renamed into place, so a crash never
    leaves a half-written dataset.
    """
    path = Path(path)
    validate_bars(
        frame, source=str(path), frequency=meta.frequency, calendar=meta.calendar, max_gap=None
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(_bars_table(frame, meta), tmp, compression="zstd")
    tmp.replace(path)
    return path


def import_bars(
    path: str | Path,
    *,
    symbol: str,
    dest: str | Path = "data",
    tz: str | None = None,
    frequency: str | None = None,
    calendar: str | None = None,
    max_gap: pd.Timedelta | None = DEFAULT_MAX_GAP,
    ignore_columns: Sequence[str] = (),
    source: str | None = None,
    notes: str = "",
) -> tuple[Path, Bars]:
    """Read a user's CSV or Parquet file, validate it and write ``DEST/SYMBOL.parquet``.

    Returns:
        The path written and the bars as stored (unadjusted).
    """
    frame, _ = read_bars_file(path, symbol=symbol, tz=tz, ignore_columns=ignore_columns)
    src = str(path)
    freq = (
        parse_frequency(frequency, source=src)
        if frequency
        else infer_frequency(frame.index, source=src)
    )
    validate_bars(frame, source=src, frequency=freq, calendar=calendar, max_gap=max_gap)
    from backtest.metrics import periods_per_year

    meta = BarMeta(
        symbol=symbol,
        frequency=freq,
        calendar=calendar,
        source=source or src,
        source_sha256=file_sha256(path),
        source_timezone=tz or "UTC",
        notes=notes,
        periods_per_year=periods_per_year(freq, calendar, frame.index),
    )
    out = write_bars(frame, Path(dest) / f"{_safe_name(symbol)}.parquet", meta)
    return out, Bars(frame=frame, meta=meta, path=str(out))
