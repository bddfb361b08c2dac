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
   An account whose equity is not positive at the open is liquidated there instead.
3. **Stop-loss / take-profit** levels, relative to the average entry price, are checked
   against bar t+1's low and high; when both are touched the stop is assumed first (the
   conservative rule). A level the open already gapped through fills at the open.
4. **Financing** from bar t to bar t+1 (ACT/365 on calendar time): borrow fee on a short's
   notional, margin interest on negative cash, interest on positive cash.
5. **Mark to market** at bar t+1's close; the reward is the log change of equity (net of
   every cost) or the differential Sharpe ratio, minus ``turnover_penalty`` times the
   notional the step's fills traded as a fraction of the equity at bar t's close (the
   absolute change of exposure the trades made; 0 by default). The penalty shapes training
   only: cash, equity and fees never see it.

An observation is a copy of the last ``window`` rows of the causal feature matrix
(:mod:`backtest.features`) followed by the current exposure and the unrealised P&L as a
fraction of equity. A step is one call into compiled kernels (:mod:`backtest._env_nb`) over
numpy arrays indexed by integer: no pandas, no I/O. Randomness (training episodes' start
bars) comes only from ``self.np_random``, seeded through ``reset(seed=...)``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from backtest import _env_nb as nb
from backtest.config import EnvConfig
from backtest.data import Bars
from backtest.errors import ConfigError
from backtest.features import Features, compute_features

__all__ = ["TradingEnv"]

_NS_PER_YEAR = 365 * 24 * 3600 * 1_000_000_000
_NS_PER_DAY = 24 * 3600 * 1_000_000_000
_MIN_EQUITY_RATIO = 1e-6
_DUST = 1e-9


def _none_to_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


