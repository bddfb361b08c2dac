"""Trading calendars: which bars a market should have and when each bar closes.

A bar's ``timestamp`` is the time it opens (intraday) or the session's date at
00:00 UTC (daily and weekly bars, as exchanges and data vendors label them). What a
decision at a bar may see is bounded by that bar's *close time*, which this module
derives from the calendar:

========== =========================================================================
calendar   meaning
========== =========================================================================
``XNYS``…  any exchange known to ``exchange_calendars`` (sessions, holidays, early
           closes); a daily bar closes at its session's close.
``FX``     24x5 foreign exchange: closed from Friday 17:00 to Sunday 17:00 New York
           time; a daily bar labelled D closes at 17:00 New York on D (the roll).
``24/7``   always open (crypto); a bar closes one period after it opens.
``None``   no calendar known: bars are expected on a regular grid and a bar closes
           one period after it opens.
========== =========================================================================
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from backtest.errors import DataValidationError

__all__ = [
    "ALWAYS_OPEN",
    "FREQUENCIES",
    "FX_CALENDAR",
    "Gap",
    "bar_close_times",
    "expected_bars",
    "find_gaps",
    "infer_frequency",
    "parse_frequency",
    "weekend_gaps",
]

#: Bar frequencies the engine understands, with the length of one bar.
FREQUENCIES: dict[str, pd.Timedelta] = {
    "1min": pd.Timedelta(minutes=1),
    "5min": pd.Timedelta(minutes=5),
    "15min": pd.Timedelta(minutes=15),
    "30min": pd.Timedelta(minutes=30),
    "1h": pd.Timedelta(hours=1),
    "4h": pd.Timedelta(hours=4),
    "1d": pd.Timedelta(days=1),
    "1w": pd.Timedelta(weeks=1),
}
_DAILY_OR_LONGER = ("1d", "1w")
_NEW_YORK = "America/New_York"
FX_CALENDAR = "FX"
ALWAYS_OPEN = "24/7"


def parse_frequency(value: str, *, source: str = "frequency") -> str:
    """Return the canonical name of a bar frequency, or raise naming the valid ones."""
    key = value.strip().lower()
    aliases = {
        "d": "1d",
        "daily": "1d",
        "h": "1h",
        "hourly": "1h",
        "1hour": "1h",
        "min": "1min",
        "1m": "1min",
        "minute": "1min",
        "w": "1w",
        "weekly": "1w",
    }
    key = aliases.get(key, key)
    if key in FREQUENCIES:
        return key
    close = difflib.get_close_matches(key, FREQUENCIES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise DataValidationError(
        source,
        "unknown_frequency",
        f"unknown bar frequency {value!r}.{hint}",
        f"use one of {', '.join(FREQUENCIES)}",
    )


def infer_frequency(timestamps: pd.DatetimeIndex, *, source: str) -> str:
    """Guess the bar frequency from the most common spacing of the timestamps."""
    if len(timestamps) < 2:
        raise DataValidationError(
            source,
            "unknown_frequency",
            "cannot infer the bar frequency from fewer than 2 bars",
            "pass the frequency explicitly (--frequency 1d)",
        )
    diffs = np.diff(timestamps.as_unit("ns").asi8)
    if (diffs == 0).any():
        at = int(np.flatnonzero(diffs == 0)[0]) + 1
        raise DataValidationError(
            source,
            "duplicate_timestamp",
            f"the timestamp {timestamps[at]} appears twice (rows {at} and {at + 1} of the "
            "data, counting from 1 after the header)",
            "keep one bar per timestamp (check for a file concatenated twice, or several "
            "symbols in one file: pass --symbol)",
        )
    values, counts = np.unique(diffs, return_counts=True)
    step = pd.Timedelta(int(values[np.argmax(counts)]), unit="ns")
    for name, length in FREQUENCIES.items():
        if step == length:
            return name
    raise DataValidationError(
        source,
        "unknown_frequency",
        f"the most common spacing between bars is {step}, which is not a supported frequency",
        f"resample to one of {', '.join(FREQUENCIES)} or pass --frequency",
    )


@contextmanager
def _quiet_pandas_deprecations() -> Iterator[None]:
    # exchange_calendars still uses pandas APIs that pandas 3.1 deprecates; the warnings are
    # theirs, not ours, and would otherwise be raised as errors under the test settings.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


@lru_cache(maxsize=16)
def _exchange_calendar(name: str):  # type: ignore[no-untyped-def]
    import exchange_calendars as xcals

    try:
        # exchange_calendars defaults to the last 20 years; history starts earlier.
        with _quiet_pandas_deprecations():
            return xcals.get_calendar(name, start="1990-01-01")
    except xcals.errors.InvalidCalendarName as exc:
        names = xcals.get_calendar_names(include_aliases=False)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataValidationError(
            "calendar",
            "unknown_calendar",
            f"unknown trading calendar {name!r}.{hint}",
            f"use an exchange_calendars name such as XNYS, or {FX_CALENDAR!r} or {ALWAYS_OPEN!r}",
        ) from exc


def _fx_open(ts: pd.DatetimeIndex) -> np.ndarray:
    """True where a bar opening at ``ts`` lies inside the FX week (Sun 17:00 - Fri 17:00 NY)."""
    ny = ts.tz_convert(_NEW_YORK)
    dow = ny.day_of_week.to_numpy()
    hour = ny.hour.to_numpy() + ny.minute.to_numpy() / 60.0
    closed = (dow == 5) | ((dow == 4) & (hour >= 17)) | ((dow == 6) & (hour < 17))
    return ~closed


def expected_bars(
    first: pd.Timestamp, last: pd.Timestamp, frequency: str, calendar: str | None
) -> pd.DatetimeIndex:
    """Every bar timestamp the calendar expects between ``first`` and ``last`` inclusive."""
    return _expected_bars(first, last, frequency, calendar).as_unit("ns")


def _expected_bars(
    first: pd.Timestamp, last: pd.Timestamp, frequency: str, calendar: str | None
) -> pd.DatetimeIndex:
    step = FREQUENCIES[frequency]
    if calendar in (None, ALWAYS_OPEN) or frequency == "1w":
        return pd.date_range(first, last, freq=step, tz="UTC")
    if calendar == FX_CALENDAR:
        if frequency == "1d":
            grid = pd.date_range(first, last, freq=step, tz="UTC")
            return grid[grid.day_of_week < 5]
        grid = pd.date_range(first, last, freq=step, tz="UTC")
        return grid[_fx_open(grid)]
    cal = _exchange_calendar(calendar)
    if frequency == "1d":
        with _quiet_pandas_deprecations():
            sessions = cal.sessions_in_range(first.tz_localize(None), last.tz_localize(None))
        return pd.DatetimeIndex(sessions).tz_localize("UTC")
    with _quiet_pandas_deprecations():
        index = cal.trading_index(
            first.tz_localize(None).normalize(),
            last.tz_localize(None).normalize(),
            period=step,
            intervals=False,
            force=True,
        )
    index = pd.DatetimeIndex(index)
    index = index.tz_convert("UTC") if index.tz is not None else index.tz_localize("UTC")
    return index[(index >= first) & (index <= last)]


def bar_close_times(
    timestamps: pd.DatetimeIndex, frequency: str, calendar: str | None
) -> np.ndarray:
    """Return, as int64 UTC nanoseconds, the time at which each bar's close is known."""
    step = FREQUENCIES[frequency]
    timestamps = timestamps.as_unit("ns")
    if frequency not in _DAILY_OR_LONGER or calendar in (None, ALWAYS_OPEN) or frequency == "1w":
        return (timestamps + step).asi8.copy()
    if calendar == FX_CALENDAR:
        local = timestamps.tz_convert(None).normalize().tz_localize(_NEW_YORK) + pd.Timedelta(
            hours=17
        )
        return local.tz_convert("UTC").asi8.copy()
    cal = _exchange_calendar(calendar)
    sessions = timestamps.tz_convert(None).normalize()
    with _quiet_pandas_deprecations():
        closes = pd.DatetimeIndex(cal.schedule["close"].reindex(sessions))
    closes = closes.tz_localize("UTC") if closes.tz is None else closes.tz_convert("UTC")
    # A bar on a day the calendar has no session for still closes: at the day's end.
    closes = closes.where(~closes.isna(), timestamps + step)
    return closes.as_unit("ns").asi8.copy()


