"""Causal features, computed once per dataset as a float32 matrix.

Every feature at bar *t* is a function of bars ``0..t`` only (rolling windows and
exponential averages run forward in time; nothing is centred, back-filled or normalised
with statistics of the whole series). The first bars, where a window is not yet full, are
NaN; :attr:`Features.first_valid` is the first bar at which every column is defined.

=================== =====================================================================
column              definition
=================== =====================================================================
``log_return``      ln(close_t / close_{t-1})
``open_rel``        open_t / close_t - 1
``high_rel``        high_t / close_t - 1
``low_rel``         low_t / close_t - 1
``close_sma_rel``   close_t / SMA(close, 20)_t - 1
``rsi``             Wilder RSI(14) / 100 - 0.5  (in [-0.5, 0.5])
``macd``            (EMA12 - EMA26) / close_t
``macd_signal``     EMA9 of the MACD line, / close_t
``atr``             Wilder ATR(14) / close_t
``volatility``      std of log_return over 20 bars (ddof=1)
``volume_z``        (volume_t - mean_20) / std_20 of volume; 0 when std is 0
=================== =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["FEATURE_NAMES", "Features", "compute_features"]

FEATURE_NAMES: tuple[str, ...] = (
    "log_return",
    "open_rel",
    "high_rel",
    "low_rel",
    "close_sma_rel",
    "rsi",
    "macd",
    "macd_signal",
    "atr",
    "volatility",
    "volume_z",
)


@dataclass(frozen=True, slots=True)
class Features:
    """A feature matrix aligned with the bars it was computed from.

    Attributes:
        values: float32 array of shape (n_bars, n_features); read-only.
        names: Column names, in order.
        first_valid: First bar index at which every column is finite.
    """

    values: np.ndarray
    names: tuple[str, ...]
    first_valid: int


def _wilder(values: pd.Series, period: int) -> pd.Series:
    return values.ewm(alpha=1.0 / period, adjust=False, min_periods=period).mean()


def compute_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
) -> Features:
    """Compute the documented causal features from OHLCV arrays."""
    c = pd.Series(close, dtype=np.float64)
    log_ret = np.log(c / c.shift(1))
    prev_close = c.shift(1)
    true_range = pd.concat(
        [
            pd.Series(high - low),
            (pd.Series(high) - prev_close).abs(),
            (pd.Series(low) - prev_close).abs(),
        ],
        axis=1,
    ).max(axis=1, skipna=False)
    delta = c.diff()
    gain = _wilder(delta.clip(lower=0.0), 14)
    loss = _wilder((-delta).clip(lower=0.0), 14)
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = np.where(loss.to_numpy() == 0.0, 1.0, 1.0 - 1.0 / (1.0 + gain / loss))
    rsi = np.where(np.isnan(gain.to_numpy()), np.nan, rsi)
    ema12 = c.ewm(span=12, adjust=False, min_periods=12).mean()
    ema26 = c.ewm(span=26, adjust=False, min_periods=26).mean()
    macd = ema12 - ema26
    signal = macd.ewm(span=9, adjust=False, min_periods=9).mean()
    vol = pd.Series(volume, dtype=np.float64)
    vol_mean = vol.rolling(20).mean()
    vol_std = vol.rolling(20).std(ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        volume_z = np.where(vol_std.to_numpy() > 0, (vol - vol_mean) / vol_std, 0.0)
    volume_z = np.where(np.isnan(vol_std.to_numpy()), np.nan, volume_z)
    columns = [
        log_ret.to_numpy(),
        open_ / close - 1.0,
        high / close - 1.0,
        low / close - 1.0,
        (c / c.rolling(20).mean() - 1.0).to_numpy(),
        np.asarray(rsi, dtype=np.float64) - 0.5,
        (macd / c).to_numpy(),
        (signal / c).to_numpy(),
        (_wilder(true_range, 14) / c).to_numpy(),
        log_ret.rolling(20).std(ddof=1).to_numpy(),
        np.asarray(volume_z, dtype=np.float64),
    ]
    values = np.column_stack(columns).astype(np.float32)
    finite = np.isfinite(values).all(axis=1)
    valid_from = np.flatnonzero(~finite)
    first_valid = int(valid_from[-1] + 1) if len(valid_from) else 0
    values.setflags(write=False)
    return Features(values=values, names=FEATURE_NAMES, first_valid=first_valid)
