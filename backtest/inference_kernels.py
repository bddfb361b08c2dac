"""The paired bootstrap's building blocks: resampled indices, vectorised metrics, block length.

:func:`stationary_bootstrap_indices` draws Politis-Romano stationary-bootstrap indices (mean
block length given, wrapping at the end); the metrics (:data:`METRICS`) are computed on
whole stacks of replicates at once; :func:`politis_white_block_length` picks a block length
from the data. :func:`backtest.inference.paired_inference` puts them together.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from backtest.errors import ConfigError
from backtest.metrics import DISPERSION_RTOL

__all__ = [
    "METRICS",
    "FloatArray",
    "Metric",
    "annualised_return",
    "annualised_sharpe",
    "max_drawdown",
    "politis_white_block_length",
    "stationary_bootstrap_indices",
]


FloatArray = NDArray[np.float64]
Metric = Literal["sharpe", "annual_return", "max_drawdown"]


# A standard deviation this small next to the series' magnitude is rounding, not risk:
# the rule of backtest.metrics, so a Sharpe ratio is NaN here exactly when it is there.
_DEGENERATE_STD = DISPERSION_RTOL


def stationary_bootstrap_indices(
    n: int, reps: int, block_size: float, rng: np.random.Generator
) -> np.ndarray:
    """Draw ``reps`` stationary-bootstrap resamples of ``range(n)`` (circular blocks).

    Each resample starts at a uniform bar; each later position starts a new block at a
    uniform bar with probability ``1 / block_size`` and otherwise continues the block
    with the next bar (wrapping around), so block lengths are geometric with mean
    ``block_size``.

    Returns:
        An ``(reps, n)`` integer array of bar indices.
    """
    if n < 1 or reps < 1:
        raise ConfigError(f"bootstrap: need n >= 1 and reps >= 1 (got n={n}, reps={reps})")
    if not block_size >= 1:
        raise ConfigError(f"bootstrap: block_size must be >= 1 (got {block_size})")
    starts = rng.integers(0, n, size=(reps, n))
    new = rng.random((reps, n)) < 1.0 / block_size
    new[:, 0] = True
    positions = np.arange(n)
    # The position where the current block began, for every position.
    began = np.maximum.accumulate(np.where(new, positions, 0), axis=1)
    first = np.take_along_axis(starts, began, axis=1)
    return (first + (positions - began)) % n


def annualised_sharpe(
    returns: ArrayLike, periods_per_year: float, risk_free_per_bar: ArrayLike = 0.0
) -> FloatArray:
    """Return ``mean(x) / std(x, ddof=1) * sqrt(ppy)`` along the last axis, ``x = r - rf``.

    A std of 0, or at most ``1e-9 * max|x|``, is no volatility: the ratio is NaN, except
    for a series that is exactly 0 at every bar (flat in cash), whose ratio is 0: the rule
    of :mod:`backtest.metrics`.

    Args:
        returns: Per-bar simple returns; the last axis is bars, any leading axes.
        periods_per_year: Bars per year.
        risk_free_per_bar: Risk-free return per bar, broadcast against ``returns``.

    Returns:
        The Sharpe ratios, shaped like ``returns`` without its last axis.
    """
    x = np.asarray(returns, np.float64) - np.asarray(risk_free_per_bar, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.std(x, axis=-1, ddof=1)
        scale = np.max(np.abs(x), axis=-1)
        ok = (std > 0) & (std > _DEGENERATE_STD * scale)
        ratio = np.mean(x, axis=-1) / np.where(ok, std, 1.0) * math.sqrt(periods_per_year)
    return np.where(ok, ratio, np.where(scale == 0, 0.0, np.nan))


def annualised_return(returns: ArrayLike, periods_per_year: float) -> FloatArray:
    """Return the geometric annual return ``prod(1 + r) ** (ppy / n) - 1`` along the last axis.

    Args:
        returns: Per-bar simple returns; the last axis is bars.
        periods_per_year: Bars per year.

    Returns:
        The annual returns (NaN where a return is below -100% or NaN).
    """
    r = np.asarray(returns, np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        growth = np.sum(np.log1p(r), axis=-1) * (periods_per_year / r.shape[-1])
        return np.expm1(growth)


def max_drawdown(returns: ArrayLike) -> FloatArray:
    """Return the most negative ``curve / running_peak - 1`` along the last axis.

    The compounded curve starts at 1 before the first return (``backtest.metrics``).

    Args:
        returns: Per-bar simple returns; the last axis is bars.

    Returns:
        Drawdowns as negative fractions (0 when the curve never falls).
    """
    curve = np.cumprod(1.0 + np.asarray(returns, np.float64), axis=-1)
    peak = np.maximum(np.maximum.accumulate(curve, axis=-1), 1.0)
    return np.minimum(np.min(curve / peak - 1.0, axis=-1), 0.0)


_MetricFn = Callable[[FloatArray, FloatArray, float], FloatArray]

#: The metrics by name: ``fn(returns, risk_free_per_bar, periods_per_year)``.
METRICS: dict[str, _MetricFn] = {
    "sharpe": lambda r, rf, ppy: annualised_sharpe(r, ppy, rf),
    "annual_return": lambda r, rf, ppy: annualised_return(r, ppy),
    "max_drawdown": lambda r, rf, ppy: max_drawdown(r),
}


def politis_white_block_length(x: ArrayLike) -> int:
    """Return the stationary-bootstrap block length of Politis and White for ``x``.

    ``ceil`` of the ``stationary`` column of ``arch.bootstrap.optimal_block_length``,
    clamped to ``[1, len(x) // 4]``; 1 for fewer than 10 bars or a constant series.
    """
    from arch.bootstrap import optimal_block_length

    series = np.asarray(x, np.float64)
    if series.size < 10 or not np.isfinite(series).all() or np.ptp(series) == 0:
        return 1
    value = float(optimal_block_length(series)["stationary"].iloc[0])
    if not math.isfinite(value):
        return 1
    return int(min(max(math.ceil(value), 1), max(1, series.size // 4)))
