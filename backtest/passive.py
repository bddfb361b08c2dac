"""Passive positions of the same risk as a strategy: the ``buy_and_hold~matched`` controls.

A strategy that holds the market a fifth of the time and beats a DRL agent that lost money
may only be taking less risk. The verdict compares it with the benchmark held passively at
the strategy's own realised risk, member by member (seed by seed), on the same bars:

``buy_and_hold~matched:<strategy>``
    A constant exposure ``e`` to the benchmark, ``e`` = the strategy's realised mean
    absolute exposure over the evaluated bars (``mean(|exposure_t|)`` from its ledger),
    rebalanced every bar, with cash earning what it earns in the env (nothing): per-bar
    returns ``e * b_t``. Its mean |exposure| is ``e`` exactly.
``buy_and_hold~voltarget:<strategy>``
    The benchmark scaled to the strategy's realised volatility: ``k * b_t`` with
    ``k = std(r) / std(b)`` (sample std), so its volatility equals the strategy's exactly.

Both are frictionless (no fees, no slippage, rebalanced for free), which flatters the
passive side: a strategy that beats them beats a passive position of the same risk by at
least that much. Both are ex post (the exposure is known only after the run), which is
what a control of "same risk" needs, and not a tradable strategy.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from backtest.metrics import DISPERSION_RTOL

__all__ = ["MATCHED", "VOLTARGET", "matched_exposure_returns", "matched_volatility_returns"]

#: Name prefixes of the passive controls: ``<prefix><strategy>``.
MATCHED = "buy_and_hold~matched:"
VOLTARGET = "buy_and_hold~voltarget:"


def _vector(values: ArrayLike, name: str) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(
            f"{name} holds a NaN or an infinity at {int(np.argmin(np.isfinite(array)))}"
        )
    return array


def matched_exposure_returns(
    benchmark_returns: ArrayLike, exposure: ArrayLike
) -> tuple[NDArray[np.float64], float]:
    """Per-bar returns of the benchmark held at the strategy's mean absolute exposure.

    Args:
        benchmark_returns: Simple per-bar returns of the benchmark.
        exposure: The strategy's signed exposure (position value over equity) at each
            bar's close, over the same bars.

    Returns:
        ``(returns, e)``: ``e * benchmark_returns`` and ``e = mean(|exposure|)``.
    """
    b = _vector(benchmark_returns, "benchmark_returns")
    e_t = _vector(exposure, "exposure")
    if b.size != e_t.size:
        raise ValueError(f"{e_t.size} exposures but {b.size} benchmark returns")
    if e_t.size == 0:
        return b.copy(), math.nan
    level = float(np.mean(np.abs(e_t)))
    return level * b, level


def matched_volatility_returns(
    benchmark_returns: ArrayLike, strategy_returns: ArrayLike
) -> tuple[NDArray[np.float64], float]:
    """Per-bar returns of the benchmark scaled to the strategy's realised volatility.

    Returns:
        ``(returns, k)``: ``k * benchmark_returns`` with ``k = std(r) / std(b)``
        (``ddof=1``); ``k`` is ``nan`` (and the returns all ``nan``) when there are fewer
        than 2 bars or the benchmark's volatility is degenerate by the rule of
        :mod:`backtest.metrics` (at most ``DISPERSION_RTOL`` of its largest return).
    """
    b = _vector(benchmark_returns, "benchmark_returns")
    r = _vector(strategy_returns, "strategy_returns")
    if b.size != r.size:
        raise ValueError(f"{r.size} strategy returns but {b.size} benchmark returns")
    if b.size < 2 or not np.std(b, ddof=1) > DISPERSION_RTOL * float(np.abs(b).max()):
        return np.full(b.size, math.nan), math.nan
    scale = float(np.std(r, ddof=1) / np.std(b, ddof=1))
    return scale * b, scale
