"""A shadow account: the position one side of a composite policy would hold trading alone.

Inside :class:`~strategies.hybrid.HybridPolicy` the DRL agent is asked at every bar, but the
account the engine keeps is the hybrid's, not the agent's. The last two values of the
observation an agent is trained on (:mod:`backtest.env`) are *its own* exposure and
unrealised P&L; showing it the hybrid's instead puts it in states it never held in
training. :class:`ShadowAccount` keeps the account the agent alone would have: it follows
the agent's own targets with the env's accounting kernel (:func:`backtest._env_nb.advance`:
the same risk limits, fills, costs, stops and financing, bit for bit), fed with the bars the
:class:`~backtest.policy.MarketView` has shown so far (row ``t + 1`` is only read once bar
``t + 1`` is visible), and :meth:`ShadowAccount.observation` rewrites the observation's last
two values with the shadow's.

So, bar for bar, the agent inside a hybrid sees exactly the observations it sees trading
alone in the same run (tests/strategies/test_hybrid.py proves it against a DRL-only run).
What it does not reproduce: LLM spend (a DRL agent alone spends nothing) and a walk-forward
fold's starting capital (the shadow starts each fold with the capital the engine gives the
hybrid; exposure and unrealised P&L are fractions of equity, so this only matters with a
fixed fee or a dollar cap on the position); and with ``carry_position`` walk-forward folds
the shadow still starts each fold flat.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from backtest import _env_nb as nb
from backtest.config import EnvConfig
from backtest.data import BarMeta, Bars
from backtest.env import TradingEnv
from backtest.features import Features
from backtest.policy import MarketView

__all__ = ["ShadowAccount"]

_NS_PER_YEAR = 365 * 24 * 3600 * 1_000_000_000  # as in backtest.env
_NS_PER_DAY = 24 * 3600 * 1_000_000_000


def _kernel_setup(config: EnvConfig) -> tuple[np.ndarray, np.ndarray]:
    """The env's parameter vector and a flat fresh-account state for ``config``.

    Built by :class:`~backtest.env.TradingEnv` itself (on two placeholder bars: neither
    depends on the prices), so the shadow never re-derives the env's settings.
    """
    stamps = pd.DatetimeIndex(["2000-01-03", "2000-01-04"], tz="UTC", name="timestamp")
    ones = np.ones(2)
    frame = pd.DataFrame(
        {"open": ones, "high": ones, "low": ones, "close": ones, "volume": ones}, index=stamps
    )
    features = Features(values=np.zeros((2, 1), np.float32), names=("none",), first_valid=0)
    cfg = config.model_copy(update={"window": 1, "episode_bars": None})
    env = TradingEnv(
        Bars(frame=frame, meta=BarMeta(symbol="shadow", frequency="1d")), cfg, features=features
    )
    env.reset()
    return env._params, np.array(env.snapshot(), dtype=np.float64)


class ShadowAccount:
    """The account a policy's targets alone would make, on the bars shown so far.

    Call :meth:`observation` at every decision (it brings the account to the current bar,
    applying the target :meth:`follow` last recorded at the first bar it crosses), then
    :meth:`follow` with the decision the shadowed side took.

    Args:
        config: The run's env config (costs, risk limits, starting capital).
    """

    def __init__(self, config: EnvConfig) -> None:
        self.config = config
        self._params: np.ndarray | None = None
        self._fresh: np.ndarray | None = None
        self._state = np.zeros(nb.STATE_SIZE)
        self._table = np.zeros((0, nb.BAR_COLUMNS))
        self._started = False
        self._ruined = False
        self._pending = math.nan

    def reset(self) -> None:
        """Forget the account: the next :meth:`observation` opens a flat one."""
        self._started = False
        self._ruined = False
        self._pending = math.nan

    @property
    def exposure(self) -> float:
        """The shadow's exposure at its current bar."""
        return float(self._state[nb.EXPOSURE])

    @property
    def equity(self) -> float:
        """The shadow's equity at its current bar."""
        return float(self._state[nb.EQUITY])

    def unrealised(self) -> float:
        """The shadow's unrealised P&L as a fraction of equity (the env's formula)."""
        return float(nb.unrealised(self._state, self._table))

    def _row(self, market: MarketView, n: int) -> None:
        if n >= self._table.shape[0]:
            grown = np.zeros((max(2 * self._table.shape[0], n + 1, 256), nb.BAR_COLUMNS))
            grown[: self._table.shape[0]] = self._table
            self._table = grown
        row = self._table[n]
        for column, values in (
            (nb.OPEN, market.open),
            (nb.HIGH, market.high),
            (nb.LOW, market.low),
            (nb.CLOSE, market.close),
            (nb.VOLUME, market.volume),
        ):
            row[column] = values[n]
        ts = market.timestamps_ns
        # The env's table: dt in years from the previous bar (0 at bar 0), the UTC day.
        row[nb.DT_YEARS] = (np.diff(ts[n - 1 : n + 1]) / _NS_PER_YEAR)[0] if n > 0 else 0.0
        row[nb.DAY] = ts[n] // _NS_PER_DAY

    def _bring_to(self, market: MarketView) -> None:
        t = market.t
        if not self._started:
            if self._params is None:
                self._params, self._fresh = _kernel_setup(self.config)
            assert self._fresh is not None
            self._state = self._fresh.copy()
            self._state[nb.T] = t
            self._state[nb.STOP] = math.inf
            self._row(market, t)
            self._started = True
            return
        assert self._params is not None
        while not self._ruined and int(self._state[nb.T]) < t:
            n = int(self._state[nb.T]) + 1
            self._row(market, n)
            target, self._pending = self._pending, math.nan  # then HOLD over skipped bars
            self._ruined = bool(nb.advance(self._state, self._params, self._table, target))

    def observation(self, market: MarketView, features: np.ndarray) -> np.ndarray:
        """``features`` (an env observation at ``market.t``) with the shadow's account.

        Returns a new array: the feature window unchanged, then the shadow's exposure and
        unrealised P&L (the env's last two values).
        """
        self._bring_to(market)
        out = np.array(features, dtype=np.float32, copy=True)
        out[-2] = self.exposure
        out[-1] = self.unrealised()
        return out

    def follow(self, target: float | None) -> None:
        """Record the shadowed side's target at the current bar (None: HOLD)."""
        self._pending = math.nan if target is None else float(target)
