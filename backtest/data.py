"""Market bars and point-in-time text: schema, validation, import, loading and splits.

The canonical bar schema, as stored in Parquet and as held in memory:

============== ======================= ==============================================
column         type                    rule
============== ======================= ==============================================
``timestamp``  timestamp[ns, UTC]      strictly increasing, unique; the bar's open
                                       (intraday) or its session date (daily)
``open``       float64                 finite, > 0
``high``       float64                 finite, >= max(open, close)
``low``        float64                 finite, <= min(open, close), > 0
``close``      float64                 finite, > 0
``volume``     float64                 finite, >= 0
``adj_close``  float64 (optional)      finite, > 0; close adjusted for splits and
                                       dividends
============== ======================= ==============================================

In memory the timestamp is the frame's index. The Parquet file's schema metadata
(key ``hybrid_backtest``) holds the symbol, bar frequency, trading calendar, source and
the sha256 of the source file.

Corporate actions, one rule: when ``adj_close`` is present, :func:`load_bars` multiplies
open, high, low and close by ``adj_factor = adj_close / close`` and divides volume by it
(so dollar volume is unchanged). Features, fills and the buy-and-hold benchmark then all
see the same total-return series: a split never looks like a crash and dividends are not
lost. The S&P 500 and NASDAQ samples are price indices: they stand in for a fund that
tracks the index, and they contain no dividends.

Point-in-time text (news, documents) has ``available_at`` (UTC, when the text could first
be read), ``headline`` and/or ``text``, and ``source``. A decision at time *t* sees an item
only if ``available_at <= t`` (:meth:`TextFeed.visible`).

Nothing is silently dropped or reordered: bad data raises
:class:`~backtest.errors.DataValidationError` naming the file, the first offending row,
the rule and the fix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from backtest.calendars import Gap, find_gaps, infer_frequency, parse_frequency
from backtest.errors import ConfigError, DataFormatError, DataValidationError

__all__ = [
    "BAR_COLUMNS",
    "DEFAULT_MAX_GAP",
    "BarMeta",
    "Bars",
    "DataInfo",
    "Fold",
    "Split",
    "TextFeed",
    "adjust_for_corporate_actions",
    "describe",
    "file_sha256",
    "import_bars",
    "import_text",
    "load_bars",
    "load_text",
    "read_bars_file",
    "split_by_date",
    "validate_bars",
    "walk_forward_folds",
    "write_bars",
]

BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: tuple[str, ...] = ("adj_close",)
META_KEY = b"hybrid_backtest"
#: Default longest wall-clock span a run of missing expected bars may cover.
DEFAULT_MAX_GAP = pd.Timedelta(days=7)

_TIMESTAMP_NAMES = ("timestamp", "date", "datetime", "time", "unnamed:_0", "")
_TEXT_KINDS = ("news", "documents")


def file_sha256(path: str | Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class BarMeta:
    """What a bar file says about itself.

    Attributes:
        symbol: Instrument symbol, e.g. ``"SP500"``.
        frequency: Canonical bar frequency (see :data:`backtest.calendars.FREQUENCIES`).
        calendar: Trading calendar name (``"XNYS"``, ``"FX"``, ``"24/7"``) or ``None``.
        source: Where the data came from (a package file, a user's path).
        source_sha256: sha256 of the source file's bytes.
        source_timezone: Time zone the source's naive timestamps were read in.
        notes: Free text carried into reports (e.g. "price index, no dividends").
        periods_per_year: Bars per year under the calendar, computed once at import
            (see :func:`backtest.metrics.periods_per_year`) so runs need not rebuild the
            calendar; None in files written before it was recorded.
    """

    symbol: str
    frequency: str
    calendar: str | None = None
    source: str = ""
    source_sha256: str = ""
    source_timezone: str = "UTC"
    notes: str = ""
    periods_per_year: float | None = None

    def to_json(self) -> bytes:
        """Serialise to the canonical JSON stored in the Parquet schema metadata."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, *, path: str) -> BarMeta:
        """Parse the metadata written by :meth:`to_json`."""
        try:
            data = json.loads(raw)
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise DataFormatError(
                f"{path}: the hybrid_backtest metadata in the Parquet schema is damaged ({exc}). "
                "Fix: re-import the source with `backtest data import`."
            ) from exc


@dataclass(frozen=True, slots=True)
class Bars:
    """Validated bars of one instrument, with their metadata.

    Attributes:
        frame: float64 columns indexed by a UTC ``timestamp`` index. When the source had
            ``adj_close`` and the bars were adjusted, an ``adj_factor`` column records the
            factor applied to each bar.
        meta: The file's metadata.
        path: The file or directory the bars were read from, if any.
    """

    frame: pd.DataFrame
    meta: BarMeta
    path: str = ""

    @property
    def symbol(self) -> str:
        """The instrument symbol."""
        return self.meta.symbol

    @property
    def frequency(self) -> str:
        """The canonical bar frequency."""
        return self.meta.frequency

    def __len__(self) -> int:
        return len(self.frame)


# --------------------------------------------------------------------------- validation


def _first_row(frame: pd.DataFrame, mask: np.ndarray) -> tuple[object, int]:
    positions = np.flatnonzero(mask)
    return frame.index[positions[0]], len(positions)


def validate_bars(
    frame: pd.DataFrame,
    *,
    source: str,
    frequency: str | None = None,
    calendar: str | None = None,
    max_gap: pd.Timedelta | None = DEFAULT_MAX_GAP,
) -> None:
    """Check bars against every rule of the schema; raise on the first rule broken.

    Args:
        frame: Bars indexed by timestamp, as :func:`read_bars_file` returns them.
        source: Name of the file the bars came from, for messages.
        frequency: Bar frequency; required for the gap rule.
        calendar: Trading calendar used to tell a gap from a market holiday.
        max_gap: Longest wall-clock span a run of missing expected bars may cover;
            ``None`` turns the gap rule off.

    Raises:
        DataValidationError: Naming the file, the first offending row, the rule and the fix.
    """
    if len(frame) == 0:
        raise DataValidationError(
            source, "empty", "the file holds no bars", "point at a file with at least one bar"
        )
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise DataValidationError(
            source,
            "missing_column",
            f"required column(s) {', '.join(missing)} not found "
            f"(columns present: {', '.join(map(str, frame.columns))})",
            "rename the columns to timestamp, open, high, low, close, volume",
        )
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex):
        raise DataValidationError(
            source,
            "timestamp_type",
            f"timestamps are {index.dtype}, not datetimes",
            "store the timestamp column as a datetime",
        )
    if index.tz is None:
        raise DataValidationError(
            source,
            "naive_timestamp",
            "timestamps have no time zone",
            "import with --tz NAME (e.g. --tz America/New_York) so they can be converted to UTC",
        )
    if index.hasnans:
        row, count = _first_row(frame, np.asarray(index.isna()))
        raise DataValidationError(
            source,
            "missing_timestamp",
            "a timestamp is missing (NaT)",
            "remove or fill the rows without a timestamp",
            row=row,
            count=count,
        )
    ts = index.as_unit("ns").asi8
    steps = np.diff(ts)
    if (steps == 0).any():
        row, count = _first_row(frame.iloc[1:], steps == 0)
        raise DataValidationError(
            source,
            "duplicate_timestamp",
            "the same timestamp appears twice",
            "keep one bar per timestamp (check for a file concatenated twice, or several "
            "symbols in one file: pass --symbol)",
            row=row,
            count=count,
        )
    if (steps < 0).any():
        row, count = _first_row(frame.iloc[1:], steps < 0)
        raise DataValidationError(
            source,
            "unsorted_timestamp",
            "timestamps go backwards",
            "sort the file by timestamp before importing (nothing is reordered for you)",
            row=row,
            count=count,
        )
    for column in (*BAR_COLUMNS, *[c for c in OPTIONAL_COLUMNS if c in frame.columns]):
        if not pd.api.types.is_numeric_dtype(frame[column].dtype) or pd.api.types.is_bool_dtype(
            frame[column].dtype
        ):
            raise DataValidationError(
                source,
                "column_type",
                f"column {column!r} holds {frame[column].dtype}, not numbers",
                f"make {column!r} numeric (strip thousands separators, currency signs, text)",
            )
    values = {
        c: frame[c].to_numpy(dtype=np.float64)
        for c in frame.columns
        if c in (*BAR_COLUMNS, *OPTIONAL_COLUMNS)
    }
    for column, arr in values.items():
        bad = ~np.isfinite(arr)
        if bad.any():
            row, count = _first_row(frame, bad)
            raise DataValidationError(
                source,
                "not_finite",
                f"column {column!r} has a NaN or infinite value",
                "fill or remove those rows in the source (df.dropna()); nothing is dropped for you",
                row=row,
                count=count,
            )
    for column in ("open", "high", "low", "close", *[c for c in OPTIONAL_COLUMNS if c in values]):
        bad = values[column] <= 0
        if bad.any():
            row, count = _first_row(frame, bad)
            raise DataValidationError(
                source,
                "non_positive_price",
                f"{column!r} is zero or negative",
                "prices must be > 0; check the source for bad ticks",
                row=row,
                count=count,
            )
    body_top = np.maximum(values["open"], values["close"])
    body_bottom = np.minimum(values["open"], values["close"])
    bad = values["high"] < body_top
    if bad.any():
        row, count = _first_row(frame, bad)
        raise DataValidationError(
            source,
            "high_below_body",
            "high is below max(open, close)",
            "check the column order (open, high, low, close) and bad ticks",
            row=row,
            count=count,
        )
    bad = values["low"] > body_bottom
    if bad.any():
        row, count = _first_row(frame, bad)
        raise DataValidationError(
            source,
            "low_above_body",
            "low is above min(open, close)",
            "check the column order (open, high, low, close) and bad ticks",
            row=row,
            count=count,
        )
    bad = values["volume"] < 0
    if bad.any():
        row, count = _first_row(frame, bad)
        raise DataValidationError(
            source,
            "negative_volume",
            "volume is negative",
            "volume must be >= 0 (use 0 where the source has none)",
            row=row,
            count=count,
        )
    if (
        frequency is not None
        and max_gap is not None
        and len(frame) > 1
        # A gap spans two consecutive bars: none can exceed max_gap if no step does, and
        # then the calendar (slow to build) need not be consulted.
        and int(steps.max()) > max_gap.value
    ):
        gaps, _ = find_gaps(index, frequency, calendar)
        too_long = [g for g in gaps if g.span > max_gap]
        if too_long:
            gap = max(too_long, key=lambda g: g.span)
            raise DataValidationError(
                source,
                "gap",
                f"{gap.missing_bars} expected bar(s) missing between {gap.after} and {gap.before} "
                f"({gap.span}, longer than the allowed {max_gap}"
                f"{'' if calendar else '; no trading calendar is set'})",
                "fill the gap, split the data around it, set the right --calendar, or allow "
                "it with --max-gap (e.g. --max-gap 30D)",
                row=gap.after,
                count=len(too_long),
            )


