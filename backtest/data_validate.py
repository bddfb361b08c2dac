"""Every rule of the bar schema (:mod:`backtest.data`), checked on a frame in memory.

:func:`validate_bars` raises :class:`~backtest.errors.DataValidationError` on the first rule
broken, naming the file, the first offending row, the rule and the fix; the gap rule asks
:func:`backtest.calendars.find_gaps` which missing bars the trading calendar expected.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from backtest.calendars import find_gaps
from backtest.data_schema import (
    BAR_COLUMNS,
    DEFAULT_MAX_GAP,
    OPTIONAL_COLUMNS,
    column_suggestions,
)
from backtest.errors import DataValidationError

__all__ = ["validate_bars"]


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
        present = [str(c) for c in frame.columns]
        hints = column_suggestions(present, missing)
        raise DataValidationError(
            source,
            "missing_column",
            f"required column(s) {', '.join(missing)} not found "
            f"(columns present: {', '.join(present)})",
            (f"{'; '.join(hints)}: rename it. " if hints else "")
            + "The columns are timestamp, open, high, low, close, volume",
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
