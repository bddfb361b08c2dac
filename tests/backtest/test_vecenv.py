"""TradingVecEnv: step for step what DummyVecEnv over Monitor-ed TradingEnvs gives; SB3's API."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from backtest.config import EnvConfig, RiskConfig
from backtest.data import BarMeta, Bars, load_bars
from backtest.env import TradingEnv
from backtest.features import compute_features
from backtest.vecenv import TradingVecEnv
from tests.backtest.strategies_data import bar_frames

# Example counts and derandomisation come from the active hypothesis profile.
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _pair(
    bars: Bars, config: EnvConfig, n_envs: int, seed: int
) -> tuple[DummyVecEnv, TradingVecEnv]:
    frame = bars.frame
    features = compute_features(
        *(frame[c].to_numpy(np.float64) for c in ("open", "high", "low", "close", "volume"))
    )
    dummy = DummyVecEnv(
        [lambda: Monitor(TradingEnv(bars, config, features=features)) for _ in range(n_envs)]
    )
    batched = TradingVecEnv(bars, config, n_envs, features=features)
    dummy.seed(seed)
    batched.seed(seed)
    return dummy, batched


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, arrays element by element with their dtype."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


def _same_infos(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """The same keys in the same order with :func:`_same` values, env by env (an episode's
    wall-clock time ``t`` aside)."""

    def same(x: Any, y: Any) -> bool:
        if isinstance(x, dict) and isinstance(y, dict):
            return list(x) == list(y) and all(k == "t" or same(x[k], y[k]) for k in x)
        return _same(x, y)

    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))


def _assert_lockstep(
    dummy: DummyVecEnv, batched: TradingVecEnv, actions: list[np.ndarray]
) -> tuple[int, int]:
    """Step both with the same actions; everything they hand back must be identical.

    Returns how many episodes were truncated and how many terminated (ruin)."""
    obs_d, obs_b = dummy.reset(), batched.reset()
    assert _same(obs_d, obs_b)
    assert _same_infos(dummy.reset_infos, batched.reset_infos)
    truncations = terminations = 0
    for step, action in enumerate(actions):
        obs_d, rew_d, done_d, infos_d = dummy.step(action)
        obs_b, rew_b, done_b, infos_b = batched.step(action)
        where = f"step {step}, actions {action.tolist()}"
        assert _same(obs_d, obs_b), where
        assert _same(rew_d, rew_b), where
        assert _same(done_d, done_b), where
        assert _same_infos(infos_d, infos_b), (where, infos_d, infos_b)
        for info_d in infos_d:
            if "terminal_observation" in info_d:
                truncations += info_d["TimeLimit.truncated"]
                terminations += not info_d["TimeLimit.truncated"]
        assert _same_infos(dummy.reset_infos, batched.reset_infos), where
        for single, row in zip(dummy.envs, batched.envs, strict=True):
            assert isinstance(single, Monitor) and isinstance(single.env, TradingEnv)
            assert _same(np.array(single.env.snapshot()), np.array(row.snapshot())), where
    return truncations, terminations


@st.composite
def _scenarios(draw: st.DrawFn) -> dict[str, Any]:
    space = draw(st.sampled_from(["discrete", "continuous"]))
    leverage = draw(st.sampled_from([1.0, 3.0, 12.0]))
    positions = (-leverage, -0.5, 0.0, 0.5, leverage)
    config = EnvConfig(
        window=draw(st.integers(1, 4)),
        episode_bars=draw(st.integers(2, 12)),
        action_space=space,
        positions=positions,
        fee_bps=draw(st.sampled_from([0.0, 1.0, 25.0])),
        fixed_fee_usd=draw(st.sampled_from([0.0, 2.5])),
        max_participation=draw(st.sampled_from([None, 1e-4])),
        stop_loss=draw(st.sampled_from([None, 0.02])),
        take_profit=draw(st.sampled_from([None, 0.05])),
        borrow_rate=0.02,
        margin_rate=0.05,
        cash_rate=0.01,
        reward=draw(st.sampled_from(["log_return", "differential_sharpe"])),
        turnover_penalty=draw(st.sampled_from([0.0, 2e-3])),
        risk=RiskConfig(
            max_leverage=leverage,
            allow_short=draw(st.booleans()),
            max_position_usd=draw(st.sampled_from([None, 150_000.0])),
            max_trades_per_day=draw(st.sampled_from([None, 1])),
        ),
    )
    n_envs = draw(st.integers(1, 4))
    n_steps = draw(st.integers(1, 60))
    if space == "discrete":
        rows: st.SearchStrategy[list[Any]] = st.lists(
            st.integers(0, len(positions) - 1), min_size=n_envs, max_size=n_envs
        )
        dtype: Any = np.int64
    else:
        target = st.one_of(st.floats(-leverage, leverage, width=32), st.just(math.nan))
        rows = st.lists(st.lists(target, min_size=1, max_size=1), min_size=n_envs, max_size=n_envs)
        dtype = np.float32
    actions = [
        np.array(row, dtype=dtype)
        for row in draw(st.lists(rows, min_size=n_steps, max_size=n_steps))
    ]
    return {
        "config": config,
        "n_envs": n_envs,
        "seed": draw(st.integers(0, 2**31)),
        "actions": actions,
    }


@SETTINGS
@given(scenario=_scenarios(), frame=bar_frames(min_size=60, max_size=120))
def test_batched_equals_dummy_vec_env_on_drawn_markets(
    scenario: dict[str, Any], frame: pd.DataFrame
) -> None:
    bars = Bars(frame=frame, meta=BarMeta(symbol="T", frequency="1d"))
    dummy, batched = _pair(bars, scenario["config"], scenario["n_envs"], scenario["seed"])
    _assert_lockstep(dummy, batched, scenario["actions"])


@SETTINGS
@given(scenario=_scenarios())
def test_batched_equals_dummy_vec_env_on_the_sp500(
    samples_dir: Path, scenario: dict[str, Any]
) -> None:
    bars = load_bars(samples_dir / "SP500.parquet", end="2001-12-31")
    dummy, batched = _pair(bars, scenario["config"], scenario["n_envs"], scenario["seed"])
    _assert_lockstep(dummy, batched, scenario["actions"])


def test_lockstep_covers_truncation_ruin_and_auto_reset() -> None:
    # A market that falls 15% a bar for five bars: a 12x-levered long is ruined there, and
    # episodes elsewhere run to the end of their 30 bars.
    index = pd.date_range("2020-01-01", periods=200, freq="1D", tz="UTC", name="timestamp")
    log_close = np.linspace(0.0, 0.05, 200)
    log_close[150:] -= 0.15 * np.minimum(np.arange(1, 51), 5)
    close = 100.0 * np.exp(log_close)
    frame = pd.DataFrame(
        {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1e6},
        index=index.as_unit("ns"),
    )
    bars = Bars(frame=frame, meta=BarMeta(symbol="T", frequency="1d"))
    config = EnvConfig(
        window=2, episode_bars=30, positions=(0.0, 12.0), risk=RiskConfig(max_leverage=12.0)
    )
    dummy, batched = _pair(bars, config, 3, seed=11)
    rng = np.random.default_rng(0)
    truncations, terminations = _assert_lockstep(
        dummy, batched, [rng.integers(0, 2, 3) for _ in range(300)]
    )
    assert truncations > 0 and terminations > 0


# --------------------------------------------------------------------------- SB3 API


@pytest.fixture(scope="module")
def sp500(samples_dir: Path) -> Bars:
    return load_bars(samples_dir / "SP500.parquet", end="2004-12-31")


def test_short_ppo_learn_through_sb3_wrappers(sp500: Bars) -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecCheckNan, VecNormalize

    venv = TradingVecEnv(sp500, EnvConfig(episode_bars=40), 4)
    wrapped = VecNormalize(VecCheckNan(venv, raise_exception=True), norm_reward=False)
    wrapped.seed(0)
    model = PPO("MlpPolicy", wrapped, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256
    episodes = list(model.ep_info_buffer or ())
    assert len(episodes) >= 4  # every env's episode end was reported, as Monitor does
    assert all(info["l"] == 39 for info in episodes)  # 40 bars, 39 steps


def test_seed_reset_options_and_attributes(sp500: Bars) -> None:
    venv = TradingVecEnv(sp500, EnvConfig(episode_bars=50), 3)
    assert venv.num_envs == 3 and venv.render_mode is None
    assert venv.observation_space == venv.envs[0].observation_space
    assert venv.seed(5) == [5, 6, 7]
    venv.reset()
    starts = [info["t"] for info in venv.reset_infos]
    again = TradingVecEnv(sp500, EnvConfig(episode_bars=50), 3)
    again.seed(5)
    again.reset()
    assert [info["t"] for info in again.reset_infos] == starts
    assert starts == [
        TradingEnv(sp500, EnvConfig(episode_bars=50)).reset(seed=s)[1]["t"] for s in (5, 6, 7)
    ]

    venv.step(np.array([2, 0, 1]))
    assert venv.get_attr("units")[1] < 0 and venv.get_attr("units", 2) == [0.0]
    assert venv.get_attr("equity") == [env.equity for env in venv.envs]
    (snapshot,) = venv.env_method("snapshot", indices=[0])
    assert _same(np.array(snapshot), venv._states[0])
    venv.set_attr("label", "x", indices=[1])
    assert venv.get_attr("label", [1]) == ["x"] and not hasattr(venv.envs[0], "label")
    assert venv.env_is_wrapped(Monitor) == [False, False, False]
    assert venv.has_attr("exposure") and not venv.has_attr("no_such_attribute")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert venv.get_images() == [None, None, None]
    venv.close()


def test_bad_actions_and_stale_envs_are_refused_before_any_env_moves(sp500: Bars) -> None:
    venv = TradingVecEnv(sp500, EnvConfig(episode_bars=10), 2)
    venv.reset()
    before = venv._states.copy()
    for bad in (np.array([0, 3]), np.array([-1, 0]), np.array([0.5, 1.0]), np.array([0, 1, 2])):
        with pytest.raises(ValueError, match=r"Discrete|one action per env"):
            venv.step(bad)
    np.testing.assert_array_equal(venv._states, before)
    while venv.envs[1].t + 1 < venv.envs[1]._stop:  # env 1 run to its end on its own
        venv.env_method("step", 1, indices=[1])
    with pytest.raises(RuntimeError, match=r"env 1 .*reset"):
        venv.step(np.array([1, 1]))
    with pytest.raises(RuntimeError, match="step_async"):
        venv.step_wait()
