"""Env throughput: steps per second with random actions, window 30, on the S&P 500 sample.

Contenders (each runs ``--steps`` steps per repeat; a reset is done, and counted in the
time, whenever an episode ends):

* ``gym-anytrading``: ``gym_anytrading.envs.StocksEnv`` (Discrete(2) Sell/Buy; its only
  features are close and its first difference, so an observation is 30 x 2).
* ``gym-trading-env``: ``gym_trading_env.environments.TradingEnv`` with the same 10
  ``feature_*`` columns as the minimal env, positions [-1, 0, 1], no fees; it appends its
  2 dynamic features (last position, real position), so an observation is 30 x 12.
* ``minimal numpy``: :class:`MinimalNumpyEnv` below, the floor the project's env is
  compared against: a precomputed float32 feature matrix, an observation that is a copy of
  the last 30 rows flattened plus the position, Discrete(3) -> position -1/0/1, reward =
  position * next log return, no costs, no accounting.
* ``ours``: the project's ``backtest.env.TradingEnv`` with ``EnvConfig(window=30)``, when it
  can be imported and built (see :func:`make_our_env`); skipped with a note otherwise.

Random actions are drawn up front from ``numpy.random.default_rng(seed)`` (the same
sequence for every Discrete(3) env), so the timed loop contains only ``step``/``reset``.

:func:`check_envs` runs ``gymnasium.utils.env_checker.check_env`` on every contender and
records pass/fail with the message and the warnings it raised.

Run: ``.venv/bin/python benchmarks/bench_env.py [--repeats 7] [--steps 20000] [--data DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from _data import sample_dir  # noqa: E402
from _timing import markdown_table, time_interleaved  # noqa: E402

WINDOW = 30
DEFAULT_STEPS = 20_000
DEFAULT_SEED = 12345

FEATURE_NAMES: tuple[str, ...] = (
    "log_return",
    "ret_5",
    "ret_20",
    "vol_5",
    "vol_20",
    "close_sma10_rel",
    "close_sma30_rel",
    "hl_range",
    "log_close_open",
    "volume_z20",
)

NAME_ANYTRADING = "gym-anytrading"
NAME_GTE = "gym-trading-env"
NAME_MINIMAL = "minimal numpy"
NAME_OURS = "ours"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --------------------------------------------------------------------------- data


def load_frame(path: str | Path):
    """The sample's bars as a DataFrame (UTC index; open, high, low, close, volume, ...)."""
    from backtest.data import load_bars

    return load_bars(path).frame