# ------------------------------------------------------------------------------ reading


def _normalise_name(name: object) -> str:
    return str(name).strip().lower().replace(" ", "_")


def _to_utc_index(raw: pd.Series | pd.Index, *, source: str, tz: str | None) -> pd.DatetimeIndex:
    """Parse timestamps into a UTC index; naive ones need ``tz`` unless they are plain dates."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw.dtype):
        index = pd.DatetimeIndex(raw)
    else:
        text = pd.Series(raw).astype("string")
        offsets = text.str.extract(r"([+-]\d{2}:?\d{2}|Z)$", expand=False)
        distinct = offsets.dropna().unique()
        if len(distinct) > 1 or (len(distinct) == 1 and offsets.isna().any()):
            bad = np.flatnonzero((offsets != offsets.dropna().iloc[0]).fillna(True).to_numpy())
            raise DataValidationError(
                source,
                "mixed_timezone",
                f"timestamps carry different UTC offsets ({', '.join(map(str, distinct[:4]))})",
                "write every timestamp in one zone, or convert them all to UTC first",
                row=str(text.iloc[bad[0]]),
                count=len(bad),
            )
        try:
            parsed = pd.to_datetime(text, utc=len(distinct) == 1, format="mixed")
        except (ValueError, TypeError, OverflowError) as exc:
            raise DataValidationError(
                source,
                "timestamp_type",
                f"cannot parse timestamps ({exc})",
                "write timestamps as ISO 8601, e.g. 2019-01-02 or 2019-01-02T14:30:00Z",
            ) from exc
        index = pd.DatetimeIndex(parsed)
    if index.hasnans:
        first = int(np.flatnonzero(np.asarray(index.isna()))[0])
        raise DataValidationError(
            source,
            "missing_timestamp",
            "a timestamp is missing or empty",
            "remove or fill the rows without a timestamp",
            row=f"position {first}",
        )
    if index.tz is None:
        plain_dates = bool((index.normalize() == index).all())
        if tz is None and not plain_dates:
            raise DataValidationError(
                source,
                "naive_timestamp",
                "timestamps have a time of day but no time zone",
                "pass --tz with the zone they were written in (e.g. --tz UTC or "
                "--tz America/New_York)",
            )
        # Plain dates are session labels: they mean the same day whatever the zone.
        index = index.tz_localize("UTC" if plain_dates else tz)
    return index.tz_convert("UTC").as_unit("ns")


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
        raise DataValidationError(
            source,
            "unknown_column",
            f"column(s) {', '.join(extra)} are not part of the bar schema",
            "remove them, or pass --ignore-column NAME for each (nothing is dropped silently)",
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


def _safe_name(symbol: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in symbol)
    if not cleaned or cleaned.startswith("."):
        raise ConfigError(f"symbol {symbol!r} cannot name a file. Fix: use letters, digits, - _ .")
    return cleaned


# ------------------------------------------------------------------------------ loading


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
    """Apply the corporate-action rule of this module's docstring; return a new frame."""
    factor = frame["adj_close"].to_numpy() / frame["close"].to_numpy()
    columns = {c: frame[c].to_numpy() * factor for c in ("open", "high", "low", "close")}
    columns["volume"] = frame["volume"].to_numpy() / factor
    columns["adj_factor"] = factor
    return pd.DataFrame(columns, index=frame.index, copy=False)


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")).as_unit("ns")


