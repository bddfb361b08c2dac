"""Bars per year from a trading calendar and a bar frequency: the metrics' one pandas edge.

Nothing in :mod:`backtest.metrics` assumes 252 or 365 bars a year: :func:`periods_per_year`
counts the calendar's expected bars over a ten-year reference span (or the data's own span),
once per frequency and calendar.
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

from backtest.calendars import FREQUENCIES, expected_bars, parse_frequency
from backtest.errors import ConfigError, DataValidationError

__all__ = ["periods_per_year"]


# The span periods_per_year averages a calendar over: ten whole years, so leap years,
# holidays and weekday drift average out.
_REFERENCE_FIRST = pd.Timestamp("2010-01-01", tz="UTC")
_REFERENCE_END = pd.Timestamp("2020-01-01", tz="UTC")
_DAYS_PER_YEAR = 365.25
_MIN_EMPIRICAL_SPAN_DAYS = 30.0


def periods_per_year(
    frequency: str, calendar: str | None, index: pd.DatetimeIndex | None = None
) -> float:
    """Return how many bars of ``frequency`` the market ``calendar`` has in a year.

    For a known calendar (an ``exchange_calendars`` name such as ``"XNYS"``, ``"FX"``
    or ``"24/7"``) this is the average number of bars a year that
    :func:`backtest.calendars.expected_bars` lists from 2010-01-01 to 2019-12-31, a
    year being 365.25 days: about 252 for XNYS daily, 260.9 for FX daily, 6260 for FX
    hourly and 365.25 for 24/7 daily. ``index`` is ignored then.

    With no calendar, an ``index`` spanning at least 30 days gives the empirical rate
    ``(len(index) - 1) / (span_days / 365.25)``; otherwise the bars are assumed to run
    around the clock: ``365.25 * bars_per_day``.

    Args:
        frequency: Bar frequency, a key of :data:`backtest.calendars.FREQUENCIES` or one
            of its aliases (``"daily"``, ``"1h"``, ...).
        calendar: Trading calendar name, or ``None`` when unknown.
        index: Timestamps of the bars, used only when ``calendar`` is ``None``.

    Returns:
        Bars per year, always positive.

    Raises:
        ConfigError: If the frequency or calendar is unknown, or ``index`` is not a
            ``pd.DatetimeIndex``.
    """
    try:
        frequency = parse_frequency(frequency)
    except DataValidationError as exc:
        raise ConfigError(str(exc)) from exc
    if calendar is not None:
        return _calendar_periods_per_year(frequency, calendar)
    if index is not None:
        if not isinstance(index, pd.DatetimeIndex):
            raise ConfigError(
                f"periods_per_year: index must be a pd.DatetimeIndex, got {type(index).__name__}; "
                "pass the bars' timestamps (frame.index) or index=None"
            )
        if len(index) >= 2:
            span_days = (index.max() - index.min()) / pd.Timedelta(days=1)
            if span_days >= _MIN_EMPIRICAL_SPAN_DAYS:
                return (len(index) - 1) / (span_days / _DAYS_PER_YEAR)
    return _DAYS_PER_YEAR * (pd.Timedelta(days=1) / FREQUENCIES[frequency])


@lru_cache(maxsize=64)
def _calendar_periods_per_year(frequency: str, calendar: str) -> float:
    try:
        bars = expected_bars(_REFERENCE_FIRST, _REFERENCE_END, frequency, calendar)
    except DataValidationError as exc:
        raise ConfigError(str(exc)) from exc
    count = int((bars < _REFERENCE_END).sum())
    years = (_REFERENCE_END - _REFERENCE_FIRST) / pd.Timedelta(days=_DAYS_PER_YEAR)
    return count / years
