"""Calendars: bar close times and expected bars."""

from __future__ import annotations

import pandas as pd
import pytest

from backtest.calendars import bar_close_times, expected_bars, find_gaps
from backtest.errors import DataValidationError


def _utc(values: list[str]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(values, tz="UTC").as_unit("ns")


def test_daily_close_times_follow_the_exchange_schedule() -> None:
    days = _utc(["2018-11-21", "2018-11-23", "2018-07-02"])
    closes = pd.DatetimeIndex(bar_close_times(days, "1d", "XNYS"), tz="UTC")
    # A normal winter close (16:00 EST), the early close after Thanksgiving (13:00 EST),
    # a normal summer close (16:00 EDT).
    assert list(closes) == list(_utc(["2018-11-21 21:00", "2018-11-23 18:00", "2018-07-02 20:00"]))


def test_fx_daily_bars_close_at_the_new_york_roll() -> None:
    days = _utc(["2018-01-15", "2018-07-16"])
    closes = pd.DatetimeIndex(bar_close_times(days, "1d", "FX"), tz="UTC")
    assert list(closes) == list(_utc(["2018-01-15 22:00", "2018-07-16 21:00"]))


def test_intraday_bars_close_one_period_after_they_open() -> None:
    bars = _utc(["2020-03-02 14:30", "2020-03-02 14:35"])
    closes = pd.DatetimeIndex(bar_close_times(bars, "5min", "XNYS"), tz="UTC")
    assert list(closes) == list(_utc(["2020-03-02 14:35", "2020-03-02 14:40"]))


def test_fx_week_excludes_the_weekend() -> None:
    bars = expected_bars(
        pd.Timestamp("2018-01-12 20:00", tz="UTC"),
        pd.Timestamp("2018-01-14 23:00", tz="UTC"),
        "1h",
        "FX",
    )
    # Friday 17:00 New York is 22:00 UTC in January; Sunday 17:00 New York reopens.
    assert list(bars) == list(
        _utc(["2018-01-12 20:00", "2018-01-12 21:00", "2018-01-14 22:00", "2018-01-14 23:00"])
    )


def test_holidays_are_not_gaps_but_missing_sessions_are() -> None:
    sessions = _utc(["2018-12-21", "2018-12-24", "2018-12-26", "2018-12-27", "2018-12-31"])
    gaps, off = find_gaps(sessions, "1d", "XNYS")
    assert off == 0
    assert [(g.after.date().isoformat(), g.missing_bars) for g in gaps] == [("2018-12-27", 1)]


def test_unknown_calendar_suggests_a_name() -> None:
    with pytest.raises(DataValidationError, match="XNYS") as info:
        expected_bars(
            pd.Timestamp("2020-01-01", tz="UTC"), pd.Timestamp("2020-01-10", tz="UTC"), "1d", "XNYZ"
        )
    assert info.value.rule == "unknown_calendar"
