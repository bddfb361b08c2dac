"""Simulated paired experiments for ``backtest.inference``: no true edge unless planted.

Two regimes, 250 daily bars, ``ppy = 252``, the market an AR(1) path (phi 0.3, 1% daily
vol, mean 0) shared by every seed of an asset:

- ``seed``: seed-to-seed variance dominates. ``a@k`` and ``b@k`` share a seed component
  ``c_k`` (1% vol) and load 0.2 on the market; their difference carries a seed-specific
  drift ``+-g_k / 2`` with ``g_k ~ N(0, tau)`` (about 1 annual Sharpe of spread across
  seeds) and a little per-bar noise of its own. ``(a, b)`` is swap-symmetric in law
  (``g -> -g``), so every metric's expected difference is 0.
- ``market``: the shared path dominates. ``a`` loads 0.8 and ``b`` 0.2 on the market, both
  add the same seed component (0.8% vol), and a little noise of their own. Flipping the
  sign of every shock maps the difference of Sharpe ratios (or mean returns) to its
  negative with the same law, so its expectation is 0, while the realised path moves every
  seed's difference the same way.

``edge`` adds a constant per-bar return to ``a`` (an edge in annual Sharpe units of about
``edge * sqrt(252) / 0.0144`` in the seed regime).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Regime = Literal["seed", "market"]

N_BARS = 250
PPY = 252.0
_PHI = 0.3
_TAU = 0.0009  # per-bar drift spread of the seed regime: ~1 Sharpe across seeds


def market_path(rng: np.random.Generator, n_bars: int = N_BARS) -> np.ndarray:
    """An AR(1) path with mean 0 and 1% stationary volatility."""
    shocks = rng.standard_normal(n_bars) * 0.01 * np.sqrt(1.0 - _PHI**2)
    path = np.empty(n_bars)
    path[0] = rng.standard_normal() * 0.01
    for t in range(1, n_bars):
        path[t] = _PHI * path[t - 1] + shocks[t]
    return path


def experiment(
    rng: np.random.Generator,
    regime: Regime,
    n_seeds: int,
    *,
    n_bars: int = N_BARS,
    edge: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One simulated experiment: returns of ``a`` and ``b``, each ``(n_seeds, n_bars)``."""
    market = market_path(rng, n_bars)[None, :]
    own_a = rng.standard_normal((n_seeds, n_bars))
    own_b = rng.standard_normal((n_seeds, n_bars))
    if regime == "seed":
        common = 0.2 * market + rng.standard_normal((n_seeds, n_bars)) * 0.01
        drift = rng.standard_normal((n_seeds, 1)) * _TAU
        a = common + drift / 2 + own_a * 0.003
        b = common - drift / 2 + own_b * 0.003
    else:
        common = rng.standard_normal((n_seeds, n_bars)) * 0.008
        a = 0.8 * market + common + own_a * 0.001
        b = 0.2 * market + common + own_b * 0.001
    return a + edge, b


def rejection_rate(
    regime: Regime,
    n_seeds: int,
    n_experiments: int,
    *,
    reps: int,
    edge: float = 0.0,
    entropy: int = 15,
    alpha: float = 0.05,
) -> float:
    """Share of ``n_experiments`` where :func:`paired_inference` finds ``p < alpha``.

    Every experiment draws its data and its bootstrap from its own child of
    ``SeedSequence(entropy)``, so the rate is the same on every machine and run.
    """
    from backtest.inference import paired_inference

    hits = 0
    for child in np.random.SeedSequence(entropy).spawn(n_experiments):
        data, boot = child.spawn(2)
        a, b = experiment(np.random.default_rng(data), regime, n_seeds, edge=edge)
        result = paired_inference(
            a, b, a="a", b="b", periods_per_year=PPY, seed=boot, reps=reps, alpha=alpha
        )
        hits += result.p_value < alpha
    return hits / n_experiments
