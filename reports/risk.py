"""What quantstats users read first: the worst drawdowns with their dates, VaR and CVaR.

Computed from each strategy's equity curve in the ledger (net of every cost and of LLM
cost), per bar:

- **Drawdowns.** A drawdown starts on the first bar below the running peak and lasts while
  equity stays below it. For each: ``peak`` (the last bar at the old high), ``start``,
  ``trough`` (the lowest bar), ``recovery`` (the first bar back at or above the old peak;
  None when the run ended under water), ``depth`` (the trough's loss from the peak, negative)
  and ``bars`` (bars under water). :func:`worst_drawdowns` returns the deepest ``n``, with the
  same start, trough and depth as ``quantstats.stats.drawdown_details`` (checked in the tests).
- **Value at risk** at 95 %: the 5th percentile of per-bar returns (historical, no
  distribution assumed; ``empyrical.value_at_risk``), and **CVaR**, the mean of the worst 5 %
  of returns (``empyrical.conditional_value_at_risk``'s definition: the lowest
  ``int((n - 1) * 0.05) + 1`` returns). Both are returns (negative numbers are losses) over
  one bar of the data's frequency.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["cvar", "tail_risk", "value_at_risk", "worst_drawdowns"]

#: The tail probability of the VaR and CVaR shown.
CUTOFF = 0.05


def value_at_risk(returns: np.ndarray, cutoff: float = CUTOFF) -> float:
    """The ``cutoff`` quantile of ``returns`` (NaNs left out); NaN when there is none."""
    values = np.asarray(returns, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(np.percentile(values, 100 * cutoff)) if values.size else math.nan


def cvar(returns: np.ndarray, cutoff: float = CUTOFF) -> float:
    """The mean of the worst ``int((n - 1) * cutoff) + 1`` returns (NaNs left out)."""
    values = np.asarray(returns, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not values.size:
        return math.nan
    k = int((values.size - 1) * cutoff)
    return float(np.mean(np.partition(values, k)[: k + 1]))


def tail_risk(equity: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``{strategy: {"var_95": ..., "cvar_95": ...}}`` of the per-bar returns of ``equity``."""
    out = {}
    for name in equity.columns:
        returns = equity[name].pct_change().to_numpy()[1:]
        out[str(name)] = {"var_95": value_at_risk(returns), "cvar_95": cvar(returns)}
    return out


def worst_drawdowns(equity: pd.Series, n: int = 5) -> list[dict[str, Any]]:
    """The ``n`` deepest drawdowns of one equity curve, deepest first (see the module docs)."""
    values = equity.to_numpy(dtype=np.float64)
    index = equity.index
    if values.size < 2:
        return []
    peak = np.maximum.accumulate(values)
    under = values < peak
    episodes = []
    i = 0
    while i < values.size:
        if not under[i]:
            i += 1
            continue
        start = i
        while i < values.size and under[i]:
            i += 1
        end = i  # first bar back at the peak, or len(values) when never
        trough = start + int(np.argmin(values[start:end]))
        top = peak[start]
        episodes.append(
            {
                "peak": index[start - 1] if start > 0 else None,
                "start": index[start],
                "trough": index[trough],
                "recovery": index[end] if end < values.size else None,
                "depth": float(values[trough] / top - 1.0),
                "bars": int(end - start),
            }
        )
    episodes.sort(key=lambda e: (e["depth"], e["start"]))
    return episodes[:n]