# ------------------------------------------------------------------------------ info


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


# ------------------------------------------------------------------------------ text


TEXT_COLUMNS: tuple[str, ...] = ("available_at", "headline", "text", "source")


@dataclass(frozen=True, slots=True)
class TextFeed:
    """Point-in-time news or documents, sorted by ``available_at``.

    Attributes:
        frame: Columns ``available_at`` (UTC), ``headline``, ``text``, ``source`` and any
            extra columns of the source, sorted by ``available_at`` (stable).
        kind: ``"news"`` or ``"documents"``.
    """

    frame: pd.DataFrame
    kind: str = "news"
    _available_ns: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "_available_ns",
            pd.DatetimeIndex(self.frame["available_at"]).as_unit("ns").asi8.copy(),
        )

    def visible(self, decision_time: pd.Timestamp | int, limit: int | None = None) -> pd.DataFrame:
        """Items whose ``available_at`` is no later than ``decision_time`` (newest last).

        Args:
            decision_time: A UTC timestamp or int64 UTC nanoseconds.
            limit: Keep only the newest ``limit`` items.
        """
        t = (
            decision_time
            if isinstance(decision_time, int | np.integer)
            else _utc(decision_time).value
        )
        stop = int(np.searchsorted(self._available_ns, t, side="right"))
        begin = 0 if limit is None else max(0, stop - limit)
        return self.frame.iloc[begin:stop]


