"""A strategy in one file: time-series momentum with a volatility target.

Used by ``experiments/custom_strategy.toml`` (``kind = "strategies/momentum.py:Momentum"``,
relative to that file). Read ``docs/strategies.md`` for the contract. Nothing to install:
the engine loads this file by its path.
"""

from __future__ import annotations

import math

import numpy as np

from strategies.base import Decision, MarketView, Observation, Strategy


class Momentum(Strategy):
    """Long when the last ``lookback`` bars rose, short (or flat) when they fell.

    The exposure is scaled so the position's volatility is about ``target_vol`` a year,
    capped at ``max_exposure``: ``min(max_exposure, target_vol / realised_vol)``.

    Args:
        name: The experiment entry's name.
        lookback: Bars the trend is measured over.
        vol_window: Bars the realised volatility is measured over.
        target_vol: Annual volatility aimed at (0.10 = 10 %).
        max_exposure: Largest |exposure|.
        short: Go short in a falling market (else flat).
        periods_per_year: Bars per year (252 for daily bars).
    """

    def __init__(
        self,
        name: str,
        *,
        lookback: int = 120,
        vol_window: int = 20,
        target_vol: float = 0.10,
        max_exposure: float = 1.0,
        short: bool = False,
        periods_per_year: float = 252.0,
    ) -> None:
        super().__init__(name)
        if lookback < 1 or vol_window < 2:
            raise ValueError(
                f"lookback must be >= 1 and vol_window >= 2, got {lookback}, {vol_window}"
            )
        if not 0 < target_vol <= 1 or not 0 < max_exposure <= 1:
            raise ValueError("target_vol and max_exposure must be in (0, 1]")
        self.lookback, self.vol_window = int(lookback), int(vol_window)
        self.target_vol, self.max_exposure = float(target_vol), float(max_exposure)
        self.short = bool(short)
        self.periods_per_year = float(periods_per_year)

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        super().reset(seed=seed, market=market)

    def act(self, obs: Observation) -> Decision:
        closes = obs.market.close  # bars up to and including obs.t, never later
        need = max(self.lookback, self.vol_window) + 1
        if closes.size < need:
            return self.hold(f"warming up ({closes.size}/{need} bars)")
        trend = closes[-1] / closes[-1 - self.lookback] - 1.0
        returns = np.diff(np.log(closes[-self.vol_window - 1 :]))
        vol = float(returns.std(ddof=1)) * math.sqrt(self.periods_per_year)
        size = self.max_exposure if vol == 0 else min(self.max_exposure, self.target_vol / vol)
        if trend > 0:
            return self.target(size, f"{self.lookback}-bar return {trend:+.1%}, vol {vol:.1%}")
        if self.short:
            return self.target(-size, f"{self.lookback}-bar return {trend:+.1%}, vol {vol:.1%}")
        return self.target(0.0, f"{self.lookback}-bar return {trend:+.1%}: flat")