def _rolling_sum(x: np.ndarray, w: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    c = np.cumsum(np.insert(x, 0, 0.0))
    out[w - 1 :] = c[w:] - c[:-w]
    return out


def _rolling_std(x: np.ndarray, w: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    out[w - 1 :] = np.lib.stride_tricks.sliding_window_view(x, w).std(axis=1, ddof=1)
    return out


def compute_features(
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray
) -> tuple[np.ndarray, int]:
    """Ten causal features (see ``FEATURE_NAMES``) as float32, and the first valid row.

    Every value at row *t* depends on rows ``0..t`` only; rows before ``first_valid`` hold
    NaN where a window is not full yet.
    """
    lr = np.full(close.shape, np.nan)
    lr[1:] = np.log(close[1:] / close[:-1])
    lr0 = np.nan_to_num(lr)  # for the rolling sums; the NaN row is re-imposed below
    ret5 = _rolling_sum(lr0, 5)
    ret20 = _rolling_sum(lr0, 20)
    ret5[:5] = np.nan
    ret20[:20] = np.nan
    vol5 = _rolling_std(lr0, 5)
    vol20 = _rolling_std(lr0, 20)
    vol5[:5] = np.nan
    vol20[:20] = np.nan
    sma10 = _rolling_sum(close, 10) / 10
    sma30 = _rolling_sum(close, 30) / 30
    vmean = _rolling_sum(volume, 20) / 20
    vstd = _rolling_std(volume, 20)
    with np.errstate(divide="ignore", invalid="ignore"):
        vz = np.where(vstd > 0, (volume - vmean) / vstd, 0.0)
    vz[np.isnan(vmean)] = np.nan
    cols = [
        lr,
        ret5,
        ret20,
        vol5,
        vol20,
        close / sma10 - 1,
        close / sma30 - 1,
        (high - low) / close,
        np.log(close / open_),
        vz,
    ]
    feat = np.column_stack(cols).astype(np.float32)
    finite = np.isfinite(feat).all(axis=1)
    first_valid = int(np.argmax(finite))
    if not finite[first_valid:].all():
        raise ValueError("features have non-finite values after the warm-up")
    return feat, first_valid


def _frame_arrays(frame) -> tuple[np.ndarray, ...]:
    return tuple(
        frame[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume")
    )


# --------------------------------------------------------------------------- minimal env


class MinimalNumpyEnv(gym.Env):
    """The smallest reasonable numpy trading env, as a speed floor.

    Observation: a copy of feature rows ``t-window+1 .. t`` flattened, then the position.
    Action: Discrete(3) -> position -1 / 0 / +1 held from the close of *t* to the close of
    *t+1*. Reward: ``position * log(close_{t+1} / close_t)``; no costs, no accounting. An
    episode runs from the first bar with a full window of valid features to the last bar.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's own class attribute

    def __init__(
        self,
        features: np.ndarray,
        close: np.ndarray,
        first_valid: int = 0,
        window: int = WINDOW,
    ):
        super().__init__()
        feat = np.ascontiguousarray(features, dtype=np.float32)
        n, k = feat.shape
        self._feat = feat
        # ret[t] = log(close_t / close_{t-1}), as Python floats (cheap indexing in step()).
        ret = np.zeros(n)
        ret[1:] = np.log(close[1:] / close[:-1])
        self._ret = ret.tolist()
        self._window = window
        self._first = first_valid + window - 1
        self._last = n - 1
        if self._last - self._first < 1:
            raise ValueError("not enough bars for one step")
        self._obs_dim = window * k + 1
        self.observation_space = spaces.Box(-np.inf, np.inf, (self._obs_dim,), np.float32)
        self.action_space = spaces.Discrete(3)
        self._t = self._first
        self._pos = 0.0

    def _obs(self) -> np.ndarray:
        t = self._t
        obs = np.empty(self._obs_dim, dtype=np.float32)
        obs[:-1] = self._feat[t - self._window + 1 : t + 1].reshape(-1)
        obs[-1] = self._pos
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._t = self._first
        self._pos = 0.0
        return self._obs(), {}

    def step(self, action):
        pos = float(int(action) - 1)
        self._pos = pos
        self._t += 1
        reward = pos * self._ret[self._t]
        truncated = self._t >= self._last
        return self._obs(), reward, False, truncated, {}


# --------------------------------------------------------------------------- factories


def make_minimal_env(path: str | Path) -> gym.Env:
    arrays = _frame_arrays(load_frame(path))
    feat, first_valid = compute_features(*arrays)
    return MinimalNumpyEnv(feat, arrays[3], first_valid, WINDOW)


def make_anytrading_env(path: str | Path) -> gym.Env:
    from gym_anytrading.envs import StocksEnv

    frame = load_frame(path)
    df = frame.rename(columns=lambda c: c.capitalize())  # it reads 'Close'
    return StocksEnv(df=df, window_size=WINDOW, frame_bound=(WINDOW, len(df)))


def import_gym_trading_env():
    """Import gym-trading-env's TradingEnv without its process-wide side effect.

    ``gym_trading_env/environments.py`` calls ``warnings.filterwarnings("error")`` at import
    time, which turns every warning in the whole process into an exception (numpy, pandas,
    gymnasium's own checker...). Importing under ``catch_warnings`` restores the filters.
    """
    with warnings.catch_warnings():
        from gym_trading_env.environments import TradingEnv
    return TradingEnv


def make_gte_env(path: str | Path) -> gym.Env:
    trading_env_cls = import_gym_trading_env()
    frame = load_frame(path)
    feat, first_valid = compute_features(*_frame_arrays(frame))
    df = frame[["open", "high", "low", "close", "volume"]].copy()
    for i, name in enumerate(FEATURE_NAMES):
        df[f"feature_{name}"] = feat[:, i]
    df = df.iloc[first_valid:]
    # Under pandas 3 its step() reads ``df.index.values`` of a tz-aware index, which emits a
    # Pandas4Warning that its own ``filterwarnings("error")`` turns into an exception
    # (reset() raises). A tz-naive index avoids that path (and is ~10% faster).
    df.index = df.index.tz_convert(None)
    return trading_env_cls(
        df=df,
        positions=[-1, 0, 1],
        windows=WINDOW,
        trading_fees=0.0,
        borrow_interest_rate=0.0,
        portfolio_initial_value=100_000,
        initial_position=0,  # 'random' (its default) draws from numpy's global RNG
        verbose=0,
        render_mode=None,
    )


def make_our_env(path: str | Path) -> gym.Env | None:
    """The project's env, or None (with a printed note) when it is not available yet."""
    try:
        from backtest.data import load_bars
        from backtest.env import EnvConfig, TradingEnv
    except ImportError as exc:
        print(f"[bench_env] skipping '{NAME_OURS}': cannot import backtest.env ({exc})")
        return None
    try:
        return TradingEnv(load_bars(path), EnvConfig(window=WINDOW))
    except Exception as exc:  # the env is work in progress; never sink the peers' numbers
        print(f"[bench_env] skipping '{NAME_OURS}': building it failed: {exc!r}")
        return None


FACTORIES: dict[str, Callable[[str | Path], gym.Env | None]] = {
    NAME_ANYTRADING: make_anytrading_env,
    NAME_GTE: make_gte_env,
    NAME_MINIMAL: make_minimal_env,
    NAME_OURS: make_our_env,
}


# --------------------------------------------------------------------------- runner


def random_actions(space: gym.Space, rng: np.random.Generator, n: int) -> list[Any]:
    """``n`` random actions of ``space`` drawn from ``rng`` (Discrete and Box)."""
    if isinstance(space, spaces.Discrete):
        return (space.start + rng.integers(0, space.n, size=n)).tolist()
    if isinstance(space, spaces.Box):
        lo = np.broadcast_to(space.low, space.shape)
        hi = np.broadcast_to(space.high, space.shape)
        draws = rng.uniform(lo, hi, size=(n, *space.shape)).astype(space.dtype)
        return list(draws)
    raise TypeError(f"no random-action rule for {space!r}")


def make_runner(env: gym.Env, steps: int, seed: int) -> Callable[[], int]:
    """A callable that resets ``env`` and runs ``steps`` random steps; returns episodes ended."""
    actions = random_actions(env.action_space, np.random.default_rng(seed), steps)

    def run() -> int:
        step, reset = env.step, env.reset
        reset(seed=seed)
        episodes = 0
        for a in actions:
            _obs, _r, terminated, truncated, _info = step(a)
            if terminated or truncated:
                episodes += 1
                reset()
        return episodes

    return run


def _obs_desc(env: gym.Env) -> str:
    shape = env.observation_space.shape
    return "x".join(str(s) for s in shape) if shape else str(env.observation_space)


def build_envs(path: str | Path) -> dict[str, gym.Env]:
    envs = {}
    for name, factory in FACTORIES.items():
        try:
            env = factory(path)
        except ImportError as exc:  # a peer not installed here: skip it, say so
            print(f"[bench_env] skipping '{name}': {exc}")
            continue
        if env is not None:
            envs[name] = env
    return envs


def bench_throughput(
    path: str | Path,
    *,
    repeats: int = 7,
    steps: int = DEFAULT_STEPS,
    seed: int = DEFAULT_SEED,
) -> list[dict[str, Any]]:
    """Steps/s of every available contender; rows as in ``_timing`` plus throughput columns."""
    envs = build_envs(path)
    runners = {name: make_runner(env, steps, seed) for name, env in envs.items()}
    rows = time_interleaved(runners, repeats=repeats, reference=NAME_MINIMAL)
    by_name = {r["name"]: r for r in rows}
    for row in rows:
        env = envs[row["name"]]
        row["steps"] = steps
        row["episodes"] = row.pop("result")
        row["steps_per_s"] = steps / row["median_s"]
        # IQR of the time, as a range of throughput (slow quartile .. fast quartile).
        row["steps_per_s_q1"] = steps / row["q3_s"]
        row["steps_per_s_q3"] = steps / row["q1_s"]
        row["obs"] = _obs_desc(env)
        row["actions"] = str(env.action_space)
        row["x_minimal"] = 1.0 / row["ratio"] if row.get("ratio") else None
    ours = by_name.get(NAME_OURS)
    for peer in (NAME_ANYTRADING, NAME_GTE, NAME_MINIMAL):
        if ours and peer in by_name:
            key = "ours_over_" + peer.replace("-", "_").replace(" ", "_")
            ours[key] = ours["steps_per_s"] / by_name[peer]["steps_per_s"]
    for env in envs.values():
        with contextlib.suppress(Exception):
            env.close()
    return rows


def throughput_table(rows: list[dict[str, Any]]) -> str:
    return markdown_table(
        rows,
        {
            "name": "env",
            "obs": "obs shape",
            "actions": "actions",
            "n": "repeats",
            "steps": "steps/repeat",
            "episodes": "episodes ended",
            "median_s": "median s",
            "iqr_s": "IQR s",
            "steps_per_s": "steps/s (median)",
            "steps_per_s_q1": "steps/s q1",
            "steps_per_s_q3": "steps/s q3",
            "x_minimal": "throughput vs minimal",
        },
    )


def check_envs(path: str | Path) -> list[dict[str, Any]]:
    """Run gymnasium's ``check_env`` on each contender; record pass/fail and warnings."""
    from gymnasium.utils.env_checker import check_env

    rows = []
    for name, factory in FACTORIES.items():
        try:
            env = factory(path)
        except ImportError:
            env = None
        if env is None:
            rows.append({"env": name, "check_env": "skipped", "message": "not available"})
            continue
        out = io.StringIO()
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(out),
        ):
            warnings.simplefilter("always")
            try:
                check_env(env, skip_render_check=True)
                status, message = "pass", ""
            except Exception as exc:
                status, message = "FAIL", f"{type(exc).__name__}: {exc}"
        seen: list[str] = []
        for w in caught:
            text = _ANSI.sub("", f"{w.category.__name__}: {w.message}")
            if text not in seen:
                seen.append(text)
        rows.append(
            {
                "env": name,
                "check_env": status,
                "message": " ".join(message.split())[:400],
                "warnings": " / ".join(" ".join(s.split())[:200] for s in seen),
            }
        )
        with contextlib.suppress(Exception):
            env.close()
    return rows


def check_table(rows: list[dict[str, Any]]) -> str:
    return markdown_table(rows, ["env", "check_env", "message", "warnings"])


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    by_name = {r["name"]: r for r in rows}
    ours = by_name.get(NAME_OURS)
    if not ours:
        return ["ours: not available (backtest.env.TradingEnv could not be imported or built)"]
    lines = []
    for peer in (NAME_ANYTRADING, NAME_MINIMAL, NAME_GTE):
        if peer in by_name:
            ratio = ours["steps_per_s"] / by_name[peer]["steps_per_s"]
            lines.append(f"ours / {peer} (steps/s): {ratio:.2f}")
    return lines


def run(
    path: str | Path,
    *,
    repeats: int = 7,
    steps: int = DEFAULT_STEPS,
    seed: int = DEFAULT_SEED,
    check: bool = True,
) -> str:
    """Run the throughput bench (and check_env) on ``path``; return the Markdown text."""
    parts = [
        f"### Env throughput (S&P 500 daily, window {WINDOW}, random actions, "
        f"{steps} steps/repeat, {repeats} interleaved repeats)",
        "",
    ]
    rows = bench_throughput(path, repeats=repeats, steps=steps, seed=seed)
    parts += [throughput_table(rows), ""]
    parts += [f"- {line}" for line in summary_lines(rows)]
    if check:
        parts += ["", "### gymnasium check_env", "", check_table(check_envs(path))]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--data", default=None, help="directory holding SP500.parquet")
    parser.add_argument("--no-check", action="store_true", help="skip check_env")
    args = parser.parse_args(argv)
    with sample_dir(args.data) as data:
        text = run(
            data / "SP500.parquet",
            repeats=args.repeats,
            steps=args.steps,
            seed=args.seed,
            check=not args.no_check,
        )
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
