"""A gymnasium environment that trades one instrument over validated bars.

Timeline of one :meth:`TradingEnv.step`, for a decision taken at the close of bar *t*:

1. **Risk limits** clip the target exposure (leverage, shorting, dollar cap, trades per
   day) whatever the policy asked for.
2. **Fill at bar t+1's open.** The order size is chosen so that, after costs, exposure
   equals the target: with ``E`` the equity at the open mid price ``o``, ``u`` the units
   held, ``c`` the cost per unit of notional (half spread + slippage + fee) and ``F`` the
   fixed fee, the new units are ``u' = target (E + s u o c - F) / (o (1 + s target c))``
   where ``s`` is the trade's sign. The fill price is ``o (1 + s (spread/2 + slippage))``;
   the fee is ``fee_bps`` of the fill's notional plus ``F``. No trade happens when the
   exposure is within ``rebalance_band`` of the target (going flat always trades). An
   optional cap on participation in bar t+1's volume makes a partial fill.
3. **Stop-loss / take-profit** levels, relative to the average entry price, are checked
   against bar t+1's low and high; when both are touched the stop is assumed first (the
   conservative rule). A level the open already gapped through fills at the open.
4. **Financing** from bar t to bar t+1 (ACT/365 on calendar time): borrow fee on a short's
   notional, margin interest on negative cash, interest on positive cash.
5. **Mark to market** at bar t+1's close; the reward is the log change of equity (net of
   every cost) or the differential Sharpe ratio.

An observation is a copy of the last ``window`` rows of the causal feature matrix
(:mod:`backtest.features`) followed by the current exposure and the unrealised P&L as a
fraction of equity. ``step`` reads numpy arrays and lists by integer index only: no pandas,
no I/O. Randomness (training episodes' start bars) comes only from ``self.np_random``,
seeded through ``reset(seed=...)``.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from backtest.config import EnvConfig
from backtest.data import Bars
from backtest.errors import ConfigError
from backtest.features import Features, compute_features

__all__ = ["TradingEnv"]

_NS_PER_YEAR = 365 * 24 * 3600 * 1_000_000_000
_NS_PER_DAY = 24 * 3600 * 1_000_000_000
_MIN_EQUITY_RATIO = 1e-6
_DUST = 1e-9

# Risk events, as recorded in the ledger.
RISK_LEVERAGE = "max_leverage"
RISK_NO_SHORT = "no_short"
RISK_POSITION = "max_position_usd"
RISK_TRADES = "max_trades_per_day"


class TradingEnv(gym.Env[np.ndarray, Any]):
    """Trade one instrument bar by bar with exact cash and position accounting.

    Args:
        bars: Validated bars (see :func:`backtest.data.load_bars`).
        config: Costs, financing, actions, reward and risk limits.
        start: First bar index a decision may be taken at (e.g. a split's start); the
            feature window may reach back before it.
        end: One past the last bar index of the range.
        features: Precomputed features of ``bars`` (computed here when omitted).
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's own class attribute

    def __init__(
        self,
        bars: Bars,
        config: EnvConfig | None = None,
        *,
        start: int | None = None,
        end: int | None = None,
        features: Features | None = None,
    ) -> None:
        super().__init__()
        cfg = config if config is not None else EnvConfig()
        self.config = cfg
        frame = bars.frame
        n = len(frame)
        self.bars = bars
        self._open_a = frame["open"].to_numpy(dtype=np.float64)
        self._close_a = frame["close"].to_numpy(dtype=np.float64)
        self._open = self._open_a.tolist()
        self._high = frame["high"].to_numpy(dtype=np.float64).tolist()
        self._low = frame["low"].to_numpy(dtype=np.float64).tolist()
        self._close = self._close_a.tolist()
        self._volume = frame["volume"].to_numpy(dtype=np.float64).tolist()
        self.timestamps_ns = frame.index.as_unit("ns").asi8.copy()
        self._day = (self.timestamps_ns // _NS_PER_DAY).tolist()
        dt = np.zeros(n)
        dt[1:] = np.diff(self.timestamps_ns) / _NS_PER_YEAR
        self._dt_years = dt.tolist()
        if features is None:
            features = compute_features(
                self._open_a,
                np.asarray(self._high),
                np.asarray(self._low),
                self._close_a,
                np.asarray(self._volume),
            )
        if features.values.shape[0] != n:
            raise ConfigError(
                "features do not match the bars (different lengths). Fix: "
                "compute them from the same bars."
            )
        self.features = features
        self._feat = features.values
        self._window = cfg.window
        self._n_feat = self._feat.shape[1]
        first_decision = features.first_valid + cfg.window - 1
        lo = first_decision if start is None else max(start, first_decision)
        hi = n if end is None else min(end, n)
        if hi - lo < 2:
            raise ConfigError(
                f"env: the range [{start}, {end}) of {bars.symbol} leaves {max(hi - lo, 0)} "
                f"bar(s) to trade after the {features.first_valid}-bar feature warm-up and the "
                f"{cfg.window}-bar window. Fix: widen the split or shrink env.window."
            )
        if cfg.episode_bars is not None and cfg.episode_bars > hi - lo:
            raise ConfigError(
                f"env.episode_bars={cfg.episode_bars} exceeds the {hi - lo} bars "
                "of the range. Fix: lower env.episode_bars."
            )
        self.first_bar, self.end_bar = lo, hi

        risk = cfg.risk
        self._max_lev = risk.max_leverage
        self._allow_short = risk.allow_short
        self._max_usd = risk.max_position_usd
        self._max_trades = risk.max_trades_per_day
        self._half = (cfg.spread_bps / 2.0 + cfg.slippage_bps) / 1e4
        self._fee = cfg.fee_bps / 1e4
        self._fixed = cfg.fixed_fee_usd
        self._band = cfg.rebalance_band
        self._cap = cfg.max_participation
        self._sl = cfg.stop_loss
        self._tp = cfg.take_profit
        self._has_exits = cfg.stop_loss is not None or cfg.take_profit is not None
        self._has_financing = bool(cfg.borrow_rate or cfg.margin_rate or cfg.cash_rate)
        self._dsr = cfg.reward == "differential_sharpe"
        self._eta = cfg.dsr_eta

        self._obs_dim = cfg.window * self._n_feat + 2
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=(self._obs_dim,), dtype=np.float32
        )
        if cfg.action_space == "discrete":
            self._positions = [float(p) for p in cfg.positions]
            self.action_space = spaces.Discrete(len(self._positions))
        else:
            self._positions = []
            self.action_space = spaces.Box(
                -self._max_lev, self._max_lev, shape=(1,), dtype=np.float32
            )
        self._reset_state(lo, hi)

    # ---------------------------------------------------------------------- state

    def _reset_state(self, start: int, stop: int) -> None:
        self._t = start
        self._stop = stop
        self.cash = float(self.config.initial_capital_usd)
        self.units = 0.0
        self.entry_price = math.nan
        self.equity = self.cash
        self._exposure = 0.0
        self._trade_day = -1
        self._trades_today = 0
        self._dsr_a = 0.0
        self._dsr_b = 0.0
        self._clear_step_record()

    def _clear_step_record(self) -> None:
        self.fill_units = 0.0
        self.fill_price = math.nan
        self.exit_units = 0.0
        self.exit_price = math.nan
        self.exit_reason = ""
        self.fees_usd = 0.0
        self.financing_usd = 0.0
        self.risk_event = ""
        self.target_applied = math.nan

    @property
    def t(self) -> int:
        """Index of the current bar (the bar whose close the next decision is taken at)."""
        return self._t

    @property
    def exposure(self) -> float:
        """Signed position value over equity at the current close."""
        return self._exposure

    def _unrealised(self) -> float:
        if self.units == 0.0 or self.equity <= 0:
            return 0.0
        return self.units * (self._close[self._t] - self.entry_price) / self.equity

    def _observation(self) -> np.ndarray:
        return self.observation_for(self._t, self._exposure, self._unrealised())

    def observation_for(self, t: int, exposure: float, unrealised: float) -> np.ndarray:
        """The observation vector at bar ``t`` for a given exposure and unrealised P&L."""
        obs = np.empty(self._obs_dim, dtype=np.float32)
        obs[:-2] = self._feat[t - self._window + 1 : t + 1].reshape(-1)
        obs[-2] = exposure
        obs[-1] = unrealised
        return obs

    def unrealised(self) -> float:
        """Unrealised P&L of the open position as a fraction of equity."""
        return self._unrealised()

    def _info(self) -> dict[str, Any]:
        # Small on purpose: a dict is built every step. The rest of the step's record
        # (fill units, exits, financing, risk events) is on the env's attributes.
        return {
            "t": self._t,
            "equity": self.equity,
            "cash": self.cash,
            "position": self.units,
            "fill_price": self.fill_price,
            "fees": self.fees_usd,
        }

    # ----------------------------------------------------------------- gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: the whole range, or a random window of ``episode_bars``."""
        super().reset(seed=seed)
        episode = self.config.episode_bars
        if episode is not None:
            start = int(self.np_random.integers(self.first_bar, self.end_bar - episode + 1))
            self._reset_state(start, start + episode)
        else:
            self._reset_state(self.first_bar, self.end_bar)
        return self._observation(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Map an action to a target exposure and advance one bar."""
        if self._positions:
            target = self._positions[int(action)]
        else:
            target = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        return self.step_target(target)

    def step_target(
        self, target: float | None
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance one bar with a target exposure decided at the current close.

        Args:
            target: Signed target exposure (fraction of equity), or None / NaN for HOLD.
        """
        previous_equity = self.equity
        terminated = self.advance(target)
        t = self._t
        equity = self.equity
        if self._dsr:
            reward = self._reward(previous_equity)
        else:
            ratio = equity / previous_equity if previous_equity > 0.0 else 0.0
            reward = math.log(ratio if ratio > _MIN_EQUITY_RATIO else _MIN_EQUITY_RATIO)
        obs = np.empty(self._obs_dim, dtype=np.float32)
        obs[:-2] = self._feat[t - self._window + 1 : t + 1].reshape(-1)
        obs[-2] = self._exposure
        units = self.units
        obs[-1] = (
            units * (self._close[t] - self.entry_price) / equity
            if units != 0.0 and equity > 0.0
            else 0.0
        )
        info = {
            "t": t,
            "equity": equity,
            "cash": self.cash,
            "position": units,
            "fill_price": self.fill_price,
            "fees": self.fees_usd,
        }
        return obs, reward, terminated, not terminated and t + 1 >= self._stop, info

    def advance(self, target: float | None) -> bool:
        """Do the accounting of one step (no observation, reward or info); return ruin.

        The engine calls this directly; :meth:`step_target` wraps it for gymnasium.
        """
        n = self._t + 1
        if n >= self._stop:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        self.fill_units = self.exit_units = self.fees_usd = self.financing_usd = 0.0
        self.fill_price = self.exit_price = self.target_applied = math.nan
        self.exit_reason = self.risk_event = ""
        previous_equity = self.equity
        o = self._open[n]
        equity_open = self.cash + self.units * o
        if equity_open > 0.0 and target is not None and target == target:
            target = self._apply_risk(target, equity_open, n)
            if target is not None:
                self.target_applied = target
                self._trade_to(target, equity_open, o, n)
        if self._has_exits and self.units != 0.0:
            self._check_exit(n, o)
        self._t = n
        close = self._close[n]
        if self._has_financing:
            self._finance(close, self._dt_years[n])
        units = self.units
        equity = self.cash + units * close
        self.equity = equity
        self._exposure = units * close / equity if equity > 0.0 else 0.0
        return equity <= 0.0 or equity <= previous_equity * _MIN_EQUITY_RATIO

    def _finance(self, close: float, dt: float) -> None:
        if dt <= 0.0:
            return
        cfg = self.config
        financing = 0.0
        if self.units < 0.0 and cfg.borrow_rate:
            financing += cfg.borrow_rate * -self.units * close * dt
        if self.cash < 0.0 and cfg.margin_rate:
            financing += cfg.margin_rate * -self.cash * dt
        elif self.cash > 0.0 and cfg.cash_rate:
            financing -= cfg.cash_rate * self.cash * dt
        if financing:
            self.cash -= financing
            self.financing_usd = financing

    def charge(self, usd: float) -> None:
        """Take a cost outside trading (such as LLM spend) out of cash now."""
        if usd:
            self.cash -= usd
            self.equity -= usd
            close = self._close[self._t]
            self._exposure = self.units * close / self.equity if self.equity > 0.0 else 0.0

    # --------------------------------------------------------------------- internals

    def _apply_risk(self, target: float, equity: float, n: int) -> float | None:
        if target > self._max_lev or target < -self._max_lev:
            target = self._max_lev if target > 0 else -self._max_lev
            self.risk_event = RISK_LEVERAGE
        if target < 0.0 and not self._allow_short:
            target = 0.0
            self.risk_event = RISK_NO_SHORT
        if self._max_usd is not None and abs(target) * equity > self._max_usd:
            target = math.copysign(self._max_usd / equity, target)
            self.risk_event = RISK_POSITION
        if self._max_trades is not None:
            if self._day[n] != self._trade_day:
                self._trade_day = self._day[n]
                self._trades_today = 0
            if self._trades_today >= self._max_trades:
                current = self.units * self._open[n] / equity
                if abs(target - current) >= self._band or (target == 0.0 and self.units):
                    self.risk_event = RISK_TRADES
                return None
        return target

    def _trade_to(self, target: float, equity: float, o: float, n: int) -> None:
        u = self.units
        current = u * o / equity
        if abs(target - current) < self._band and not (target == 0.0 and u != 0.0):
            return
        if target == 0.0:
            new_units = 0.0
        else:
            s = 1.0 if target * equity / o > u else -1.0
            c = self._half + self._fee * (1.0 + s * self._half)
            new_units = (
                target * (equity + s * u * o * c - self._fixed) / (o * (1.0 + s * target * c))
            )
            if (new_units - u) * s <= 0.0:
                return
        du = new_units - u
        if self._cap is not None:
            limit = self._cap * self._volume[n]
            if abs(du) > limit:
                du = math.copysign(limit, du)
        if abs(du) * o <= _DUST * equity:
            # Numerical dust (a target of 1e-300, float noise): not worth a fill or its fee.
            return
        self._fill(du, o, is_exit=False)
        if self._max_trades is not None:
            self._trades_today += 1

    def _fill(self, du: float, reference: float, *, is_exit: bool) -> None:
        s = 1.0 if du > 0.0 else -1.0
        price = reference * (1.0 + s * self._half)
        fee = abs(du) * price * self._fee + self._fixed
        u = self.units
        new_units = u + du
        if is_exit:
            self.exit_units = du
            self.exit_price = price
        else:
            self.fill_units = du
            self.fill_price = price
        self.cash -= du * price + fee
        self.fees_usd += fee
        if abs(new_units) < 1e-12 * max(abs(u), 1.0):
            new_units = 0.0
        if new_units == 0.0:
            self.entry_price = math.nan
        elif u == 0.0 or (u > 0.0) != (new_units > 0.0):
            self.entry_price = price
        elif abs(new_units) > abs(u):
            self.entry_price = (u * self.entry_price + du * price) / new_units
        self.units = new_units

    def _check_exit(self, n: int, o: float) -> None:
        long = self.units > 0.0
        entry = self.entry_price
        low, high = self._low[n], self._high[n]
        reason = ""
        price = 0.0
        if self._sl is not None:
            stop = entry * (1.0 - self._sl) if long else entry * (1.0 + self._sl)
            if (long and low <= stop) or (not long and high >= stop):
                reason = "stop_loss"
                price = min(stop, o) if long else max(stop, o)
        if not reason and self._tp is not None:
            level = entry * (1.0 + self._tp) if long else entry * (1.0 - self._tp)
            if (long and high >= level) or (not long and low <= level):
                reason = "take_profit"
                price = max(level, o) if long else min(level, o)
        if reason:
            self.exit_reason = reason
            self._fill(-self.units, price, is_exit=True)

    def _reward(self, previous_equity: float) -> float:
        ratio = self.equity / previous_equity if previous_equity > 0 else 0.0
        log_return = math.log(max(ratio, _MIN_EQUITY_RATIO))
        if not self._dsr:
            return log_return
        r = ratio - 1.0
        a, b = self._dsr_a, self._dsr_b
        delta_a, delta_b = r - a, r * r - b
        variance = b - a * a
        reward = (b * delta_a - 0.5 * a * delta_b) / variance**1.5 if variance > 1e-12 else 0.0
        self._dsr_a = a + self._eta * delta_a
        self._dsr_b = b + self._eta * delta_b
        return reward
