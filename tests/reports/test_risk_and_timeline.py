"""The report's worst drawdowns, VaR and CVaR against quantstats and empyrical, and the
decision timeline's aggregation against pandas."""

from __future__ import annotations

import empyrical
import numpy as np
import pandas as pd
import quantstats as qs
from hypothesis import given, settings
from hypothesis import strategies as st

from reports.risk import cvar, value_at_risk, worst_drawdowns
from reports.timeline import decision_timeline, timeline_period


def _equity(steps: list[float], start: str = "2020-01-01") -> pd.Series:
    index = pd.date_range(start, periods=len(steps) + 1, freq="D", tz="UTC")
    return pd.Series(100_000.0 * np.cumprod([1.0, *[1.0 + s for s in steps]]), index=index)


returns_lists = st.lists(
    st.floats(-0.08, 0.08, allow_nan=False).map(lambda x: round(x, 4)), min_size=5, max_size=300
)


@settings(max_examples=60, deadline=None)
@given(returns_lists)
def test_worst_drawdowns_match_quantstats(steps: list[float]) -> None:
    equity = _equity(steps)
    ours = worst_drawdowns(equity, n=5)
    naive = equity.copy()
    naive.index = naive.index.tz_localize(None)
    dd = naive / naive.cummax() - 1.0
    theirs = qs.stats.drawdown_details(dd)
    if theirs.empty:
        assert ours == []
        return
    theirs = theirs.sort_values(["max drawdown", "start"]).head(5)
    assert len(ours) == len(theirs)
    for mine, (_, row) in zip(ours, theirs.iterrows(), strict=True):
        assert np.isclose(mine["depth"] * 100, row["max drawdown"], rtol=1e-9, atol=1e-9)
        assert mine["start"].strftime("%Y-%m-%d") == row["start"]
        # quantstats' "end" is the last bar under water; the recovery is the next bar.
        if mine["recovery"] is None:
            assert row["end"] == naive.index[-1].strftime("%Y-%m-%d")
        else:
            last_under = equity.index[equity.index.get_loc(mine["recovery"]) - 1]
            assert last_under.strftime("%Y-%m-%d") == row["end"]
        trough = equity[mine["start"] : mine["recovery"] or equity.index[-1]]
        assert equity[mine["trough"]] == trough.min()


@settings(max_examples=60, deadline=None)
@given(returns_lists)
def test_var_and_cvar_match_empyrical(steps: list[float]) -> None:
    returns = np.asarray(steps)
    assert np.isclose(value_at_risk(returns), empyrical.value_at_risk(returns, cutoff=0.05))
    assert np.isclose(cvar(returns), empyrical.conditional_value_at_risk(returns, cutoff=0.05))
    assert cvar(returns) <= value_at_risk(returns) + 1e-12


def test_timeline_cells_are_weekly_means_and_decision_counts() -> None:
    index = pd.date_range("2021-01-04", periods=30, freq="B", tz="UTC")
    rng = np.random.default_rng(3)
    target = pd.DataFrame(
        {"a": rng.choice([-1.0, 0.0, 0.5, 1.0], size=30), "b": np.zeros(30)}, index=index
    )
    actions = rng.choice(["BUY", "SELL", "HOLD"], size=30)
    decisions = pd.DataFrame(
        {
            "strategy": "a",
            "timestamp": index,
            "action": actions,
            "abstain": rng.random(30) < 0.2,
        }
    )
    marks = {"a": pd.DataFrame({"timestamp": index[[3, 12]], "label": ["first", "second"]})}
    figure = decision_timeline(target, decisions, marks, ["a", "b"])
    (trace,) = figure["data"]
    assert timeline_period(index) == "W"
    weekly = target["a"].tz_convert(None).resample("W-MON", label="left", closed="left").mean()
    middles = weekly.index + pd.Timedelta(days=3.5)
    assert trace["x"] == [d.strftime("%Y-%m-%dT%H:%M:%S") for d in middles]
    assert np.allclose(trace["z"][0], weekly.round(4).to_numpy())
    assert trace["z"][1] == [0.0] * len(weekly)
    # Counts per week: abstains apart, every decision counted once.
    week = (index.tz_convert(None) - pd.to_timedelta(index.day_of_week, unit="D")).normalize()
    frame = decisions.assign(week=week)
    for i, start in enumerate(weekly.index):
        rows = frame[frame["week"] == start]
        text = trace["hovertext"][0][i]
        abstains = int(rows["abstain"].sum())
        if abstains:
            assert f"{abstains} abstain" in text
        for action in ("BUY", "SELL", "HOLD"):
            n = int(((rows["action"] == action) & ~rows["abstain"]).sum())
            assert (f"{n} {action}" in text) == (n > 0)
    assert "last: 2021-01-07 first" in trace["hovertext"][0][0]
    assert "last: 2021-01-20 second" in trace["hovertext"][0][2]


def test_long_spans_are_monthly() -> None:
    index = pd.date_range("2010-01-01", "2014-12-31", freq="D", tz="UTC")
    assert timeline_period(index) == "M"
    target = pd.DataFrame({"a": 1.0}, index=index)
    figure = decision_timeline(target, pd.DataFrame(), {}, ["a"])
    assert len(figure["data"][0]["x"]) == 60