def import_text(
    path: str | Path,
    *,
    kind: Literal["news", "documents"],
    dest: str | Path = "data",
    tz: str | None = None,
) -> tuple[Path, TextFeed, int]:
    """Validate news or documents and write ``DEST/news.parquet`` or ``DEST/documents.parquet``.

    Items are sorted by ``available_at`` with a stable sort (their order in the source
    carries no meaning); the number of items that moved is returned so the caller can say so.

    Returns:
        The path written, the feed, and how many items changed position when sorted.
    """
    if kind not in _TEXT_KINDS:
        raise ConfigError(f"text kind {kind!r} is unknown. Fix: use 'news' or 'documents'.")
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise DataFormatError(f"{source}: no such file. Fix: check the path.")
    try:
        raw = (
            pq.read_table(path).to_pandas()
            if path.suffix.lower() == ".parquet"
            else pd.read_csv(path, dtype_backend="pyarrow")
        )
    except (
        pa.ArrowException,
        OSError,
        UnicodeDecodeError,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
    ) as exc:
        raise DataFormatError(
            f"{source}: cannot be read as a table ({exc}). "
            "Fix: re-export the file as CSV or Parquet."
        ) from exc
    raw.columns = [_normalise_name(c) for c in raw.columns]
    if len(raw) == 0:
        raise DataValidationError(
            source, "empty", f"the file holds no {kind}", "point at a file with at least one item"
        )
    if "available_at" not in raw.columns:
        raise DataValidationError(
            source,
            "missing_column",
            "no 'available_at' column",
            "add available_at: the time the text could first be read (not the event time)",
        )
    if "headline" not in raw.columns and "text" not in raw.columns:
        raise DataValidationError(
            source,
            "missing_column",
            "neither 'headline' nor 'text' found",
            "add a headline or text column",
        )
    for column in ("headline", "text", "source"):
        if column not in raw.columns:
            raw[column] = ""
        raw[column] = raw[column].astype("string").fillna("")
    empty = ((raw["headline"].str.strip() == "") & (raw["text"].str.strip() == "")).to_numpy()
    if empty.any():
        first = int(np.flatnonzero(empty)[0])
        raise DataValidationError(
            source,
            "empty_text",
            "an item has neither headline nor text",
            "remove it or fill it in",
            row=f"position {first}",
            count=int(empty.sum()),
        )
    available = _to_utc_index(raw["available_at"], source=source, tz=tz)
    raw["available_at"] = available
    order = np.argsort(available.asi8, kind="stable")
    moved = int((order != np.arange(len(order))).sum())
    frame = raw.iloc[order].reset_index(drop=True)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{kind}.parquet"
    tmp = out.with_name(out.name + ".tmp")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {
        META_KEY: json.dumps(
            {"kind": kind, "source": source, "source_sha256": file_sha256(path)}, sort_keys=True
        ).encode()
    }
    pq.write_table(
        table.replace_schema_metadata({**(table.schema.metadata or {}), **meta}),
        tmp,
        compression="zstd",
    )
    tmp.replace(out)
    return out, TextFeed(frame=frame, kind=kind), moved


