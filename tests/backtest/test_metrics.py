"""Metrics against peer oracles: empyrical-reloaded and quantstats.

Each metric is checked to 1e-9 relative against the peer whose convention it follows:

================== ================================== ========================================
metric             empyrical-reloaded                 quantstats
================== ================================== ========================================
total_return       ``cum_returns_final``              ``comp``
cagr               ``annual_return``                  ``cagr`` (same formula)
annual_volatility  ``annual_volatility``              ``volatility``
sharpe             ``sharpe_ratio(risk_free=rf/ppy)`` ``sharpe``, at rf = 0 only
sortino            ``sortino_ratio(required_return    ``sortino``, at rf = 0 only
                   =rf/ppy)``
max_drawdown       ``max_drawdown``                   ``max_drawdown``
max_drawdown_bars  (none)                             ``drawdown_details`` "days", daily index
calmar             ``calmar_ratio``                   ``calmar``
win_rate           (none)                             ``win_rate``
alpha, beta        ``alpha_beta`` (followed)          ``greeks``: beta only
tracking_error     ``annual_volatility(r - b)``       (none)
information_ratio  ``excess_sharpe * sqrt(ppy)``      ``information_ratio * sqrt(ppy)``
================== ================================== ========================================

Where the peers disagree (pinned by ``test_where_the_oracles_disagree`` and the
special cases in the property tests), and what we follow:

- risk-free rate: quantstats de-annualises it geometrically, ``(1 + rf) ** (1/ppy) - 1``;
  empyrical takes a per-bar rate from the caller. We use ``rf / ppy`` (empyrical with
  ``risk_free=rf/ppy``), so quantstats is compared at rf = 0 only.
- alpha: quantstats' ``greeks`` annualises ``mean(r - beta*b)`` arithmetically (``* ppy``)
  and ignores rf; empyrical compounds it, ``(1 + mean) ** ppy - 1``, on excess returns.
  We follow empyrical.
- information ratio: both peers give the per-bar ratio; ours is annualised (``* sqrt(ppy)``).
- degenerate dispersion: a deviation at most ``metrics.DISPERSION_RTOL`` (1e-9) of its
  series' largest magnitude is rounding, and the ratio is nan (the module docstring's
  rule); the peers divide by it and give numbers above 1e6 in magnitude, or inf.
  :func:`assert_ratio_close` checks that, and outside the band compares with a tolerance
  that widens with the condition number ``n * eps * max|x| / deviation``.
- undefined values: empyrical gives inf for a zero deviation (Sharpe, Sortino, IR);
  quantstats gives nan for Sortino, 0 for IR and for an all-flat win rate, 0 for beta
  against a flat benchmark, ZeroDivisionError for Calmar without a drawdown and inf for
  one whose CAGR overflows (empyrical: nan). We give nan for all of them.
- precision: quantstats' CAGR computes ending wealth as ``(prod(1 + r) - 1) + 1`` and loses
  relative precision after a near-total loss; its ``drawdown_details`` misses a drawdown
  that starts on the first bar. The tests work around both (see the comments there).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import empyrical
import numpy as np
import pandas as pd
import pytest
import quantstats
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from backtest import metrics
from backtest.errors import ConfigError

# quantstats annotates periods-per-year as int; it computes with floats, and ours are
# fractional (251.63 for XNYS), so call it untyped.
qs: Any = quantstats

RTOL = 1e-9
# Means that should be 0 come out as ~1e-18 from summation order; a ratio built on such
# a mean differs between two correct implementations by far more than 1e-9 *relative*.
ATOL = 1e-12

PPY_CHOICES = [
    metrics.periods_per_year("1d", "XNYS"),
    metrics.periods_per_year("1d", "FX"),
    metrics.periods_per_year("1d", "24/7"),
    metrics.periods_per_year("1h", "FX"),
    12.0,
]

# Returns on a 1e-6 grid (a hundredth of a basis point), as a market produces them. With
# arbitrary doubles hypothesis finds series such as [2e-15, 2e-15], whose drawdown is
# pure rounding (curve / peak - 1 cancels to ~1e-16 absolute): no two correct
# implementations agree on it to 1e-9 relative. Arbitrary doubles are used below only
# to check that the kernels stay quiet and never crash.
GRID = 1e-6
BARS = st.integers(min_value=2, max_value=300)


def _on_grid(n: int) -> st.SearchStrategy[np.ndarray]:
    ticks = arrays(np.int64, n, elements=st.integers(-200_000, 200_000))
    return ticks.map(lambda t: t * GRID)


returns_arrays = BARS.flatmap(_on_grid)
paired_returns = BARS.flatmap(lambda n: st.tuples(_on_grid(n), _on_grid(n)))
any_returns = BARS.flatmap(
    lambda n: arrays(np.float64, n, elements=st.floats(-0.2, 0.2, allow_nan=False, width=64))
)

ORACLE_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _series(returns: np.ndarray) -> pd.Series:
    # A daily index, so quantstats' drawdown "days" count bars.
    return pd.Series(returns, index=pd.date_range("2001-01-01", periods=len(returns), freq="D"))


def assert_close(ours: float, theirs: float, what: str) -> None:
    theirs = float(theirs)
    if math.isnan(theirs):
        assert math.isnan(ours), f"{what}: ours {ours!r}, oracle nan"
        return
    assert math.isclose(ours, theirs, rel_tol=RTOL, abs_tol=ATOL), (
        f"{what}: ours {ours!r}, oracle {theirs!r}"
    )


EPS = float(np.finfo(float).eps)
# Inside the rounding band a peer's ratio is a deviation of a few ulps divided into a
# mean of the series' own size: at least ~1e9 / n for n bars. 1e6 covers n <= 300.
HUGE = 1e6


def assert_ratio_close(
    ours: float, theirs: float, x: np.ndarray, deviation: float, ppy: float, what: str
) -> None:
    """Compare a ratio ``mean(x) / deviation`` (annualised) with a peer's.

    ``deviation`` is the ratio's denominator, per bar, as computed in float64 from ``x``.
    Inside the degenerate band ours must be nan and the peer's inf, nan or huge; outside
    it the tolerance is 1e-9 relative plus the rounding either side can commit, which
    grows with ``n * eps * max|x| / deviation`` (the mean carries ``n * eps * max|x|``
    absolute, the deviation ``eps * max|x| / deviation`` relative).
    """
    theirs = float(theirs)
    scale = float(np.abs(x).max()) if x.size else 0.0
    if x.size > 1 and scale == 0.0:
        # Exactly zero throughout: ours is 0 (no risk, no excess), the peers' 0 / 0 nan.
        assert ours == 0.0, f"{what}: an all-zero series gave {ours!r}, expected 0"
        assert math.isnan(theirs) or theirs == 0.0, f"{what}: peer {theirs!r}"
        return
    if not deviation > metrics.DISPERSION_RTOL * scale:
        assert math.isnan(ours), f"{what}: deviation {deviation!r} is rounding, ours {ours!r}"
        assert not math.isfinite(theirs) or abs(theirs) > HUGE, (
            f"{what}: a deviation within rounding gave the peer a finite {theirs!r}"
        )
        return
    assert math.isfinite(theirs), f"{what}: deviation {deviation!r}, peer {theirs!r}"
    condition = 8.0 * x.size * EPS * scale / deviation
    assert math.isclose(
        ours, theirs, rel_tol=RTOL + condition, abs_tol=ATOL + condition * math.sqrt(ppy)
    ), f"{what}: ours {ours!r}, oracle {theirs!r} (condition {condition:.1e})"


def _std(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if x.size > 1 else math.nan


def _downside(x: np.ndarray) -> float:
    return math.sqrt(float(np.mean(np.minimum(x, 0.0) ** 2)))


@contextmanager
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(divide="raise", over="raise", invalid="raise"):
            yield


@contextmanager
def oracle_quiet() -> Iterator[None]:
    # The peers warn on degenerate input (e.g. quantstats on an all-zero series);
    # those warnings are theirs and are not what these tests examine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ------------------------------------------------------------------------------ golden numbers


def test_golden_series_by_hand() -> None:
    # equity 100 -> 110 -> 99 -> 99 -> 118.8: returns +10%, -10%, 0, +20%; 4 bars a year.
    equity = np.array([100.0, 110.0, 99.0, 99.0, 118.8])
    benchmark = np.array([100.0, 105.0, 99.75, 99.75, 109.725])  # +5%, -5%, 0, +10%
    positions = np.array([0.0, 1.0, 1.0, 0.0, 2.0])
    exposure = np.array([0.0, 0.5, -0.25, 0.0, 0.05])
    fill_units = np.array([np.nan, 1.0, np.nan, -1.0, 2.0])
    fill_price = np.array([np.nan, 100.0, np.nan, 110.0, 50.0])
    fees = np.array([0.0, 1.0, np.nan, 1.5, 0.5])

    with no_warnings():
        summary = metrics.summarize(
            equity,
            periods_per_year=4.0,
            benchmark_equity=benchmark,
            position_units=positions,
            exposure=exposure,
            fill_units=fill_units,
            fill_price=fill_price,
            fees_usd=fees,
        )

    # mean 0.05, sample variance 0.05/3, downside deviation sqrt(0.01/4) = 0.05.
    expected = {
        "total_return": 0.188,
        "cagr": 0.188,  # 4 bars at 4 bars a year is one year
        "annual_volatility": math.sqrt(0.05 / 3) * 2,
        "sharpe": math.sqrt(0.6),  # 0.05 / sqrt(0.05/3) * sqrt(4)
        "sortino": 2.0,  # 0.05 * 4 / (0.05 * sqrt(4))
        "calmar": 1.88,  # 0.188 / 0.1
        "max_drawdown": -0.1,  # 110 -> 99
        "max_drawdown_bars": 2,  # bars closing at 99 and 99, recovered at 118.8
        "win_rate": 2 / 3,  # two gains among three bars that moved
        "time_in_market": 0.6,  # 3 of 5 bars hold a position
        "exposure": 0.16,  # (0.5 + 0.25 + 0.05) / 5: how much was at risk, on average
        "turnover": (100.0 + 110.0 + 100.0) / (526.8 / 5) * 4 / 5,
        "trade_count": 3,
        "fees_usd": 3.0,
        "alpha": 0.0,  # r == 2 * b exactly
        "beta": 2.0,
        "information_ratio": math.sqrt(0.6),  # active = b: mean 0.025, std sqrt(0.0125/3)
        "tracking_error": math.sqrt(0.0125 / 3) * 2,
    }
    assert summary.keys() == expected.keys()
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert all(type(value) in (float, int) for value in summary.values())
    assert type(summary["max_drawdown_bars"]) is int
    assert type(summary["trade_count"]) is int

    # A 4% annual rate is 1% a bar: excess mean 0.04, same deviation.
    assert metrics.sharpe(np.diff(equity) / equity[:-1], 4.0, risk_free=0.04) == pytest.approx(
        0.04 / math.sqrt(0.05 / 3) * 2, rel=1e-12
    )


def test_summarize_omits_keys_whose_inputs_are_missing() -> None:
    summary = metrics.summarize(np.array([1.0, 1.1, 1.0]), periods_per_year=252.0)
    assert set(summary) == {
        "total_return",
        "cagr",
        "annual_volatility",
        "sharpe",
        "sortino",
        "calmar",
        "max_drawdown",
        "max_drawdown_bars",
        "win_rate",
    }
    with_fills = metrics.summarize(
        np.array([1.0, 1.1, 1.0]), periods_per_year=252.0, fill_units=np.array([0, 1.0, 0])
    )
    assert with_fills["trade_count"] == 1
    assert "turnover" not in with_fills


def test_summarize_per_bar_risk_free_applies_to_the_return_ending_at_that_bar() -> None:
    equity = np.array([100.0, 101.0, 100.5, 102.0, 101.0, 103.0])
    rates = np.array([9.9, 0.01, 0.02, 0.03, 0.04, 0.05])  # the first rate has no return
    returns = metrics.returns_from_equity(equity)
    summary = metrics.summarize(equity, periods_per_year=252.0, risk_free=rates)
    assert summary["sharpe"] == metrics.sharpe(returns, 252.0, rates[1:])
    expected = empyrical.sharpe_ratio(returns, risk_free=rates[1:] / 252.0, annualization=252.0)
    assert_close(summary["sharpe"], expected, "sharpe")


# ------------------------------------------------------------------------------ oracles


@ORACLE_SETTINGS
@given(
    returns=returns_arrays,
    ppy=st.sampled_from(PPY_CHOICES),
    risk_free=st.sampled_from([0.0, 0.01, 0.05]),
)
def test_matches_empyrical(returns: np.ndarray, ppy: float, risk_free: float) -> None:
    with no_warnings():
        ours = {
            "total_return": metrics.total_return(returns),
            "cagr": metrics.cagr(returns, ppy),
            "annual_volatility": metrics.annual_volatility(returns, ppy),
            "sharpe": metrics.sharpe(returns, ppy, risk_free),
            "sortino": metrics.sortino(returns, ppy, risk_free),
            "max_drawdown": metrics.max_drawdown(returns),
            "calmar": metrics.calmar(returns, ppy),
        }
    with oracle_quiet():
        theirs = {
            "total_return": empyrical.cum_returns_final(returns),
            "cagr": empyrical.annual_return(returns, annualization=ppy),
            "annual_volatility": empyrical.annual_volatility(returns, annualization=ppy),
            "sharpe": empyrical.sharpe_ratio(returns, risk_free=risk_free / ppy, annualization=ppy),
            "sortino": empyrical.sortino_ratio(
                returns, required_return=risk_free / ppy, annualization=ppy
            ),
            "max_drawdown": empyrical.max_drawdown(returns),
            "calmar": empyrical.calmar_ratio(returns, annualization=ppy),
        }
    excess = returns - risk_free / ppy
    assert_ratio_close(
        ours.pop("sharpe"), theirs.pop("sharpe"), excess, _std(excess), ppy, "sharpe"
    )
    assert_ratio_close(
        ours.pop("sortino"), theirs.pop("sortino"), excess, _downside(excess), ppy, "sortino"
    )
    _assert_calmar(ours.pop("calmar"), theirs.pop("calmar"), ours["max_drawdown"])
    if theirs["annual_volatility"] == 0.0:
        assert ours["annual_volatility"] == 0.0
    for key, value in theirs.items():
        assert_close(ours[key], value, key)


def _assert_calmar(ours: float, theirs: float, drawdown: float) -> None:
    # No drawdown deeper than 1e-9 of the peak: ours is nan; the peer divides by its own
    # rounding-sized drawdown (huge or inf) or gives nan at exactly 0.
    if not drawdown < -metrics.DISPERSION_RTOL:
        assert math.isnan(ours), f"calmar: drawdown {drawdown!r}, ours {ours!r}"
        return
    assert_close(ours, math.nan if math.isinf(theirs) else theirs, "calmar")


@ORACLE_SETTINGS
@given(pair=paired_returns, ppy=st.sampled_from(PPY_CHOICES), risk_free=st.just(0.02))
def test_benchmark_metrics_match_empyrical(
    pair: tuple[np.ndarray, np.ndarray], ppy: float, risk_free: float
) -> None:
    returns, benchmark = pair
    with no_warnings():
        alpha, beta = metrics.alpha_beta(returns, benchmark, ppy, risk_free)
        te = metrics.tracking_error(returns, benchmark, ppy)
        ir = metrics.information_ratio(returns, benchmark, ppy)
    with oracle_quiet():
        e_alpha, e_beta = empyrical.alpha_beta(
            returns, benchmark, risk_free=risk_free / ppy, annualization=ppy
        )
        e_te = empyrical.annual_volatility(returns - benchmark, annualization=ppy)
        e_ir = empyrical.excess_sharpe(returns, benchmark) * math.sqrt(ppy)
    y = benchmark - risk_free / ppy
    if not np.std(y) > metrics.DISPERSION_RTOL * np.abs(y).max():
        # A benchmark without variance (or with only rounding) has no beta; empyrical's
        # variance test (< 1e-30) lets a rounding residue through and can report a number.
        assert math.isnan(alpha) and math.isnan(beta)
        e_alpha = e_beta = math.nan
    # empyrical centres only the benchmark in cov(x, y), so its covariance carries
    # mean(y - mean(y)) * mean(x), a residue of ~n ulps of y times x; over a benchmark that
    # barely moves that residue, divided by var(y), exceeds 1e-9 of beta. We centre both.
    n = returns.size
    slack = 4 * n * np.finfo(float).eps * np.abs(benchmark).max()
    slack *= (np.abs(returns).max() + risk_free / ppy) / max(np.var(benchmark), 1e-300)
    if math.isnan(e_beta):
        assert math.isnan(beta)
    else:
        assert math.isclose(beta, e_beta, rel_tol=RTOL, abs_tol=ATOL + slack), "beta"
    # alpha compounds a mean that is a difference of near-equal terms; compare the
    # per-bar mean rather than (1 + mean) ** ppy, which amplifies its rounding ~ppy times.
    if not math.isnan(e_alpha):
        per_bar_slack = ATOL + slack * abs(np.mean(benchmark) - risk_free / ppy)
        assert math.isclose(
            (1 + alpha) ** (1 / ppy),
            (1 + e_alpha) ** (1 / ppy),
            rel_tol=RTOL,
            abs_tol=per_bar_slack,
        ), "alpha"
    else:
        assert math.isnan(alpha)
    assert_close(te, e_te if e_te > 0 else 0.0, "tracking_error")
    active = returns - benchmark
    assert_ratio_close(ir, e_ir, active, _std(active), ppy, "information_ratio")


@ORACLE_SETTINGS
@given(returns=returns_arrays, ppy=st.sampled_from(PPY_CHOICES))
def test_matches_quantstats(returns: np.ndarray, ppy: float) -> None:
    series = _series(returns)
    with no_warnings():
        ours = {
            "total_return": metrics.total_return(returns),
            "cagr": metrics.cagr(returns, ppy),
            "annual_volatility": metrics.annual_volatility(returns, ppy),
            "sharpe": metrics.sharpe(returns, ppy),
            "sortino": metrics.sortino(returns, ppy),
            "max_drawdown": metrics.max_drawdown(returns),
            "calmar": metrics.calmar(returns, ppy),
            "win_rate": metrics.win_rate(returns),
            "max_drawdown_bars": metrics.max_drawdown_duration(returns),
        }
    with oracle_quiet():
        # quantstats' drawdown_details drops a drawdown that starts on the first bar (it
        # finds starts by comparing with the previous bar); a flat bar in front fixes that.
        padded = _series(np.concatenate(([0.0], returns)))
        details = qs.stats.drawdown_details(qs.stats.to_drawdown_series(padded))
        q_max_drawdown = qs.stats.max_drawdown(series)
        theirs = {
            "total_return": qs.stats.comp(series),
            "cagr": qs.stats.cagr(series, periods=ppy),
            "annual_volatility": qs.stats.volatility(series, periods=ppy),
            "sharpe": qs.stats.sharpe(series, periods=ppy),
            "sortino": qs.stats.sortino(series, periods=ppy),
            "max_drawdown": q_max_drawdown,
            # quantstats divides by a zero drawdown (inf, or ZeroDivisionError at 0 / 0);
            # empyrical and we call the ratio undefined.
            "calmar": qs.stats.calmar(series, periods=ppy) if q_max_drawdown else math.nan,
            "win_rate": qs.stats.win_rate(series),
            "max_drawdown_bars": int(details["days"].max()) if len(details) else 0,
        }
    if not np.count_nonzero(returns):
        assert theirs["win_rate"] == 0.0 and math.isnan(ours["win_rate"])
        theirs["win_rate"] = math.nan
    if math.isinf(theirs["calmar"]):
        # A CAGR that overflows: quantstats gives inf, we give nan (empyrical too).
        assert math.isnan(ours["calmar"])
        theirs["calmar"] = math.nan
    if np.prod(1.0 + returns) < 1e-3:
        # quantstats builds ending wealth as comp(r) + 1 = (prod(1 + r) - 1) + 1, which
        # keeps ~1e-16 of it absolute: after a near-total loss its CAGR (and Calmar) is
        # off by more than 1e-9 relative. empyrical, which multiplies directly, is the
        # oracle there (test_matches_empyrical).
        theirs["cagr"] = ours["cagr"]
        theirs["calmar"] = ours["calmar"]
    if np.ptp(returns) == 0:
        # Constant returns: pandas' std leaves ~1e-18 where ours is exactly 0.
        assert ours["annual_volatility"] == 0.0
        theirs["annual_volatility"] = 0.0
    assert ours["max_drawdown_bars"] == theirs["max_drawdown_bars"]
    assert_ratio_close(
        ours.pop("sharpe"), theirs.pop("sharpe"), returns, _std(returns), ppy, "sharpe"
    )
    assert_ratio_close(
        ours.pop("sortino"), theirs.pop("sortino"), returns, _downside(returns), ppy, "sortino"
    )
    for key, value in theirs.items():
        assert_close(ours[key], value, key)


@ORACLE_SETTINGS
@given(pair=paired_returns, ppy=st.sampled_from(PPY_CHOICES))
def test_benchmark_metrics_match_quantstats(
    pair: tuple[np.ndarray, np.ndarray], ppy: float
) -> None:
    returns, benchmark = pair
    with no_warnings():
        _, beta = metrics.alpha_beta(returns, benchmark, ppy)
        ir = metrics.information_ratio(returns, benchmark, ppy)
    with oracle_quiet():
        greeks = qs.stats.greeks(_series(returns), _series(benchmark), periods=ppy)
        q_ir = qs.stats.information_ratio(_series(returns), _series(benchmark))
    if not np.std(benchmark) > metrics.DISPERSION_RTOL * np.abs(benchmark).max():
        assert math.isnan(beta)  # quantstats fills an undefined beta with 0
    else:
        assert_close(beta, greeks["beta"], "beta")
    active = returns - benchmark
    if not active.any():
        assert ir == 0.0  # the benchmark itself: 0, as quantstats says
    elif np.ptp(active) == 0:
        assert math.isnan(ir)  # quantstats returns 0 for zero tracking error
    else:
        q_ir = q_ir * math.sqrt(ppy)
        assert_ratio_close(ir, q_ir, active, _std(active), ppy, "information_ratio")


def _with_rates(n: int) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    rates = arrays(np.float64, n, elements=st.floats(0.0, 0.08, allow_subnormal=False))
    return st.tuples(_on_grid(n), rates)


@settings(max_examples=60, deadline=None)
@given(pair=BARS.flatmap(_with_rates), ppy=st.sampled_from(PPY_CHOICES))
# Found by CI before the rounding rule (issue 18): flat returns against rates that agree
# to ten digits. The excess returns' std is ~1e-11 of their size, so empyrical's Sharpe
# was ~7e13 and ours differed from it at 1e-9 relative; both were rounding.
@example(pair=(np.zeros(3), np.array([0.05, 0.05, 0.05 + 2e-11])), ppy=252.0)
@example(pair=(np.full(4, 1e-6), np.array([0.0, 1e-12, 0.0, 1e-12])), ppy=12.0)
def test_per_bar_risk_free_matches_empyrical(
    pair: tuple[np.ndarray, np.ndarray], ppy: float
) -> None:
    returns, rates = pair
    with no_warnings():
        ours_sharpe = metrics.sharpe(returns, ppy, rates)
        ours_sortino = metrics.sortino(returns, ppy, rates)
    with oracle_quiet():
        e_sharpe = empyrical.sharpe_ratio(returns, risk_free=rates / ppy, annualization=ppy)
        e_sortino = empyrical.sortino_ratio(returns, required_return=rates / ppy, annualization=ppy)
    excess = returns - rates / ppy
    assert_ratio_close(ours_sharpe, e_sharpe, excess, _std(excess), ppy, "sharpe")
    assert_ratio_close(ours_sortino, e_sortino, excess, _downside(excess), ppy, "sortino")


def test_where_the_oracles_disagree() -> None:
    returns = np.random.default_rng(7).normal(0.0005, 0.01, 500)
    benchmark = 0.5 * returns + np.random.default_rng(8).normal(0.0002, 0.008, 500)
    series, bench = _series(returns), _series(benchmark)
    ppy, rf = 252.0, 0.05

    # Risk-free: quantstats de-annualises geometrically, empyrical takes what the caller
    # passes; we pass rf / ppy, so quantstats' Sharpe matches empyrical only at the
    # geometric rate.
    geometric = (1 + rf) ** (1 / ppy) - 1
    q_sharpe = qs.stats.sharpe(series, rf=rf, periods=ppy)
    assert q_sharpe == pytest.approx(
        empyrical.sharpe_ratio(returns, risk_free=geometric, annualization=ppy), rel=1e-9
    )
    ours = metrics.sharpe(returns, ppy, rf)
    assert ours == pytest.approx(
        empyrical.sharpe_ratio(returns, risk_free=rf / ppy, annualization=ppy), rel=1e-9
    )
    assert not math.isclose(ours, q_sharpe, rel_tol=1e-6)

    # Alpha: quantstats annualises the per-bar intercept arithmetically and ignores rf;
    # empyrical (and we) compound it. Beta agrees.
    greeks = qs.stats.greeks(series, bench, periods=ppy)
    alpha, beta = metrics.alpha_beta(returns, benchmark, ppy)
    assert beta == pytest.approx(greeks["beta"], rel=1e-9)
    intercept = np.mean(returns - beta * benchmark)
    assert greeks["alpha"] == pytest.approx(intercept * ppy, rel=1e-9)
    assert alpha == pytest.approx((1 + intercept) ** ppy - 1, rel=1e-9)
    assert not math.isclose(alpha, greeks["alpha"], rel_tol=1e-3)

    # Information ratio: both peers report it per bar; ours is annualised.
    ir = metrics.information_ratio(returns, benchmark, ppy)
    assert ir == pytest.approx(empyrical.excess_sharpe(returns, benchmark) * math.sqrt(ppy))
    assert ir == pytest.approx(qs.stats.information_ratio(series, bench) * math.sqrt(ppy))

    # Degenerate inputs: empyrical gives inf for a Sortino with no losing bar and nan for
    # a Calmar with no drawdown; quantstats gives nan and raises ZeroDivisionError; we
    # give nan for both.
    gains = np.array([0.01, 0.02, 0.0, 0.03])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isinf(empyrical.sortino_ratio(gains, annualization=ppy))
        assert math.isnan(qs.stats.sortino(_series(gains), periods=ppy))
        assert math.isnan(empyrical.calmar_ratio(gains, annualization=ppy))
        with pytest.raises(ZeroDivisionError):
            qs.stats.calmar(_series(gains), periods=ppy)
        # No bar moved: quantstats' win rate is 0.0, ours is undefined.
        assert qs.stats.win_rate(_series(np.zeros(5))) == 0.0
    assert math.isnan(metrics.sortino(gains, ppy))
    assert math.isnan(metrics.calmar(gains, ppy))
    assert math.isnan(metrics.win_rate(np.zeros(5)))


# ------------------------------------------------------------------------------ edge cases


@settings(max_examples=150, deadline=None)
@given(returns=any_returns, ppy=st.sampled_from(PPY_CHOICES))
def test_any_returns_give_numbers_or_nan_without_warnings(returns: np.ndarray, ppy: float) -> None:
    benchmark = returns[::-1].copy()
    with no_warnings():
        equity = np.concatenate(([100.0], 100.0 * np.cumprod(1.0 + returns)))
        summary = metrics.summarize(
            equity,
            periods_per_year=ppy,
            risk_free=0.03,
            benchmark_equity=np.concatenate(([100.0], 100.0 * np.cumprod(1.0 + benchmark))),
        )
    for key, value in summary.items():
        assert isinstance(value, float | int), key
        # Only compounding a year of bars can overflow (a +20% hour, every hour).
        assert not math.isinf(value) or key in ("cagr", "alpha"), key
    assert -1.0 <= summary["max_drawdown"] <= 0.0
    assert 0 <= summary["max_drawdown_bars"] <= returns.size


@pytest.mark.parametrize("returns", [np.array([]), np.array([0.01])])
def test_too_few_bars_give_nan_without_warnings(returns: np.ndarray) -> None:
    with no_warnings():
        assert math.isnan(metrics.annual_volatility(returns, 252.0))
        assert math.isnan(metrics.sharpe(returns, 252.0))
        assert math.isnan(metrics.sortino(returns, 252.0))
        assert all(math.isnan(v) for v in metrics.alpha_beta(returns, returns, 252.0))
        assert math.isnan(metrics.tracking_error(returns, returns, 252.0))
        assert math.isnan(metrics.information_ratio(returns, returns, 252.0))
        if returns.size == 0:
            assert math.isnan(metrics.total_return(returns))
            assert math.isnan(metrics.cagr(returns, 252.0))
            assert math.isnan(metrics.max_drawdown(returns))
            assert math.isnan(metrics.win_rate(returns))
            assert metrics.max_drawdown_duration(returns) == 0
        summary = metrics.summarize(
            np.concatenate(([100.0], 100.0 * np.cumprod(1 + returns))),
            periods_per_year=252.0,
            benchmark_equity=np.full(returns.size + 1, 100.0),
            position_units=np.zeros(returns.size + 1),
            fill_units=np.full(returns.size + 1, np.nan),
            fill_price=np.full(returns.size + 1, np.nan),
        )
    assert math.isnan(summary["sharpe"])  # fewer than two returns: nothing to measure
    assert summary["trade_count"] == 0
    assert summary["turnover"] == 0.0


def test_zero_volatility_gives_nan_without_warnings() -> None:
    flat = np.full(50, 0.001)
    with no_warnings():
        assert metrics.annual_volatility(flat, 252.0) == 0.0
        assert math.isnan(metrics.sharpe(flat, 252.0))
        assert math.isnan(metrics.sortino(flat, 252.0))
        assert math.isnan(metrics.calmar(flat, 252.0))
        assert metrics.max_drawdown(flat) == 0.0
        assert metrics.max_drawdown_duration(flat) == 0
        # Identical to its benchmark: no active risk and no active return, ratio 0.
        assert metrics.information_ratio(flat, flat, 252.0) == 0.0
        assert math.isnan(metrics.information_ratio(flat, flat - 0.0005, 252.0))
        assert metrics.tracking_error(flat, flat, 252.0) == 0.0
        assert all(math.isnan(v) for v in metrics.alpha_beta(flat, flat, 252.0))


# Series whose deviation is a given fraction of their size: exactly 0, inside the
# rounding band (1e-12, 1e-10), and just outside it (1e-8, 1e-6, 1e-2), where the ratio
# is a (large) number again. Each case gives our kernel's call and the value by hand.
Case = tuple[Callable[[], float], Callable[[], float]]
ALTERNATING = np.array([1.0, -1.0, 1.0, -1.0])


def _sharpe_case(spread: float) -> Case:
    x = 0.001 * (1.0 + spread * ALTERNATING)
    return (
        lambda: metrics.sharpe(x, 252.0),
        lambda: float(np.mean(x) / np.std(x, ddof=1) * math.sqrt(252.0)),
    )


def _sortino_case(spread: float) -> Case:
    x = np.array([0.001, 0.001, 0.001, -0.001 * spread])
    downside = math.sqrt(float(np.mean(np.minimum(x, 0.0) ** 2)))
    return (
        lambda: metrics.sortino(x, 252.0),
        lambda: float(np.mean(x) * 252.0 / (downside * math.sqrt(252.0))),
    )


def _information_ratio_case(spread: float) -> Case:
    b = np.array([0.01, -0.02, 0.005, 0.0])
    r = b + 0.001 * (1.0 + spread * ALTERNATING)
    active = r - b  # as the kernel sees them, after rounding
    return (
        lambda: metrics.information_ratio(r, b, 252.0),
        lambda: float(np.mean(active) / np.std(active, ddof=1) * math.sqrt(252.0)),
    )


def _beta_case(spread: float) -> Case:
    b = 0.002 * (1.0 + spread * ALTERNATING)
    return lambda: metrics.alpha_beta(2.0 * b, b, 252.0)[1], lambda: 2.0


def _calmar_case(spread: float) -> Case:
    # A 1% gain, then a fall of `spread` of the peak.
    x = np.array([0.01, -spread, 0.0, 0.0])
    return (
        lambda: metrics.calmar(x, 252.0),
        lambda: metrics.cagr(x, 252.0) / spread,
    )


@pytest.mark.parametrize(
    "case", [_sharpe_case, _sortino_case, _information_ratio_case, _beta_case, _calmar_case]
)
def test_each_ratio_at_zero_and_near_zero_dispersion(case: Callable[[float], Case]) -> None:
    """The rounding rule of ``backtest.metrics``: nan in the band, a number outside it."""
    for spread in (0.0, 1e-12, 1e-10):
        ours, _ = case(spread)
        with no_warnings():
            value = ours()
        assert math.isnan(value), f"{case.__name__}({spread}): {value!r}, expected nan"
    for spread in (1e-8, 1e-6, 1e-2):
        ours, by_hand = case(spread)
        with no_warnings():
            value = ours()
        assert math.isfinite(value), f"{case.__name__}({spread}): {value!r}"
        assert math.isclose(value, by_hand(), rel_tol=1e-6), f"{case.__name__}({spread})"


def test_a_flat_series_has_ratio_zero() -> None:
    """Exactly zero at every bar: no risk, no excess, ratio 0 (the peers say 0/0 = nan)."""
    flat = np.zeros(30)
    with no_warnings():
        assert metrics.sharpe(flat, 252.0) == 0.0
        assert metrics.sortino(flat, 252.0) == 0.0
        b = np.linspace(-0.01, 0.01, 30)
        assert metrics.information_ratio(b, b, 252.0) == 0.0
        # Flat in cash against a positive risk-free rate is a steady shortfall: no ratio.
        assert math.isnan(metrics.sharpe(flat, 252.0, risk_free=0.03))


def test_the_rounding_band_is_relative_to_the_series_size() -> None:
    # The same relative spread at any scale gives the same answer: rounding is relative.
    for size in (1e-9, 1e-3, 1.0):
        inside = size * (1.0 + 1e-12 * np.array([1.0, -1.0, 1.0]))
        outside = size * (1.0 + 1e-7 * np.array([1.0, -1.0, 1.0]))
        assert math.isnan(metrics.sharpe(inside, 252.0))
        assert math.isfinite(metrics.sharpe(outside, 252.0))
    # A series centred on zero is all dispersion, however small its values.
    tiny = np.array([1e-15, -1e-15, 2e-15, -2e-15])
    assert math.isfinite(metrics.sharpe(tiny, 252.0))


def test_equity_wiped_out_gives_minus_100_percent_without_warnings() -> None:
    with no_warnings():
        assert metrics.returns_from_equity([100.0, 50.0, 0.0, 10.0]).tolist() == [-0.5, -1.0, 0.0]
        assert metrics.returns_from_equity([100.0, -20.0, -10.0, 5.0]).tolist() == [-1.0, 0, 0]
        summary = metrics.summarize(
            np.array([100.0, 120.0, -30.0, -40.0, 0.0]), periods_per_year=252.0
        )
    assert summary["total_return"] == -1.0
    assert summary["cagr"] == -1.0
    assert summary["max_drawdown"] == -1.0
    assert summary["max_drawdown_bars"] == 3
    assert summary["win_rate"] == 0.5


def test_drawdown_duration_counts_bars_below_the_peak() -> None:
    # peak, 2 bars under, recovery, 3 bars under to the end.
    returns = np.array([0.1, -0.1, 0.05, 0.1, -0.01, -0.01, 0.01])
    assert metrics.max_drawdown_duration(returns) == 3
    # A loss on the first bar is already under the starting value.
    assert metrics.max_drawdown_duration(np.array([-0.1, 0.05, 0.06])) == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: metrics.sharpe(np.zeros((3, 2)), 252.0), "1-D"),
        (lambda: metrics.sharpe(np.array([0.1, np.nan]), 252.0), "NaN"),
        (lambda: metrics.total_return(np.array([0.1, -1.5])), "more than 100%"),
        (lambda: metrics.cagr(np.array([0.1, 0.2]), 0.0), "periods_per_year"),
        (lambda: metrics.cagr(np.array([0.1, 0.2]), math.nan), "periods_per_year"),
        (lambda: metrics.sharpe(np.array([0.1, 0.2]), 252.0, np.zeros(3)), "risk_free"),
        (lambda: metrics.tracking_error(np.zeros(3), np.zeros(4), 252.0), "align"),
        (lambda: metrics.returns_from_equity([0.0, 1.0]), "positive"),
        (lambda: metrics.returns_from_equity([1.0, np.nan]), "NaN"),
        (lambda: metrics.summarize([1.0, 2.0], periods_per_year=1.0, fees_usd=[1.0]), "fees_usd"),
        (lambda: metrics.periods_per_year("2d", "XNYS"), "frequency"),
        (lambda: metrics.periods_per_year("1d", "NOPE"), "calendar"),
        (lambda: metrics.periods_per_year("1d", None, index=[1, 2]), "DatetimeIndex"),
    ],
)
def test_bad_input_raises_config_error(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message):
        call()


# ------------------------------------------------------------------------------ bars per year


@pytest.mark.parametrize(
    ("frequency", "calendar", "expected", "tolerance"),
    [
        ("1d", "XNYS", 252.0, 0.5),
        ("1d", "FX", 260.9, 0.1),
        ("1h", "FX", 24 * 260.9, 5.0),
        ("1d", "24/7", 365.25, 1e-9),
        ("1h", "24/7", 24 * 365.25, 1e-9),
        ("1d", None, 365.25, 1e-9),
        ("1h", None, 24 * 365.25, 1e-9),
    ],
)
def test_periods_per_year_of_calendars(
    frequency: str, calendar: str | None, expected: float, tolerance: float
) -> None:
    assert metrics.periods_per_year(frequency, calendar) == pytest.approx(expected, abs=tolerance)


def test_periods_per_year_from_a_weekday_index() -> None:
    index = pd.bdate_range("2015-01-01", "2019-12-31", tz="UTC")
    assert metrics.periods_per_year("1d", None, index) == pytest.approx(260.9, abs=0.2)
    # Too short a span to measure: fall back to the nominal rate.
    assert metrics.periods_per_year("1d", None, index[:10]) == 365.25


def test_vectorbt_default_year_is_the_365_day_trap() -> None:
    import vectorbt as vbt  # noqa: F401  (registers the .vbt accessor)

    sessions = metrics.periods_per_year("1d", "XNYS")
    index = pd.DatetimeIndex(
        pd.bdate_range("2018-01-02", periods=500, tz="UTC").tz_localize(None), freq=None
    )
    returns = pd.Series(np.random.default_rng(3).normal(0.0005, 0.01, 500), index=index)
    ours = metrics.sharpe(returns.to_numpy(), sessions)

    default = returns.vbt.returns(freq="1D").sharpe_ratio()
    assert default == pytest.approx(ours * math.sqrt(365.0 / sessions), rel=1e-9)
    assert not math.isclose(default, ours, rel_tol=0.1)

    fixed = returns.vbt.returns(freq="1D", year_freq=pd.Timedelta(days=sessions)).sharpe_ratio()
    assert fixed == pytest.approx(ours, rel=1e-9)
