"""The env's fast paths (issue 19) step exactly like the dispatched kernels they replace."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtest import _env_nb as nb
from backtest.config import EnvConfig, RiskConfig
from backtest.data import BarMeta, Bars, load_bars
from backtest.env import TradingEnv
from tests.backtest.strategies_data import bar_frames

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _dispatched(env: TradingEnv) -> TradingEnv:
    """``env`` stepping through numba's per-call dispatch, as before the fast path."""
    env._kernel_step = functools.partial(
        nb.step, env._state, env._params, env._bars, env._feat_flat, env._n_feat, env._window
    )
    return env


def test_the_env_steps_through_the_compiled_entry_point(samples_dir: Path) -> None:
    env = TradingEnv(load_bars(samples_dir / "SP500.parquet"), EnvConfig(window=5))
    assert env._kernel_step.func is not nb.step  # resolved once, not dispatched per call
    # Argument types no compiled version takes: the dispatcher itself, which compiles.
    odd = np.empty(3, dtype=np.float64)
    assert nb.entry_point(nb.observe, odd, odd, 1, 1, 0, 0.0, 0.0) is nb.observe


@SETTINGS
@given(
    frame=bar_frames(min_size=45, max_size=80),
    targets=st.lists(
        st.one_of(st.none(), st.floats(-2.0, 2.0), st.sampled_from([0, 1, -1])),
        min_size=1,
        max_size=60,
    ),
    stop=st.one_of(st.none(), st.floats(0.01, 0.2)),
    short=st.booleans(),
)
def test_fast_step_is_bit_identical_to_the_dispatched_kernel(
    frame: pd.DataFrame, targets: list[float | None], stop: float | None, short: bool
) -> None:
    bars = Bars(frame=frame, meta=BarMeta(symbol="T", frequency="1d"))
    config = EnvConfig(
        window=3,
        fee_bps=1.0,
        stop_loss=stop,
        risk=RiskConfig(max_leverage=1.5, allow_short=short),
    )
    fast, slow = TradingEnv(bars, config), _dispatched(TradingEnv(bars, config))
    for env in (fast, slow):
        env.reset(seed=0)
    for target in targets:
        if fast.t + 1 >= fast.end_bar:
            break
        a = fast.step_target(target)
        b = slow.step_target(target)
        assert a[0].tobytes() == b[0].tobytes()
        assert repr(a[1:]) == repr(b[1:])
        assert fast._state.tobytes() == slow._state.tobytes()
        if a[2]:
            break


def test_discrete_step_matches_step_target(samples_dir: Path) -> None:
    bars = load_bars(samples_dir / "SP500.parquet")
    config = EnvConfig(window=5, action_space="discrete")
    inline, reference = TradingEnv(bars, config), TradingEnv(bars, config)
    inline.reset(seed=0)
    reference.reset(seed=0)
    rng = np.random.default_rng(0)
    for action in rng.integers(0, len(config.positions), size=300).tolist():
        obs, reward, terminated, truncated, info = inline.step(action)
        expected = reference.step_target(reference._positions[action])
        assert obs.tobytes() == expected[0].tobytes()
        # repr: exact for floats (shortest round-trip) and NaN equals NaN (no fill price)
        assert repr((reward, terminated, truncated, info)) == repr(expected[1:])