@dataclass(frozen=True, slots=True)
class Gap:
    """A run of bars the calendar expects but the data does not have."""

    after: pd.Timestamp
    before: pd.Timestamp
    missing_bars: int

    @property
    def span(self) -> pd.Timedelta:
        """Wall-clock time between the bars on either side of the gap."""
        return self.before - self.after


def weekend_gaps(gaps: list[Gap]) -> int:
    """How many ``gaps`` miss only Saturdays and Sundays (UTC dates of the missing bars).

    A daily file without a trading calendar expects a bar every day, so every weekend is a
    gap; this count is what tells a user that ``--calendar`` is what is missing.
    """
    count = 0
    for gap in gaps:
        days = pd.date_range(gap.after.normalize(), gap.before.normalize(), freq="D")[1:-1]
        if len(days) and all(day.weekday() >= 5 for day in days):
            count += 1
    return count


def find_gaps(
    timestamps: pd.DatetimeIndex, frequency: str, calendar: str | None
) -> tuple[list[Gap], int]:
    """Find the runs of expected bars that are missing.

    Returns:
        The gaps in time order, and the number of bars present that the calendar does not
        expect (for example a bar on an exchange holiday).
    """
    if len(timestamps) < 2:
        return [], 0
    timestamps = timestamps.as_unit("ns")
    expected = expected_bars(timestamps[0], timestamps[-1], frequency, calendar)
    present = np.isin(expected.asi8, timestamps.asi8)
    off_calendar = int((~np.isin(timestamps.asi8, expected.asi8)).sum())
    gaps: list[Gap] = []
    if present.all():
        return gaps, off_calendar
    exp = expected.asi8
    ts = timestamps.asi8
    missing_positions = np.flatnonzero(~present)
    # Consecutive missing expected bars form one gap.
    breaks = np.flatnonzero(np.diff(missing_positions) != 1) + 1
    for run in np.split(missing_positions, breaks):
        first_missing, last_missing = exp[run[0]], exp[run[-1]]
        i_after = np.searchsorted(ts, first_missing) - 1
        i_before = np.searchsorted(ts, last_missing, side="right")
        after = pd.Timestamp(ts[max(i_after, 0)], tz="UTC")
        before = pd.Timestamp(ts[min(i_before, len(ts) - 1)], tz="UTC")
        gaps.append(Gap(after=after, before=before, missing_bars=len(run)))
    return gaps, off_calendar
