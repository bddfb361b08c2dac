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

import numpy as np
from numpy.typing import ArrayLike

from backtest.errors import ConfigError
from backtest.metrics_checks import (  # noqa: F401 (re-exported: the old home of these names)
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
from backtest.metrics_kernels import (  # noqa: F401 (re-exported: the old home of these names)
    _drawdowns,
    alpha_beta,
    annual_volatility,
    cagr,
    calmar,
    information_ratio,
    max_drawdown,
    max_drawdown_duration,
    returns_from_equity,
    sharpe,
    sortino,
    total_return,
    tracking_error,
    win_rate,
)
from backtest.metrics_periods import (  # noqa: F401 (re-exported: the old home of these names)
    _DAYS_PER_YEAR,
    _MIN_EMPIRICAL_SPAN_DAYS,
    _REFERENCE_END,
    _REFERENCE_FIRST,
    _calendar_periods_per_year,
    periods_per_year,
)

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
