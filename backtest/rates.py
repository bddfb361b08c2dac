"""Risk-free rates: a constant annual rate, or a file of annual rates taken as of each bar.

Shared by the engine (the run's metrics) and :mod:`backtest.compare` (``backtest compare``
recomputes a comparison from a run directory), so neither imports the other for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from backtest.errors import ConfigError

__all__ = ["risk_free_rates"]


def risk_free_rates(value: float | str, index: pd.DatetimeIndex) -> float | np.ndarray:
    """Return a constant annual rate, or read a file of annual rates taken as of each bar.

    Raises:
        ConfigError: The file cannot be read, lacks ``timestamp``/``rate`` columns, or
            starts after the first bar of ``index``.
    """
    if not isinstance(value, str):
        return float(value)
    path = Path(value)
    try:
        rates = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"risk_free_rate: cannot read {path} ({exc}). Fix: give an annual "
            "rate such as 0.02, or a CSV/Parquet file with timestamp and rate "
            "columns."
        ) from exc
    if not {"timestamp", "rate"} <= set(rates.columns):
        raise ConfigError(
            f"risk_free_rate: {path} needs columns 'timestamp' and 'rate' (has "
            f"{', '.join(map(str, rates.columns))})."
        )
    stamps = pd.DatetimeIndex(pd.to_datetime(rates["timestamp"], utc=True)).as_unit("ns")
    order = np.argsort(stamps.asi8, kind="stable")
    known = stamps.asi8[order]
    values = rates["rate"].to_numpy(dtype=np.float64)[order]
    positions = np.searchsorted(known, index.as_unit("ns").asi8, side="right") - 1
    if (positions < 0).any():
        raise ConfigError(
            f"risk_free_rate: {path} starts at {stamps.min()}, after the first "
            f"evaluated bar {index[0]}. Fix: add earlier rates."
        )
    return values[positions]
