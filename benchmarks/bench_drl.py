"""PPO training throughput: on the project's TradingEnv vs on a constant-observation env.

The target (issue 6): PPO trains on ``TradingEnv`` at >= 0.9x the speed it trains on an env
of the same shape that does nothing, i.e. the env costs <= 10% of training.

Contenders, trained exactly as :func:`strategies.drl.train_agent` trains (``MlpPolicy``,
SB3's default PPO hyperparameters, ``Monitor`` + ``DummyVecEnv`` + ``VecNormalize`` on the
observations, CPU, ``torch.set_num_threads(1)``):

* ``TradingEnv``: ``backtest.env.TradingEnv`` over the S&P 500 sample's bars to 2012, window
  30, 252-bar episodes with random starts (what the quickstart's DRL agent trains on).
* ``constant env``: :class:`ConstantEnv` below, the same observation and action spaces,
  a zero observation, zero reward, the same 252-step episodes; its ``step`` costs almost
  nothing, so its time is SB3's own (rollout bookkeeping, policy forward passes, updates).

Each repeat calls ``model.learn(--timesteps)`` on a model built once per contender (untimed),
interleaved ``T, C, T, C, ...`` after one untimed warm-up; the figure is the median. The
ratio is throughput on ``TradingEnv`` over throughput on the constant env.

Run: ``.venv/bin/python benchmarks/bench_drl.py [--repeats 5] [--timesteps 4096] [--data DIR]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from _data import sample_dir  # noqa: E402
from _timing import markdown_table, time_interleaved  # noqa: E402

EPISODE = 252
NAME_OURS = "TradingEnv"
NAME_CONSTANT = "constant env"


class ConstantEnv(gym.Env[np.ndarray, Any]):
    """The spaces of another env, a zero observation and reward, fixed-length episodes."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self, like: gym.Env[np.ndarray, Any], episode: int = EPISODE) -> None:
        super().__init__()
        self.observation_space = like.observation_space
        self.action_space = like.action_space
        self._obs = np.zeros(self.observation_space.shape, dtype=np.float32)
        self._episode = episode
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        return self._obs.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._t += 1
        return self._obs.copy(), 0.0, False, self._t >= self._episode, {}


def _trading_env(data: Path) -> gym.Env[np.ndarray, Any]:
    from backtest.config import EnvConfig
    from backtest.data import load_bars
    from backtest.env import TradingEnv

    bars = load_bars(data / "SP500.parquet", end="2012-12-31")
    return TradingEnv(bars, EnvConfig(window=30, episode_bars=EPISODE))


def _model(make_env: Any, seed: int = 0) -> Any:
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    vec = VecNormalize(DummyVecEnv([lambda: Monitor(make_env())]), norm_obs=True, norm_reward=False)
    vec.seed(seed)
    return PPO("MlpPolicy", vec, seed=seed, device="cpu", verbose=0)


def measure(data: Path, *, timesteps: int, repeats: int) -> list[dict[str, Any]]:
    """Time ``learn(timesteps)`` on both envs, interleaved; add steps/s and the ratio."""
    import torch

    torch.set_num_threads(1)
    ours = _model(lambda: _trading_env(data))
    constant = _model(lambda: ConstantEnv(_trading_env(data)))

    def learn(model: Any) -> Any:
        def call() -> int:
            model.learn(total_timesteps=timesteps, reset_num_timesteps=True)
            return int(model.num_timesteps)

        return call

    rows = time_interleaved(
        {NAME_OURS: learn(ours), NAME_CONSTANT: learn(constant)},
        repeats=repeats,
        reference=NAME_CONSTANT,
    )
    for row in rows:
        row["steps_per_s"] = timesteps / row["median_s"]
        # Throughput relative to the constant env (the reference's time over ours).
        row["throughput_ratio"] = 1.0 / row["ratio"] if row["ratio"] else None
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timesteps", type=int, default=4096)
    parser.add_argument("--data", default=None, help="directory holding SP500.parquet")
    args = parser.parse_args(argv)
    with sample_dir(args.data) as data:
        rows = measure(Path(data), timesteps=args.timesteps, repeats=args.repeats)
    print(
        f"### PPO training throughput ({args.timesteps} steps per repeat, median of "
        f"{args.repeats} interleaved repeats, torch 1 thread)\n"
    )
    print(
        markdown_table(
            rows,
            {
                "name": "env",
                "median_s": "median s",
                "iqr_s": "IQR s",
                "steps_per_s": "steps/s",
                "throughput_ratio": "throughput vs constant env",
            },
            formats={"steps_per_s": ",.0f", "throughput_ratio": ".3f"},
        )
    )
    ratio = next(r["throughput_ratio"] for r in rows if r["name"] == NAME_OURS)
    verdict = "met" if ratio >= 0.9 else "MISSED"
    print(f"\nTarget >= 0.9x: {ratio:.3f}x, {verdict}.")
    return rows


if __name__ == "__main__":
    main()