class TradingEnv(gym.Env[np.ndarray, Any]):
    """Trade one instrument bar by bar with exact cash and position accounting.

    Args:
        bars: Validated bars (see :func:`backtest.data.load_bars`).
        config: Costs, financing, actions, reward and risk limits.
        start: First bar index a decision may be taken at (e.g. a split's start); the
            feature window may reach back before it.
        end: One past the last bar index of the range.
        features: Precomputed features of ``bars`` (computed here when omitted).

    After every step the env's attributes describe it: ``fill_units``, ``fill_price``,
    ``exit_units``, ``exit_price``, ``exit_reason``, ``fees_usd``, ``financing_usd``,
    ``risk_event``; and the account: ``cash``, ``units``, ``equity``, ``exposure``,
    ``entry_price``.
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
        self.timestamps_ns = frame.index.as_unit("ns").asi8.copy()
        table = np.empty((n, nb.BAR_COLUMNS), dtype=np.float64)
        for column, name in (
            (nb.OPEN, "open"),
            (nb.HIGH, "high"),
            (nb.LOW, "low"),
            (nb.CLOSE, "close"),
            (nb.VOLUME, "volume"),
        ):
            table[:, column] = frame[name].to_numpy(dtype=np.float64)
        table[0, nb.DT_YEARS] = 0.0
        table[1:, nb.DT_YEARS] = np.diff(self.timestamps_ns) / _NS_PER_YEAR
        table[:, nb.DAY] = self.timestamps_ns // _NS_PER_DAY
        table.setflags(write=False)
        self._bars = table
        if features is None:
            features = compute_features(*(table[:, c] for c in range(nb.VOLUME + 1)))
        if features.values.shape[0] != n:
            raise ConfigError(
                "features do not match the bars (different lengths). Fix: "
                "compute them from the same bars."
            )
        self.features = features
        self._feat_flat = np.ascontiguousarray(features.values).reshape(-1)
        self._window = cfg.window
        self._n_feat = features.values.shape[1]
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
        params = np.empty(nb.PARAM_SIZE, dtype=np.float64)
        params[nb.HALF] = (cfg.spread_bps / 2.0 + cfg.slippage_bps) / 1e4
        params[nb.FEE] = cfg.fee_bps / 1e4
        params[nb.FIXED] = cfg.fixed_fee_usd
        params[nb.BAND] = cfg.rebalance_band
        params[nb.CAP] = _none_to_nan(cfg.max_participation)
        params[nb.STOP_LOSS] = _none_to_nan(cfg.stop_loss)
        params[nb.TAKE_PROFIT] = _none_to_nan(cfg.take_profit)
        params[nb.BORROW] = cfg.borrow_rate
        params[nb.MARGIN] = cfg.margin_rate
        params[nb.CASH_RATE] = cfg.cash_rate
        params[nb.MAX_LEV] = risk.max_leverage
        params[nb.ALLOW_SHORT] = 1.0 if risk.allow_short else 0.0
        params[nb.MAX_USD] = _none_to_nan(risk.max_position_usd)
        params[nb.MAX_TRADES] = _none_to_nan(risk.max_trades_per_day)
        params[nb.DSR] = 1.0 if cfg.reward == "differential_sharpe" else 0.0
        params[nb.ETA] = cfg.dsr_eta
        params[nb.DUST] = _DUST
        params[nb.MIN_RATIO] = _MIN_EQUITY_RATIO
        params[nb.PENALTY] = cfg.turnover_penalty
        params.setflags(write=False)
        self._params = params
        self._bind_state(np.zeros(nb.STATE_SIZE, dtype=np.float64))

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
                -risk.max_leverage, risk.max_leverage, shape=(1,), dtype=np.float32
            )
        self._reset_state(lo, hi)

    # ---------------------------------------------------------------------- state

    def _bind_state(self, state: np.ndarray) -> None:
        # The state vector may be a row of a batch's state matrix (backtest.vecenv), which
        # then steps many envs in one compiled call while each env still reads its own row.
        self._state = state
        # The kernel's fixed arguments, bound once; and a view of the slots step() returns.
        fixed = (state, self._params, self._bars, self._feat_flat, self._n_feat, self._window)
        out = np.empty(1, dtype=np.float32)
        # Without the per-call type dispatch: step() always passes a float and a fresh
        # float32 vector (see nb.entry_point).
        self._kernel_step = functools.partial(nb.entry_point(nb.step, *fixed, 0.0, out), *fixed)
        self._head = state[:8].tolist

    def _reset_state(self, start: int, stop: int) -> None:
        state = self._state
        state[:] = 0.0
        state[nb.T] = start
        state[nb.STOP] = stop
        state[nb.CASH] = state[nb.EQUITY] = self.config.initial_capital_usd
        state[nb.ENTRY] = state[nb.FILL_PRICE] = state[nb.EXIT_PRICE] = math.nan
        state[nb.TARGET_APPLIED] = math.nan
        state[nb.TRADE_DAY] = -1.0
        self._stop = stop

    def _slot(index: int, doc: str) -> property:  # type: ignore[misc]
        def get(self: TradingEnv) -> float:
            return float(self._state[index])

        return property(get, doc=doc)

    t = property(
        lambda self: int(self._state[nb.T]),
        doc="Index of the current bar (the bar the next decision is taken at).",
    )
    cash = _slot(nb.CASH, "Cash balance in dollars (negative when borrowing).")
    units = _slot(nb.UNITS, "Signed position in units of the instrument.")
    equity = _slot(nb.EQUITY, "Cash plus the position at the current close.")
    exposure = _slot(nb.EXPOSURE, "Signed position value over equity at the current close.")
    entry_price = _slot(nb.ENTRY, "Average entry price of the open position (NaN when flat).")
    fill_units = _slot(nb.FILL_UNITS, "Units filled at this step's open (0 when none).")
    fill_price = _slot(nb.FILL_PRICE, "Price of this step's fill (NaN when none).")
    exit_units = _slot(nb.EXIT_UNITS, "Units closed by a stop-loss or take-profit this step.")
    exit_price = _slot(nb.EXIT_PRICE, "Price of this step's exit (NaN when none).")
    fees_usd = _slot(nb.FEES, "Fees paid this step.")
    financing_usd = _slot(nb.FINANCING, "Financing charged this step (negative: earned).")
    target_applied = _slot(nb.TARGET_APPLIED, "Target after the risk limits (NaN: HOLD).")
    del _slot

    @property
    def exit_reason(self) -> str:
        """``stop_loss``, ``take_profit``, ``liquidation`` or empty."""
        return nb.EXIT_REASONS[int(self._state[nb.EXIT_CODE])]

    @property
    def risk_event(self) -> str:
        """The risk limit that changed this step's target, or empty."""
        return nb.RISK_EVENTS[int(self._state[nb.RISK_CODE])]

    def snapshot(self) -> list[float]:
        """The raw state vector as a list (one call; the engine reads it every bar)."""
        return self._state.tolist()

    def unrealised(self) -> float:
        """Unrealised P&L of the open position as a fraction of equity.

        The arithmetic of the kernel ``nb.unrealised`` (which :func:`nb.step` uses) in
        Python: called once per reset, it is not worth loading one more compiled function
        into a fresh process for (~7 ms on the first run).
        """
        state = self._state
        units = state[nb.UNITS]
        equity = state[nb.EQUITY]
        if units == 0.0 or equity <= 0.0:
            return 0.0
        return float(units * (self._bars[int(state[nb.T]), nb.CLOSE] - state[nb.ENTRY]) / equity)

    def observation_for(self, t: int, exposure: float, unrealised: float) -> np.ndarray:
        """The observation vector at bar ``t`` for a given exposure and unrealised P&L."""
        obs = np.empty(self._obs_dim, dtype=np.float32)
        nb.observe(obs, self._feat_flat, self._n_feat, self._window, t, exposure, unrealised)
        return obs

    def _observation(self) -> np.ndarray:
        state = self._state
        return self.observation_for(int(state[nb.T]), state[nb.EXPOSURE], self.unrealised())

    def _info(self) -> dict[str, Any]:
        # Small on purpose: a dict is built every step. The rest of the step's record
        # (fill units, exits, financing, risk events) is on the env's attributes.
        s = self._state
        return {
            "t": int(s[nb.T]),
            "equity": float(s[nb.EQUITY]),
            "cash": float(s[nb.CASH]),
            "position": float(s[nb.UNITS]),
            "fill_price": float(s[nb.FILL_PRICE]),
            "fees": float(s[nb.FEES]),
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
        positions = self._positions
        if positions:
            try:
                if action < 0:
                    raise IndexError
                target = positions[action]
            except (TypeError, IndexError, ValueError):
                target = self._discrete_target(action)
        else:
            target = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        # step_target's body, inlined (a Python call is ~5% of a step); target is a float.
        obs = np.empty(self._obs_dim, np.float32)
        self._kernel_step(target, obs)
        t, cash, units, equity, fill_price, fees, reward, terminated = self._head()
        if terminated < 0.0:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        info = {
            "t": int(t),
            "equity": equity,
            "cash": cash,
            "position": units,
            "fill_price": fill_price,
            "fees": fees,
        }
        ruined = terminated > 0.0
        return obs, reward, ruined, not ruined and t + 1 >= self._stop, info

    def _discrete_target(self, action: Any) -> float:
        values = np.asarray(action).reshape(-1)
        if (
            values.size != 1
            or not float(values[0]).is_integer()
            or not self.action_space.contains(np.int64(values[0]))
        ):
            raise ValueError(
                f"action {action!r} is not in {self.action_space}; give one integer in "
                f"[0, {len(self._positions) - 1}]"
            )
        return self._positions[int(values[0])]

    def step_target(
        self, target: float | None
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance one bar with a target exposure decided at the current close.

        Args:
            target: Signed target exposure (fraction of equity), or None / NaN for HOLD.
        """
        obs = np.empty(self._obs_dim, np.float32)
        self._kernel_step(math.nan if target is None else float(target), obs)
        t, cash, units, equity, fill_price, fees, reward, terminated = self._head()
        if terminated < 0.0:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        info = {
            "t": int(t),
            "equity": equity,
            "cash": cash,
            "position": units,
            "fill_price": fill_price,
            "fees": fees,
        }
        ruined = terminated > 0.0
        return obs, reward, ruined, not ruined and t + 1 >= self._stop, info

    def advance(self, target: float | None) -> bool:
        """Do the accounting of one step (no observation or info); return True on ruin.

        The engine calls this directly; :meth:`step_target` is the gymnasium form.
        """
        state = self._state
        if state[nb.T] + 1 >= self._stop:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        return nb.advance(state, self._params, self._bars, math.nan if target is None else target)

    def charge(self, usd: float) -> None:
        """Take a cost outside trading (such as LLM spend) out of cash now."""
        if usd:
            state = self._state
            state[nb.CASH] -= usd
            state[nb.EQUITY] -= usd
            equity = state[nb.EQUITY]
            close = self._bars[int(state[nb.T]), nb.CLOSE]
            state[nb.EXPOSURE] = state[nb.UNITS] * close / equity if equity > 0.0 else 0.0
