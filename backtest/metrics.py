"""Performance metrics of an equity curve: numpy kernels, one pandas edge.

Every kernel takes simple per-bar returns as a 1-D float64 array and an explicit
``periods_per_year``; nothing here assumes 252 or 365 bars a year, because the right
number depends on the market's calendar and the bar frequency (an XNYS daily series
has about 252 bars a year, FX daily about 261, crypto daily 365.25).
:func:`periods_per_year` derives it from the calendar, and is the only function
that touches pandas.

Conventions (each one agrees with a named peer; ``tests/backtest/test_metrics.py``
checks the numbers to 1e-9 relative):

===================== ==================================================================
metric                convention
===================== ==================================================================
cagr                  ``prod(1 + r) ** (ppy / n) - 1`` (empyrical ``annual_return``,
                      quantstats ``cagr``): years are counted in bars, not dates.
annual_volatility     ``std(r, ddof=1) * sqrt(ppy)`` (both peers).
sharpe                ``mean(r - rf/ppy) / std(r - rf/ppy, ddof=1) * sqrt(ppy)``; the
                      annual risk-free rate is de-annualised arithmetically (empyrical,
                      whose caller passes ``rf / ppy``); quantstats de-annualises
                      geometrically, ``(1 + rf) ** (1 / ppy) - 1``.
sortino               ``mean(x) * ppy / (sqrt(mean(min(x, 0) ** 2)) * sqrt(ppy))`` with
                      ``x = r - rf/ppy``: the downside deviation averages the squared
                      shortfalls over *all* bars, not only the losing ones (empyrical
                      ``sortino_ratio`` with ``required_return = rf/ppy``; quantstats
                      ``sortino`` is the same formula at ``rf = 0``).
max_drawdown          most negative ``equity / running_peak - 1`` on the compounded curve
                      that starts at 1 before the first return, so a loss on the first
                      bar counts (both peers).
max_drawdown_duration the longest run of bars closing below the running peak, until the
                      bar that regains it or the end (quantstats ``drawdown_details``
                      "days" on a daily index).
calmar                ``cagr / |max_drawdown|``; ``nan`` without a drawdown or for an
                      infinite CAGR (empyrical; quantstats gives inf or raises).
win_rate              bars with ``r > 0`` over bars with ``r != 0`` (quantstats).
alpha, beta           CAPM on excess returns ``x = r - rf/ppy``, ``y = b - rf/ppy``:
                      ``beta = cov(x, y) / var(y)``, ``alpha = (1 + mean(x - beta*y)) **
                      ppy - 1`` (empyrical ``alpha_beta``; quantstats ``greeks`` has the
                      same beta but an arithmetic ``alpha = mean(r - beta*b) * ppy``).
                      With a per-bar rate, beta is on excess returns too (empyrical's
                      beta ignores ``risk_free``).
tracking_error        ``std(r - b, ddof=1) * sqrt(ppy)``.
information_ratio     ``mean(r - b) * ppy / tracking_error`` = ``mean/std * sqrt(ppy)``:
                      empyrical ``excess_sharpe`` and quantstats ``information_ratio``
                      times ``sqrt(ppy)`` (both peers leave it per bar).
===================== ==================================================================

A metric that is undefined on its input (too few bars, zero dispersion in a
denominator, no drawdown under ``calmar``) is ``nan``: kernels never raise on such
data and never emit floating-point warnings.

Degenerate dispersion (one rule for every ratio). A ratio that divides by a deviation
is ``nan`` when that deviation is zero *or indistinguishable from rounding*: when it is
at most ``DISPERSION_RTOL`` (1e-9) times the largest magnitude in the series it is
computed from. Concretely:

================= ================================ ===================================
ratio             deviation                        measured against
================= ================================ ===================================
sharpe            ``std(x, ddof=1)``               ``max|x|``, ``x = r - rf/ppy``
sortino           ``sqrt(mean(min(x, 0) ** 2))``   ``max|x|``, ``x = r - rf/ppy``
information_ratio ``std(r - b, ddof=1)``           ``max|r - b|``
alpha, beta       ``std(y)``                       ``max|y|``, ``y = b - rf/ppy``
calmar            ``|max_drawdown|``               1 (a drawdown is a fraction of the
                                                   peak, so 1e-9 of it is rounding)
================= ================================ ===================================

One exception: a series that is exactly zero at every bar (a flat book at ``rf = 0``, or
a strategy identical to its benchmark for the information ratio) has ratio **0**, not
``nan``: it took no risk and earned no excess, which is what a ratio of 0 says, and a
control that never trades must stay comparable (the verdict drops ``nan`` seeds; see
``docs/verdict.md``). The peers give ``nan`` (0 / 0) there.

Why: the standard deviation of values that agree to nine significant digits is set by
their last bits, not by the market. ``[0.05, 0.05 + 2e-11] / 252`` has a "volatility"
of 6e-14 and a Sharpe ratio of ~1e9; two correct implementations that sum in a
different order disagree on it in the first digit. No market series is that quiet (a
price tick is ~1e-5 of the price), so such a series is treated as having no
volatility. empyrical and quantstats divide anyway and return such huge numbers, or
``inf`` at exactly zero; at exactly zero all three agree there is no finite ratio,
and this module extends that to the rounding band. ``tests/backtest/test_metrics.py``
compares with the peers using a tolerance that widens with the condition number
``n * eps * max|x| / deviation`` and, inside the band, requires the peer's value to be
``inf``/``nan`` or larger than 1e8 in magnitude. Input that cannot be right (a 2-D array,
NaN returns, a return below -100%, a non-positive ``periods_per_year``) raises
:class:`~backtest.errors.ConfigError` saying what to change.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from backtest.calendars import FREQUENCIES, expected_bars, parse_frequency
from backtest.errors import ConfigError, DataValidationError

__all__ = [
    "DISPERSION_RTOL",
    "alpha_beta",
    "annual_volatility",
    "cagr",
    "calmar",
    "information_ratio",
    "max_drawdown",
    "max_drawdown_duration",
    "periods_per_year",
    "returns_from_equity",
    "sharpe",
    "sortino",
    "summarize",
    "total_return",
    "tracking_error",
    "win_rate",
]

FloatArray = NDArray[np.float64]

# The span periods_per_year averages a calendar over: ten whole years, so leap years,
# holidays and weekday drift average out.
_REFERENCE_FIRST = pd.Timestamp("2010-01-01", tz="UTC")
_REFERENCE_END = pd.Timestamp("2020-01-01", tz="UTC")
_DAYS_PER_YEAR = 365.25
_MIN_EMPIRICAL_SPAN_DAYS = 30.0
#: A deviation at most this fraction of the largest magnitude in its series is rounding,
#: not dispersion: a ratio that divides by it is ``nan`` (see the module docstring).
DISPERSION_RTOL = 1.0e-9


# ---------------------------------------------------------------------------- the pandas edge


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


# ----------------------------------------------------------------------------- input checks


def _vector(values: ArrayLike, name: str) -> FloatArray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{name} must hold numbers, got {type(values).__name__} that numpy cannot read "
            f"as float64 ({exc}); pass a numeric array"
        ) from exc
    if array.ndim != 1:
        raise ConfigError(
            f"{name} must be a 1-D array of per-bar values, got shape {array.shape}; "
            "pass one series at a time (e.g. frame['equity'].to_numpy())"
        )
    return array


def _returns(values: ArrayLike, name: str = "returns") -> FloatArray:
    returns = _vector(values, name)
    bad = ~np.isfinite(returns)
    if bad.any():
        raise ConfigError(
            f"{name} has a NaN or infinite value at position {int(np.argmax(bad))} "
            f"({int(bad.sum())} in all); drop or fill the missing bars before computing metrics"
        )
    if (returns < -1.0).any():
        at = int(np.argmax(returns < -1.0))
        raise ConfigError(
            f"{name}[{at}] = {float(returns[at])!r} is a loss of more than 100%, which simple "
            "returns cannot express; build returns with returns_from_equity(), which caps "
            "a wipe-out at -100%"
        )
    return returns


def _paired(returns: ArrayLike, benchmark_returns: ArrayLike) -> tuple[FloatArray, FloatArray]:
    r = _returns(returns)
    b = _returns(benchmark_returns, "benchmark_returns")
    if r.shape != b.shape:
        raise ConfigError(
            f"returns has {r.size} bars but benchmark_returns has {b.size}; align both on "
            "the same bars before comparing them"
        )
    return r, b


def _check_ppy(periods_per_year: float) -> float:
    ppy = float(periods_per_year)
    if not (math.isfinite(ppy) and ppy > 0):
        raise ConfigError(
            f"periods_per_year must be a positive number, got {periods_per_year!r}; "
            "use backtest.metrics.periods_per_year(frequency, calendar)"
        )
    return ppy


def _per_bar_risk_free(risk_free: float | ArrayLike, n: int, ppy: float) -> float | FloatArray:
    """Turn an annual risk-free rate (scalar or per bar) into a per-bar return."""
    rf = np.asarray(risk_free, dtype=np.float64)
    if rf.ndim == 0:
        if not np.isfinite(rf):
            raise ConfigError(f"risk_free must be a finite annual rate, got {risk_free!r}")
        return float(rf) / ppy
    if rf.shape != (n,) or not np.isfinite(rf).all():
        raise ConfigError(
            f"risk_free must be one annual rate or {n} finite annual rates aligned with the "
            f"returns, got shape {rf.shape}; pass a float such as 0.04 or one rate per bar"
        )
    return rf / ppy


def _sample_std(values: FloatArray) -> float:
    # The std of identical values can come out as ~1e-18 instead of 0: make it exactly 0.
    if values.max() == values.min():
        return 0.0
    return float(np.std(values, ddof=1))


def _degenerate(deviation: float, values: FloatArray) -> bool:
    """Whether ``deviation`` of ``values`` is zero or within rounding of zero.

    The rule of the module docstring: at most :data:`DISPERSION_RTOL` times the largest
    magnitude in ``values``; ``nan`` counts as degenerate.
    """
    return not deviation > DISPERSION_RTOL * float(np.abs(values).max())


# ----------------------------------------------------------------------------------- kernels


def returns_from_equity(equity: ArrayLike) -> FloatArray:
    """Return the simple returns of an equity curve, one fewer than its values.

    An account whose equity reaches zero or below is ruined: the bar that takes it
    there returns -100% and every later bar returns 0, so the compounded curve stays
    at zero instead of flipping sign or dividing by zero.

    Args:
        equity: Account value at the close of each bar; the first value must be positive.

    Returns:
        ``equity[t] / equity[t-1] - 1`` for ``t = 1 .. n-1``.

    Raises:
        ConfigError: If ``equity`` is not 1-D, holds NaN or infinity, or starts at or
            below zero.
    """
    values = _vector(equity, "equity")
    bad = ~np.isfinite(values)
    if bad.any():
        raise ConfigError(
            f"equity has a NaN or infinite value at bar {int(np.argmax(bad))}; every bar "
            "needs an account value (forward-fill marks between trades)"
        )
    if values.size == 0:
        return np.empty(0, dtype=np.float64)
    if values[0] <= 0:
        raise ConfigError(
            f"equity starts at {float(values[0])!r}; the first account value must be positive "
            "(the starting cash)"
        )
    previous, current = values[:-1], values[1:]
    solvent = previous > 0
    ruined_before = np.maximum.accumulate(~solvent)
    returns = np.zeros(current.size, dtype=np.float64)
    live = ~ruined_before
    returns[live] = current[live] / previous[live] - 1.0
    return np.maximum(returns, -1.0)


def total_return(returns: ArrayLike) -> float:
    """Return the compounded return ``prod(1 + r) - 1``.

    Args:
        returns: Simple per-bar returns.

    Returns:
        The total return, ``nan`` for no bars.
    """
    r = _returns(returns)
    if r.size == 0:
        return math.nan
    return float(np.prod(1.0 + r) - 1.0)


def cagr(returns: ArrayLike, periods_per_year: float) -> float:
    """Return the compound annual growth rate, counting years in bars.

    ``prod(1 + r) ** (periods_per_year / len(r)) - 1``, as empyrical's
    ``annual_return``.

    Args:
        returns: Simple per-bar returns.
        periods_per_year: Bars per year, from :func:`periods_per_year`.

    Returns:
        The annual growth rate, ``nan`` for no bars (``inf`` if it overflows).
    """
    r = _returns(returns)
    ppy = _check_ppy(periods_per_year)
    if r.size == 0:
        return math.nan
    with np.errstate(over="ignore"):
        return float(np.prod(1.0 + r) ** (ppy / r.size) - 1.0)


def annual_volatility(returns: ArrayLike, periods_per_year: float) -> float:
    """Return the annualised standard deviation ``std(r, ddof=1) * sqrt(periods_per_year)``.

    Args:
        returns: Simple per-bar returns.
        periods_per_year: Bars per year, from :func:`periods_per_year`.

    Returns:
        The annual volatility, ``nan`` for fewer than 2 bars, exactly 0 for constant returns.
    """
    r = _returns(returns)
    ppy = _check_ppy(periods_per_year)
    if r.size < 2:
        return math.nan
    return _sample_std(r) * math.sqrt(ppy)


def sharpe(
    returns: ArrayLike, periods_per_year: float, risk_free: float | ArrayLike = 0.0
) -> float:
    """Return the annualised Sharpe ratio of returns in excess of the risk-free rate.

    ``mean(x) / std(x, ddof=1) * sqrt(periods_per_year)`` with
    ``x = r - risk_free / periods_per_year`` (empyrical's convention).

    Args:
        returns: Simple per-bar returns.
        periods_per_year: Bars per year, from :func:`periods_per_year`.
        risk_free: Annual risk-free rate, one number or one per bar aligned with
            ``returns``.

    Returns:
        The Sharpe ratio, ``nan`` for fewer than 2 bars or a degenerate volatility
        (zero, or at most ``DISPERSION_RTOL * max|x|``).
    """
    r = _returns(returns)
    ppy = _check_ppy(periods_per_year)
    excess = r - _per_bar_risk_free(risk_free, r.size, ppy)
    if excess.size < 2:
        return math.nan
    if not excess.any():
        return 0.0  # no risk and no excess: see the module docstring
    deviation = _sample_std(excess)
    if _degenerate(deviation, excess):
        return math.nan
    return float(np.mean(excess)) / deviation * math.sqrt(ppy)


def sortino(
    returns: ArrayLike, periods_per_year: float, risk_free: float | ArrayLike = 0.0
) -> float:
    """Return the annualised Sortino ratio against the risk-free rate as the target.

    ``mean(x) * ppy / (sqrt(mean(min(x, 0) ** 2)) * sqrt(ppy))`` with
    ``x = r - risk_free / ppy``. The downside deviation averages squared shortfalls
    over every bar, the convention of Sortino & Forsey and of empyrical's
    ``sortino_ratio`` (quantstats' ``sortino`` is the same at ``risk_free=0``); the
    standard deviation of the losing bars alone would understate downside risk.

    Args:
        returns: Simple per-bar returns.
        periods_per_year: Bars per year, from :func:`periods_per_year`.
        risk_free: Annual risk-free rate, one number or one per bar aligned with
            ``returns``.

    Returns:
        The Sortino ratio, ``nan`` for fewer than 2 bars, no bar below the target, or
        a downside deviation of at most ``DISPERSION_RTOL * max|x|``.
    """
    r = _returns(returns)
    ppy = _check_ppy(periods_per_year)
    excess = r - _per_bar_risk_free(risk_free, r.size, ppy)
    if excess.size < 2:
        return math.nan
    if not excess.any():
        return 0.0  # no risk and no excess: see the module docstring
    shortfall = np.minimum(excess, 0.0)
    downside = math.sqrt(float(np.mean(shortfall * shortfall)))
    if _degenerate(downside, excess):
        return math.nan
    return float(np.mean(excess) * ppy / (downside * math.sqrt(ppy)))


def _drawdowns(returns: FloatArray) -> FloatArray:
    """Drawdown after each bar on the compounded curve that starts at 1 before bar 0."""
    curve = np.cumprod(1.0 + returns)
    peak = np.maximum(np.maximum.accumulate(curve), 1.0)
    return curve / peak - 1.0


def max_drawdown(returns: ArrayLike) -> float:
    """Return the largest peak-to-trough fall of the compounded equity curve.

    The curve starts at 1 before the first return, so a loss on the first bar is a
    drawdown.

    Args:
        returns: Simple per-bar returns.

    Returns:
        The drawdown as a negative fraction (-0.25 for a 25% fall), 0 when the curve
        never falls, ``nan`` for no bars.
    """
    r = _returns(returns)
    if r.size == 0:
        return math.nan
    return float(min(_drawdowns(r).min(), 0.0))


def max_drawdown_duration(returns: ArrayLike) -> int:
    """Return the longest run of consecutive bars spent below a previous peak.

    A run counts the bars that close under the running peak, from the first one until
    the curve regains the peak (that bar is not counted) or the series ends.

    Args:
        returns: Simple per-bar returns.

    Returns:
        The longest run, in bars; 0 for no bars or a curve that never falls.
    """
    r = _returns(returns)
    if r.size == 0:
        return 0
    underwater = _drawdowns(r) < 0.0
    if not underwater.any():
        return 0
    # Lengths of runs of True: differences between the edges of a padded 0/1 signal.
    edges = np.flatnonzero(np.diff(np.concatenate(([0], underwater.astype(np.int8), [0]))))
    return int((edges[1::2] - edges[0::2]).max())


def calmar(returns: ArrayLike, periods_per_year: float) -> float:
    """Return the Calmar ratio ``cagr / |max_drawdown|``.

    Args:
        returns: Simple per-bar returns.
        periods_per_year: Bars per year, from :func:`periods_per_year`.

    Returns:
        The Calmar ratio, ``nan`` for no bars, an infinite CAGR, or no drawdown
        deeper than ``DISPERSION_RTOL`` (a fall of 1e-9 of the peak is rounding).
    """
    drawdown = max_drawdown(returns)
    if not drawdown < -DISPERSION_RTOL:
        return math.nan
    ratio = cagr(returns, periods_per_year) / abs(drawdown)
    return ratio if math.isfinite(ratio) else math.nan


def win_rate(returns: ArrayLike) -> float:
    """Return the fraction of bars with a gain among the bars that moved.

    Bars with a return of exactly zero (flat, or no position) are left out of both
    counts, as in quantstats' ``win_rate``.

    Args:
        returns: Simple per-bar returns.

    Returns:
        ``count(r > 0) / count(r != 0)``, ``nan`` when no bar moved.
    """
    r = _returns(returns)
    moved = int(np.count_nonzero(r))
    if moved == 0:
        return math.nan
    return int(np.count_nonzero(r > 0)) / moved


def alpha_beta(
    returns: ArrayLike,
    benchmark_returns: ArrayLike,
    periods_per_year: float,
    risk_free: float | ArrayLike = 0.0,
) -> tuple[float, float]:
    """Return the CAPM alpha (annualised) and beta against a benchmark.

    On excess returns ``x = r - rf/ppy`` and ``y = b - rf/ppy``:
    ``beta = cov(x, y) / var(y)`` and ``alpha = (1 + mean(x - beta * y)) ** ppy - 1``,
    empyrical's ``alpha_beta``.

    Args:
        returns: Simple per-bar returns of the strategy.
        benchmark_returns: Simple per-bar returns of the benchmark, same bars.
        periods_per_year: Bars per year, from :func:`periods_per_year`.
        risk_free: Annual risk-free rate, one number or one per bar.

    Returns:
        ``(alpha, beta)``; both ``nan`` for fewer than 2 bars or a benchmark whose
        excess returns have a degenerate deviation (the module's rule).

    Raises:
        ConfigError: If the two series differ in length.
    """
    r, b = _paired(returns, benchmark_returns)
    ppy = _check_ppy(periods_per_year)
    rf = _per_bar_risk_free(risk_free, r.size, ppy)
    if r.size < 2:
        return math.nan, math.nan
    x, y = r - rf, b - rf
    y_centred = y - np.mean(y)
    variance = float(np.mean(y_centred * y_centred))
    if y.max() == y.min() or _degenerate(math.sqrt(variance), y):
        return math.nan, math.nan
    # Centring both sides keeps a constant x (a flat strategy) at a beta of exactly 0.
    beta = float(np.mean(y_centred * (x - np.mean(x)))) / variance
    with np.errstate(over="ignore", invalid="ignore"):
        alpha = float((1.0 + np.mean(x - beta * y)) ** ppy - 1.0)
    return alpha, beta


def tracking_error(
    returns: ArrayLike, benchmark_returns: ArrayLike, periods_per_year: float
) -> float:
    """Return the annualised standard deviation of active returns ``r - b``.

    Args:
        returns: Simple per-bar returns of the strategy.
        benchmark_returns: Simple per-bar returns of the benchmark, same bars.
        periods_per_year: Bars per year, from :func:`periods_per_year`.

    Returns:
        ``std(r - b, ddof=1) * sqrt(ppy)``, ``nan`` for fewer than 2 bars.

    Raises:
        ConfigError: If the two series differ in length.
    """
    r, b = _paired(returns, benchmark_returns)
    ppy = _check_ppy(periods_per_year)
    # Active returns may fall below -100% (a wiped-out strategy against a rising
    # benchmark), so they are not checked as returns.
    active = r - b
    if active.size < 2:
        return math.nan
    return _sample_std(active) * math.sqrt(ppy)


def information_ratio(
    returns: ArrayLike, benchmark_returns: ArrayLike, periods_per_year: float
) -> float:
    """Return the annualised information ratio.

    The annualised mean active return over the tracking error,
    ``mean(r - b) * ppy / (std(r - b, ddof=1) * sqrt(ppy))``. empyrical's
    ``excess_sharpe`` and quantstats' ``information_ratio`` give the per-bar ratio;
    this is theirs times ``sqrt(ppy)``, comparable with an annual Sharpe ratio.

    Args:
        returns: Simple per-bar returns of the strategy.
        benchmark_returns: Simple per-bar returns of the benchmark, same bars.
        periods_per_year: Bars per year, from :func:`periods_per_year`.

    Returns:
        The information ratio, ``nan`` for fewer than 2 bars or a degenerate tracking
        error (zero, or at most ``DISPERSION_RTOL * max|r - b|``).

    Raises:
        ConfigError: If the two series differ in length.
    """
    r, b = _paired(returns, benchmark_returns)
    ppy = _check_ppy(periods_per_year)
    active = r - b
    if active.size < 2:
        return math.nan
    if not active.any():
        return 0.0  # the benchmark itself: no active risk, no active return
    deviation = _sample_std(active)
    if _degenerate(deviation, active):
        return math.nan
    return float(np.mean(active)) * ppy / (deviation * math.sqrt(ppy))


# ----------------------------------------------------------------------------------- summary


def _aligned(values: ArrayLike, name: str, n: int) -> FloatArray:
    array = _vector(values, name)
    if array.size != n:
        raise ConfigError(
            f"{name} has {array.size} values but equity has {n}; every per-bar array must "
            "have one value per bar of the equity curve"
        )
    return array


def summarize(
    equity: ArrayLike,
    *,
    periods_per_year: float,
    risk_free: float | ArrayLike = 0.0,
    benchmark_equity: ArrayLike | None = None,
    position_units: ArrayLike | None = None,
    exposure: ArrayLike | None = None,
    fill_units: ArrayLike | None = None,
    fill_price: ArrayLike | None = None,
    fees_usd: ArrayLike | None = None,
) -> dict[str, float]:
    """Compute every metric of one run as a flat dict of plain numbers.

    All arrays hold one value per bar, aligned with ``equity``. Keys whose inputs are
    missing are left out: ``time_in_market`` needs ``position_units``; ``exposure`` needs
    ``exposure``; ``trade_count`` needs
    ``fill_units``; ``turnover`` needs ``fill_units`` and ``fill_price``; ``fees_usd``
    needs ``fees_usd``; ``alpha``, ``beta``, ``information_ratio`` and
    ``tracking_error`` need ``benchmark_equity``.

    Args:
        equity: Account value at the close of each bar.
        periods_per_year: Bars per year, from :func:`periods_per_year`.
        risk_free: Annual risk-free rate, one number or one per bar of ``equity``; the
            rate at bar ``t`` applies to the return from ``t-1`` to ``t``.
        benchmark_equity: Value of a benchmark holding at each bar.
        position_units: Signed position held at each bar's close.
        exposure: Signed value of the position over equity at each bar's close (0.5 for
            half the account long).
        fill_units: Signed units filled at each bar; NaN or 0 means no fill.
        fill_price: Price of each bar's fill; NaN where there was none.
        fees_usd: Fees paid at each bar; NaN means none.

    Returns:
        ``total_return``, ``cagr``, ``annual_volatility``, ``sharpe``, ``sortino``,
        ``calmar``, ``max_drawdown``, ``max_drawdown_bars`` (int), ``win_rate``, and
        when their inputs are given ``exposure`` (mean absolute exposure, ``mean(|e|)``:
        how much of the account was at risk on average), ``time_in_market`` (fraction of
        bars with a non-zero position, however small), ``turnover`` (traded notional
        over mean equity, per year), ``trade_count`` (int, bars with a fill),
        ``fees_usd``, ``alpha``, ``beta``, ``information_ratio`` and ``tracking_error``.

    Raises:
        ConfigError: If an array is not 1-D, is not aligned with ``equity``, or holds a
            value that cannot be right (NaN equity or positions).
    """
    values = _vector(equity, "equity")
    n = values.size
    ppy = _check_ppy(periods_per_year)
    returns = returns_from_equity(values)
    # A per-bar rate at bar t applies to the return from t-1 to t, labelled t.
    rf = risk_free if np.ndim(risk_free) == 0 else _aligned(risk_free, "risk_free", n)[1:]

    summary: dict[str, float] = {
        "total_return": total_return(returns),
        "cagr": cagr(returns, ppy),
        "annual_volatility": annual_volatility(returns, ppy),
        "sharpe": sharpe(returns, ppy, rf),
        "sortino": sortino(returns, ppy, rf),
        "calmar": calmar(returns, ppy),
        "max_drawdown": max_drawdown(returns),
        "max_drawdown_bars": max_drawdown_duration(returns),
        "win_rate": win_rate(returns),
    }
    if position_units is not None:
        positions = _aligned(position_units, "position_units", n)
        if np.isnan(positions).any():
            raise ConfigError(
                f"position_units is NaN at bar {int(np.argmax(np.isnan(positions)))}; a "
                "position is always known, use 0.0 for flat"
            )
        summary["time_in_market"] = float(np.count_nonzero(positions) / n) if n else math.nan
    if exposure is not None:
        held = _aligned(exposure, "exposure", n)
        if np.isnan(held).any():
            raise ConfigError(
                f"exposure is NaN at bar {int(np.argmax(np.isnan(held)))}; an exposure is "
                "always known, use 0.0 for flat"
            )
        summary["exposure"] = float(np.mean(np.abs(held))) if n else math.nan
    if fill_units is not None:
        units = _aligned(fill_units, "fill_units", n)
        filled = np.isfinite(units) & (units != 0)
        summary["trade_count"] = int(np.count_nonzero(filled))
        if fill_price is not None:
            prices = _aligned(fill_price, "fill_price", n)
            notional = np.abs(units[filled] * prices[filled])
            mean_equity = float(np.mean(values)) if n else math.nan
            if mean_equity > 0 and np.isfinite(notional).all():
                summary["turnover"] = float(notional.sum()) / mean_equity * ppy / n
            else:
                summary["turnover"] = math.nan
    if fees_usd is not None:
        summary["fees_usd"] = float(np.nansum(_aligned(fees_usd, "fees_usd", n)))
    if benchmark_equity is not None:
        benchmark = returns_from_equity(_aligned(benchmark_equity, "benchmark_equity", n))
        alpha, beta = alpha_beta(returns, benchmark, ppy, rf)
        summary["alpha"] = alpha
        summary["beta"] = beta
        summary["information_ratio"] = information_ratio(returns, benchmark, ppy)
        summary["tracking_error"] = tracking_error(returns, benchmark, ppy)
    return summary
