"""Baselines every comparison includes: buy-and-hold, SMA crossover and a seeded random policy."""

from __future__ import annotations

import math

import numpy as np

from strategies.base import Decision, MarketView, Observation

__all__ = ["BuyAndHold", "RandomPolicy", "SMACrossover"]


class BuyAndHold:
    """Hold a constant target exposure (fully long by default) from the first bar.

    Args:
        name: Label in the ledger.
        exposure: Target exposure to hold.
    """

    def __init__(self, name: str = "buy_and_hold", *, exposure: float = 1.0) -> None:
        self.name = name
        self.exposure = float(exposure)
        self._decision = Decision(
            target_position=self.exposure, action="BUY", reasoning="buy and hold"
        )
        self._hold = Decision(target_position=None, action="HOLD", reasoning="buy and hold")
        self._started = False

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        """Start flat; the first decision buys."""
        self._started = False

    def act(self, obs: Observation) -> Decision:
        """Buy once, then hold (the position drifts with price, as a fund's would)."""
        if self._started:
            return self._hold
        self._started = True
        return self._decision


class SMACrossover:
    """Long (or short) when the fast simple moving average is above (below) the slow one.

    The averages are updated incrementally from the closes the market view shows, so the
    policy costs O(1) per bar and can only see bars up to the decision time.

    Args:
        name: Label in the ledger.
        fast: Bars in the fast average.
        slow: Bars in the slow average.
        short: Go short (rather than flat) when fast < slow.
        exposure: Size of the long (and short) exposure.
    """

    def __init__(
        self,
        name: str = "sma",
        *,
        fast: int = 10,
        slow: int = 30,
        short: bool = False,
        exposure: float = 1.0,
    ) -> None:
        if not 1 <= fast < slow:
            raise ValueError(f"fast ({fast}) must be >= 1 and below slow ({slow})")
        self.name = name
        self.fast, self.slow = int(fast), int(slow)
        self.short = short
        self.exposure = float(exposure)
        self._long = Decision(
            target_position=self.exposure, action="BUY", reasoning=f"SMA{fast} above SMA{slow}"
        )
        self._flat = Decision(
            target_position=-self.exposure if short else 0.0,
            action="SELL" if short else "CLOSE",
            reasoning=f"SMA{fast} at or below SMA{slow}",
        )
        self._wait = Decision(
            target_position=None, action="HOLD", reasoning=f"fewer than {slow} bars seen"
        )
        self._closes: np.ndarray = np.empty(0)
        self._last_t = -1
        self._fast_sum = self._slow_sum = 0.0

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        """Forget the running sums."""
        self._last_t = -1
        self._fast_sum = self._slow_sum = 0.0

    def act(self, obs: Observation) -> Decision:
        """Compare the two averages of the closes up to ``obs.t``."""
        closes = obs.market.close
        t = obs.t
        if t + 1 < self.slow:
            return self._wait
        if self._last_t != t - 1:
            # First call, or bars were skipped: recompute the sums from the window.
            self._fast_sum = math.fsum(closes[t + 1 - self.fast : t + 1])
            self._slow_sum = math.fsum(closes[t + 1 - self.slow : t + 1])
        else:
            c = closes[t]
            self._fast_sum += c - closes[t - self.fast]
            self._slow_sum += c - closes[t - self.slow]
        self._last_t = t
        if self._fast_sum / self.fast > self._slow_sum / self.slow:
            return self._long
        return self._flat


class RandomPolicy:
    """Draw a target exposure uniformly from ``positions`` each bar, from its own seed.

    Args:
        name: Label in the ledger.
        positions: Exposures to draw from.
    """

    def __init__(
        self, name: str = "random", *, positions: tuple[float, ...] = (-1.0, 0.0, 1.0)
    ) -> None:
        self.name = name
        self.positions = tuple(float(p) for p in positions)
        self._decisions = [
            Decision(target_position=p, action="RANDOM", confidence=0.0) for p in self.positions
        ]
        self._rng = np.random.default_rng(0)

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        """Re-seed the policy's own generator (never the global one)."""
        self._rng = np.random.default_rng(seed)

    def act(self, obs: Observation) -> Decision:
        """Pick one of the positions at random."""
        return self._decisions[int(self._rng.integers(len(self._decisions)))]
