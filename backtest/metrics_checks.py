"""The input checks every metric kernel shares, and the rule that tells rounding from spread.

Returns must be a finite 1-D float series above -100%, ``periods_per_year`` positive and a
benchmark as long as the returns: anything else raises :class:`~backtest.errors.ConfigError`
saying what to change. A deviation of at most :data:`DISPERSION_RTOL` of the series' largest
magnitude is rounding, not dispersion (see :mod:`backtest.metrics`).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from backtest.errors import ConfigError

__all__ = ["DISPERSION_RTOL", "FloatArray"]


FloatArray = NDArray[np.float64]


#: A deviation at most this fraction of the largest magnitude in its series is rounding,
#: not dispersion: a ratio that divides by it is ``nan`` (see the module docstring).
DISPERSION_RTOL = 1.0e-9


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
