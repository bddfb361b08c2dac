"""Numba kernels of :class:`backtest.env.TradingEnv`: the accounting of one step.

The env keeps its whole state in one float64 vector and its parameters in another, so a
step is one compiled call (kernels take arrays; the env is the pandas-free edge around
them). The rules are those of :mod:`backtest.env`'s docstring; the indices below name the
slots. Compiled code is cached on disk (``cache=True``) and loaded when ``backtest.env``
is imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, typeof

# State slots. The first eight are what a gymnasium step returns besides the observation,
# so the env reads them with one ``state[:8].tolist()``.
T, CASH, UNITS, EQUITY, FILL_PRICE, FEES, REWARD, TERMINATED = range(8)
STOP, ENTRY, EXPOSURE, TRADE_DAY, TRADES_TODAY, FILL_UNITS, EXIT_UNITS = range(8, 15)
EXIT_PRICE, FINANCING, TARGET_APPLIED, EXIT_CODE, RISK_CODE, DSR_A, DSR_B = range(15, 22)
STATE_SIZE = 22

# Parameter slots (NaN where a limit is off).
HALF, FEE, FIXED, BAND, CAP, STOP_LOSS, TAKE_PROFIT, BORROW, MARGIN, CASH_RATE = range(10)
MAX_LEV, ALLOW_SHORT, MAX_USD, MAX_TRADES, DSR, ETA, DUST, MIN_RATIO = range(10, 18)
PENALTY = 18
PARAM_SIZE = 19

# Bar columns.
OPEN, HIGH, LOW, CLOSE, VOLUME, DT_YEARS, DAY = range(7)
BAR_COLUMNS = 7

EXIT_REASONS = ("", "stop_loss", "take_profit", "liquidation")
RISK_EVENTS = ("", "max_leverage", "no_short", "max_position_usd", "max_trades_per_day")


@njit(cache=True)
def _fill(state: np.ndarray, p: np.ndarray, du: float, reference: float, is_exit: bool) -> None:
    s = 1.0 if du > 0.0 else -1.0
    price = reference * (1.0 + s * p[HALF])
    fee = abs(du) * price * p[FEE] + p[FIXED]
    u = state[UNITS]
    new_units = u + du
    if is_exit:
        state[EXIT_UNITS] = du
        state[EXIT_PRICE] = price
    else:
        state[FILL_UNITS] = du
        state[FILL_PRICE] = price
    state[CASH] -= du * price + fee
    state[FEES] += fee
    if abs(new_units) < 1e-12 * max(abs(u), 1.0):
        new_units = 0.0
    if new_units == 0.0:
        state[ENTRY] = math.nan
    elif u == 0.0 or (u > 0.0) != (new_units > 0.0):
        state[ENTRY] = price
    elif abs(new_units) > abs(u):
        state[ENTRY] = (u * state[ENTRY] + du * price) / new_units
    state[UNITS] = new_units


@njit(cache=True)
def _apply_risk(
    state: np.ndarray, p: np.ndarray, bars: np.ndarray, target: float, equity: float, n: int
) -> float:
    """Return the target the limits allow, or NaN when the trade must be held."""
    max_lev = p[MAX_LEV]
    if target > max_lev or target < -max_lev:
        target = max_lev if target > 0.0 else -max_lev
        state[RISK_CODE] = 1.0
    if target < 0.0 and p[ALLOW_SHORT] == 0.0:
        target = 0.0
        state[RISK_CODE] = 2.0
    max_usd = p[MAX_USD]
    if max_usd == max_usd and abs(target) * equity > max_usd:
        target = math.copysign(max_usd / equity, target)
        state[RISK_CODE] = 3.0
    max_trades = p[MAX_TRADES]
    if max_trades == max_trades:
        day = bars[n, DAY]
        if day != state[TRADE_DAY]:
            state[TRADE_DAY] = day
            state[TRADES_TODAY] = 0.0
        if state[TRADES_TODAY] >= max_trades:
            current = state[UNITS] * bars[n, OPEN] / equity
            if abs(target - current) >= p[BAND] or (target == 0.0 and state[UNITS] != 0.0):
                state[RISK_CODE] = 4.0
            return math.nan
    return target


@njit(cache=True)
def _trade_to(
    state: np.ndarray,
    p: np.ndarray,
    bars: np.ndarray,
    target: float,
    equity: float,
    o: float,
    n: int,
) -> None:
    u = state[UNITS]
    current = u * o / equity
    if abs(target - current) < p[BAND] and not (target == 0.0 and u != 0.0):
        return
    if target == 0.0:
        new_units = 0.0
    else:
        s = 1.0 if target * equity / o > u else -1.0
        half = p[HALF]
        c = half + p[FEE] * (1.0 + s * half)
        new_units = target * (equity + s * u * o * c - p[FIXED]) / (o * (1.0 + s * target * c))
        if (new_units - u) * s <= 0.0:
            return
    du = new_units - u
    cap = p[CAP]
    if cap == cap:
        limit = cap * bars[n, VOLUME]
        if abs(du) > limit:
            du = math.copysign(limit, du)
    if abs(du) * o <= p[DUST] * equity:
        # Numerical dust (a target of 1e-300, float noise): not worth a fill or its fee.
        return
    _fill(state, p, du, o, False)
    if p[MAX_TRADES] == p[MAX_TRADES]:
        state[TRADES_TODAY] += 1.0


@njit(cache=True)
def _check_exit(state: np.ndarray, p: np.ndarray, bars: np.ndarray, n: int, o: float) -> None:
    long = state[UNITS] > 0.0
    entry = state[ENTRY]
    low = bars[n, LOW]
    high = bars[n, HIGH]
    code = 0.0
    price = 0.0
    sl = p[STOP_LOSS]
    if sl == sl:
        stop = entry * (1.0 - sl) if long else entry * (1.0 + sl)
        if (long and low <= stop) or (not long and high >= stop):
            code = 1.0
            price = min(stop, o) if long else max(stop, o)
    tp = p[TAKE_PROFIT]
    if code == 0.0 and tp == tp:
        level = entry * (1.0 + tp) if long else entry * (1.0 - tp)
        if (long and high >= level) or (not long and low <= level):
            code = 2.0
            price = max(level, o) if long else min(level, o)
    if code != 0.0:
        state[EXIT_CODE] = code
        _fill(state, p, -state[UNITS], price, True)


@njit(cache=True)
def advance(state: np.ndarray, p: np.ndarray, bars: np.ndarray, target: float) -> bool:
    """Apply one decision (NaN = HOLD) and move to the next bar; return True on ruin."""
    n = int(state[T]) + 1
    state[FILL_UNITS] = 0.0
    state[EXIT_UNITS] = 0.0
    state[FEES] = 0.0
    state[FINANCING] = 0.0
    state[FILL_PRICE] = math.nan
    state[EXIT_PRICE] = math.nan
    state[TARGET_APPLIED] = math.nan
    state[EXIT_CODE] = 0.0
    state[RISK_CODE] = 0.0
    previous_equity = state[EQUITY]
    o = bars[n, OPEN]
    equity_open = state[CASH] + state[UNITS] * o
    if equity_open > 0.0:
        if target == target:
            target = _apply_risk(state, p, bars, target, equity_open, n)
            if target == target:
                state[TARGET_APPLIED] = target
                _trade_to(state, p, bars, target, equity_open, o, n)
    elif state[UNITS] != 0.0:
        # Underwater at the open: the broker closes the position whatever was asked.
        state[EXIT_CODE] = 3.0
        _fill(state, p, -state[UNITS], o, True)
    if state[UNITS] != 0.0 and (p[STOP_LOSS] == p[STOP_LOSS] or p[TAKE_PROFIT] == p[TAKE_PROFIT]):
        _check_exit(state, p, bars, n, o)
    state[T] = n
    close = bars[n, CLOSE]
    dt = bars[n, DT_YEARS]
    if dt > 0.0:
        financing = 0.0
        if state[UNITS] < 0.0:
            financing += p[BORROW] * -state[UNITS] * close * dt
        if state[CASH] < 0.0:
            financing += p[MARGIN] * -state[CASH] * dt
        elif state[CASH] > 0.0:
            financing -= p[CASH_RATE] * state[CASH] * dt
        if financing != 0.0:
            state[CASH] -= financing
            state[FINANCING] = financing
    units = state[UNITS]
    equity = state[CASH] + units * close
    state[EQUITY] = equity
    state[EXPOSURE] = units * close / equity if equity > 0.0 else 0.0
    ruined = equity <= 0.0 or equity <= previous_equity * p[MIN_RATIO]
    state[TERMINATED] = 1.0 if ruined else 0.0
    ratio = equity / previous_equity if previous_equity > 0.0 else 0.0
    log_return = math.log(ratio if ratio > p[MIN_RATIO] else p[MIN_RATIO])
    if p[DSR] == 0.0:
        state[REWARD] = log_return
    else:
        # Differential Sharpe ratio (Moody & Saffell, 1998) on the simple return.
        r = ratio - 1.0
        a = state[DSR_A]
        b = state[DSR_B]
        delta_a = r - a
        delta_b = r * r - b
        variance = b - a * a
        state[REWARD] = (
            (b * delta_a - 0.5 * a * delta_b) / variance**1.5 if variance > 1e-12 else 0.0
        )
        state[DSR_A] = a + p[ETA] * delta_a
        state[DSR_B] = b + p[ETA] * delta_b
    if p[PENALTY] != 0.0:
        # Turnover penalty (training reward only): the notional the fills traded, as a
        # fraction of the equity the decision was taken on, i.e. |change of exposure|.
        traded = 0.0
        if state[FILL_UNITS] != 0.0:
            traded += abs(state[FILL_UNITS]) * state[FILL_PRICE]
        if state[EXIT_UNITS] != 0.0:
            traded += abs(state[EXIT_UNITS]) * state[EXIT_PRICE]
        if previous_equity > 0.0:
            state[REWARD] -= p[PENALTY] * traded / previous_equity
    return ruined


@njit(cache=True)
def observe(
    out: np.ndarray,
    flat_features: np.ndarray,
    n_features: int,
    window: int,
    t: int,
    exposure: float,
    unrealised: float,
) -> None:
    """Write the observation at bar ``t`` into ``out``: feature rows t-window+1..t, exposure,
    unrealised P&L. (Filling an array the caller made is cheaper than returning one.)"""
    size = window * n_features
    start = (t - window + 1) * n_features
    out[:size] = flat_features[start : start + size]
    out[size] = exposure
    out[size + 1] = unrealised


@njit(cache=True)
def unrealised(state: np.ndarray, bars: np.ndarray) -> float:
    """Unrealised P&L of the open position at the current close, as a fraction of equity."""
    units = state[UNITS]
    equity = state[EQUITY]
    if units == 0.0 or equity <= 0.0:
        return 0.0
    return units * (bars[int(state[T]), CLOSE] - state[ENTRY]) / equity


@njit(cache=True)
def step(
    state: np.ndarray,
    p: np.ndarray,
    bars: np.ndarray,
    flat_features: np.ndarray,
    n_features: int,
    window: int,
    target: float,
    out: np.ndarray,
) -> None:
    """:func:`advance`, then the observation at the new bar written into ``out``.

    Past the end of the episode nothing happens and TERMINATED is set to -1.
    """
    if state[T] + 1.0 >= state[STOP]:
        state[TERMINATED] = -1.0
        return
    advance(state, p, bars, target)
    observe(
        out,
        flat_features,
        n_features,
        window,
        int(state[T]),
        state[EXPOSURE],
        unrealised(state, bars),
    )


@njit(cache=True)
def step_batch(
    states: np.ndarray,
    p: np.ndarray,
    bars: np.ndarray,
    flat_features: np.ndarray,
    n_features: int,
    window: int,
    actions: np.ndarray,
    positions: np.ndarray,
    out: np.ndarray,
    rewards: np.ndarray,
    dones: np.ndarray,
    truncated: np.ndarray,
) -> int:
    """:func:`step` for every row of ``states`` (one env each): a whole batch in one call.

    ``actions[i]`` is env *i*'s target exposure, or with discrete actions (``positions``
    not empty) the index of its target in ``positions``. Row *i* of ``out`` receives env
    *i*'s observation, ``rewards[i]`` its reward; ``dones[i]`` is terminated or truncated,
    ``truncated[i]`` truncated only. Returns -1, or the first env whose action is not a
    valid index or whose episode has already ended; then no env has moved.
    """
    n = states.shape[0]
    k = positions.shape[0]
    for i in range(n):
        a = actions[i]
        if k > 0 and not (a >= 0.0 and a < k and a == math.floor(a)):
            return i
        if states[i, T] + 1.0 >= states[i, STOP]:
            return i
    for i in range(n):
        target = positions[int(actions[i])] if k > 0 else actions[i]
        state = states[i]
        step(state, p, bars, flat_features, n_features, window, target, out[i])
        rewards[i] = state[REWARD]
        ruined = state[TERMINATED] > 0.0
        cut = not ruined and state[T] + 1.0 >= state[STOP]
        dones[i] = ruined or cut
        truncated[i] = cut
    return -1


def entry_point(kernel: Any, *args: Any) -> Callable[..., Any]:
    """The machine code ``kernel`` runs for exactly the types of ``args``, callable directly.

    Calling a numba dispatcher resolves the argument types on every call (~0.25 us for a
    step's eight arguments, about a sixth of a step). A caller that always passes arguments
    of the same types (the env: its own arrays, a float target, a fresh float32 vector)
    resolves them once here. ``args`` are the real arguments or ones of the same types.
    Falls back to ``kernel`` itself (which dispatches per call) when no compiled version
    matches them or numba does not expose one.
    """
    try:
        signature = tuple(typeof(a) for a in args)
        compiled = kernel.overloads.get(signature)
    except Exception:  # numba internals: dispatching per call is always correct
        return kernel
    entry = getattr(compiled, "entry_point", None)
    return entry if callable(entry) else kernel


def _load() -> None:
    """Run every kernel once on a two-bar toy market so it is compiled (or loaded from the
    on-disk cache) when the module is imported, not in the middle of the first run."""
    bars = np.ones((3, BAR_COLUMNS))
    state = np.zeros(STATE_SIZE)
    state[STOP], state[CASH], state[EQUITY], state[ENTRY] = 3.0, 1.0, 1.0, math.nan
    params = np.full(PARAM_SIZE, math.nan)
    params[:] = 0.0
    params[STOP_LOSS] = params[TAKE_PROFIT] = params[CAP] = math.nan
    params[MAX_USD] = params[MAX_TRADES] = math.nan
    params[MAX_LEV], params[MIN_RATIO] = 1.0, 1e-6
    features = np.zeros(6, dtype=np.float32)
    out = np.empty(4, dtype=np.float32)
    # The env hands its bars, parameters and features over read-only: the same types here.
    for frozen in (bars, params, features):
        frozen.setflags(write=False)
    step(state, params, bars, features, 2, 1, 1.0, out)
    flags = np.empty(1, dtype=np.bool_)
    rewards = np.empty(1, dtype=np.float32)
    step_batch(  # a batch whose one env has ended: compiled, refused, nothing moves
        np.zeros((1, STATE_SIZE)),
        params,
        bars,
        features,
        2,
        1,
        np.ones(1),
        np.ones(2),
        out[None],
        rewards,
        flags,
        flags,
    )
    advance(state, params, bars, math.nan)
    observe(out, features, 2, 1, 1, 0.0, 0.0)


_load()
