"""The metric kernels: numpy functions of per-bar simple returns.

Each one follows the convention, and agrees with the peer, named in the table of
:mod:`backtest.metrics`; a metric undefined on its input is ``nan``, a bad input raises.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from backtest.errors import ConfigError
from backtest.metrics_checks import (
    DISPERSION_RTOL,
    FloatArray,
    _check_ppy,
    _degenerate,
    _paired,
    _per_bar_risk_free,
    _returns,
    _sample_std,
    _vector,
)

__all__ = [
    "alpha_beta",
    "annual_volatility",
    "cagr",
    "calmar",
    "information_ratio",
    "max_drawdown",
    "max_drawdown_duration",
    "returns_from_equity",
    "sharpe",
    "sortino",
    "total_return",
    "tracking_error",
    "win_rate",
]


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