def load_text(path: str | Path, *, kind: str = "news") -> TextFeed:
    """Load a ``news.parquet`` or ``documents.parquet`` written by :func:`import_text`."""
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(
            f"{path}: cannot be read as Parquet ({exc}). "
            f"Fix: re-import it with `backtest data import-{kind}`."
        ) from exc
    available = pd.DatetimeIndex(frame["available_at"])
    if available.tz is None or not available.is_monotonic_increasing:
        raise DataValidationError(
            str(path),
            "unsorted_timestamp",
            "available_at is not UTC and sorted",
            f"re-import it with `backtest data import-{kind}`",
        )
    return TextFeed(frame=frame, kind=kind)


# ------------------------------------------------------------------------------ splits


@dataclass(frozen=True, slots=True)
class Split:
    """Train / validation / test as positional slices into one bar index."""

    train: slice
    validation: slice
    test: slice

    def sizes(self) -> tuple[int, int, int]:
        """Number of bars in each part."""
        return tuple(s.stop - s.start for s in (self.train, self.validation, self.test))  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Fold:
    """One walk-forward fold: fit on ``train``, evaluate on ``test`` (positional slices)."""

    train: slice
    test: slice


def split_by_date(
    index: pd.DatetimeIndex,
    *,
    train_end: str | pd.Timestamp,
    validation_end: str | pd.Timestamp,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> Split:
    """Split bars at two dates: train ``[start, train_end)``, validation
    ``[train_end, validation_end)``, test ``[validation_end, end]``.

    Raises:
        ConfigError: The dates are out of order or leave a part empty.
    """
    ns = index.as_unit("ns").asi8
    lo = 0 if start is None else int(np.searchsorted(ns, _utc(start).value, side="left"))
    hi = len(ns) if end is None else int(np.searchsorted(ns, _utc(end).value, side="right"))
    a = int(np.searchsorted(ns, _utc(train_end).value, side="left"))
    b = int(np.searchsorted(ns, _utc(validation_end).value, side="left"))
    if _utc(train_end) >= _utc(validation_end):
        raise ConfigError(
            f"splits.train_end ({train_end}) must be before splits.validation_end "
            f"({validation_end}). Fix: swap or correct the dates."
        )
    a, b = min(max(a, lo), hi), min(max(b, lo), hi)
    split = Split(train=slice(lo, a), validation=slice(a, b), test=slice(b, hi))
    for name, size in zip(("train", "validation", "test"), split.sizes(), strict=True):
        if size <= 0:
            raise ConfigError(
                f"splits: the {name} part is empty (data runs {index[0]} to {index[-1]}; "
                f"train_end={train_end}, validation_end={validation_end}). "
                "Fix: choose dates inside the data's range."
            )
    return split


def walk_forward_folds(
    n_bars: int,
    *,
    n_folds: int,
    test_size: int,
    train_size: int | None = None,
    gap: int = 0,
) -> list[Fold]:
    """Walk-forward folds that end at the last bar, each test block after its train block.

    Args:
        n_bars: Number of bars available.
        n_folds: Number of folds.
        test_size: Bars in each test block; test blocks are consecutive and disjoint.
        train_size: Bars in each train block (rolling window); ``None`` for an expanding
            window that starts at bar 0.
        gap: Bars left out between each train block and its test block (purging).

    Raises:
        ConfigError: The folds do not fit in ``n_bars``.
    """
    if n_folds < 1 or test_size < 1 or gap < 0 or (train_size is not None and train_size < 1):
        raise ConfigError(
            "walk_forward: n_folds and test_size must be >= 1, gap >= 0 and "
            "train_size >= 1. Fix: correct the splits.walk_forward values."
        )
    first_test = n_bars - n_folds * test_size
    min_train = train_size if train_size is not None else 1
    if first_test - gap < min_train:
        raise ConfigError(
            f"walk_forward: {n_folds} folds of {test_size} test bars (+{gap} gap, "
            f"{train_size or 'at least 1'} train bars) need more than the {n_bars} bars "
            "available. Fix: use fewer or smaller folds."
        )
    folds = []
    for k in range(n_folds):
        test_start = first_test + k * test_size
        train_stop = test_start - gap
        train_start = 0 if train_size is None else train_stop - train_size
        folds.append(
            Fold(
                train=slice(train_start, train_stop), test=slice(test_start, test_start + test_size)
            )
        )
    return folds
