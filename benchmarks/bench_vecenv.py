"""Batched env: ``TradingVecEnv`` against ``DummyVecEnv`` over the same 8 envs.

The target (issue 21): PPO with ``n_envs=8`` trains >= 2x as fast on the batched env as on
``DummyVecEnv``.

Both contenders are built as :func:`strategies.drl.train_agent` builds them: the S&P 500
sample's bars to 2012, window 30, 252-bar episodes with random starts, 8 envs seeded
``seed + i``; ``dummy`` is ``DummyVecEnv`` over 8 ``Monitor(TradingEnv)``, ``batched`` is
:class:`backtest.vecenv.TradingVecEnv` with 8 envs (one compiled call per step).

* **Env stepping**: ``--env-steps`` env steps per repeat (``--env-steps / 8`` vector steps)
  with random discrete actions drawn up front, resets (every 251 steps per env) included.
* **PPO**: ``model.learn(--timesteps)`` on a model built once per contender (SB3's default
  PPO hyperparameters but ``n_steps=--n-steps``, ``MlpPolicy``, ``VecNormalize`` on the
  observations, CPU, ``torch.set_num_threads(1)``, seed 0), as :mod:`bench_drl` does. A
  callback splits each ``learn`` into rollout collection (env steps, policy forward passes,
  the rollout buffer) and the rest (the gradient updates); a timer around the vec env's
  ``step_wait`` measures the env's own share. The two contenders compute
  identical rollouts and updates (the tests prove it; every call reseeds SB3's global
  generators, which the interleaved contenders share), so both do the same work: the
  script checks their weights are still equal at the end.

Contenders run interleaved (``dummy, batched, dummy, batched, ...``) after one untimed
warm-up each; figures are medians.

Run: ``.venv/bin/python benchmarks/bench_vecenv.py [--repeats 5] [--timesteps 8192]
[--n-steps 256] [--env-steps 40000] [--data DIR]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from _data import sample_dir  # noqa: E402
from _timing import markdown_table, time_interleaved  # noqa: E402

N_ENVS = 8
EPISODE = 252
SEED = 0
NAME_DUMMY = "DummyVecEnv"
NAME_BATCHED = "TradingVecEnv"


def make_vec_env(data: Path, kind: str, n_envs: int = N_ENVS) -> Any:
    """The 8 training envs as ``train_agent`` builds them (before ``VecNormalize``)."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from backtest.config import EnvConfig
    from backtest.data import load_bars
    from backtest.env import TradingEnv
    from backtest.vecenv import TradingVecEnv

    bars = load_bars(data / "SP500.parquet", end="2012-12-31")
    config = EnvConfig(window=30, episode_bars=EPISODE)
    if kind == NAME_BATCHED:
        return TradingVecEnv(bars, config, n_envs)
    return DummyVecEnv([lambda: Monitor(TradingEnv(bars, config)) for _ in range(n_envs)])


def measure_stepping(data: Path, *, env_steps: int, repeats: int) -> list[dict[str, Any]]:
    """Env steps per second with random actions, both contenders interleaved."""
    actions = np.random.default_rng(SEED).integers(0, 3, size=(env_steps // N_ENVS, N_ENVS))

    def stepper(kind: str) -> Any:
        venv = make_vec_env(data, kind)
        venv.seed(SEED)
        venv.reset()

        def call() -> int:
            episodes = 0
            for action in actions:
                episodes += int(venv.step(action)[2].sum())
            return episodes

        return call

    rows = time_interleaved(
        {NAME_DUMMY: stepper(NAME_DUMMY), NAME_BATCHED: stepper(NAME_BATCHED)},
        repeats=repeats,
        reference=NAME_DUMMY,
    )
    for row in rows:
        row["steps_per_s"] = actions.size / row["median_s"]
        row["speedup"] = 1.0 / row["ratio"]
    return rows


def measure_ppo(data: Path, *, timesteps: int, n_steps: int, repeats: int) -> list[dict[str, Any]]:
    """PPO ``learn`` throughput on both, with the rollout / update split of each call."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)

    class RolloutClock(BaseCallback):
        """Wall time spent collecting rollouts, summed over a ``learn`` call."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds = 0.0
            self._started = 0.0

        def _on_rollout_start(self) -> None:
            self._started = time.perf_counter()

        def _on_rollout_end(self) -> None:
            self.seconds += time.perf_counter() - self._started

        def _on_step(self) -> bool:
            return True

    models: dict[str, Any] = {}
    rollout_s: dict[str, list[float]] = {}
    env_s: dict[str, list[float]] = {}

    def learner(kind: str) -> Any:
        inner = make_vec_env(data, kind)
        env_s[kind] = []
        step_wait = inner.step_wait

        def timed_step_wait() -> Any:  # the env's own time inside learn (auto-resets too)
            t0 = time.perf_counter()
            out = step_wait()
            env_s[kind][-1] += time.perf_counter() - t0
            return out

        inner.step_wait = timed_step_wait
        venv = VecNormalize(inner, norm_obs=True, norm_reward=False)
        venv.seed(SEED)
        model = PPO("MlpPolicy", venv, n_steps=n_steps, seed=SEED, device="cpu", verbose=0)
        models[kind] = model
        rollout_s[kind] = []

        def call() -> int:
            # SB3 samples actions and minibatches from the global generators, which the
            # interleaved contenders share: reseed so that both do the same work each call.
            model.set_random_seed(SEED)
            env_s[kind].append(0.0)
            clock = RolloutClock()
            model.learn(total_timesteps=timesteps, reset_num_timesteps=True, callback=clock)
            rollout_s[kind].append(clock.seconds)
            return int(model.num_timesteps)

        return call

    rows = time_interleaved(
        {NAME_DUMMY: learner(NAME_DUMMY), NAME_BATCHED: learner(NAME_BATCHED)},
        repeats=repeats,
        reference=NAME_DUMMY,
    )
    for row in rows:
        name = row["name"]
        done = row["result"]  # timesteps of the last call (a whole number of rollouts)
        rollout = statistics.median(rollout_s[name][1:])  # the warm-up call left out
        row["steps_per_s"] = done / row["median_s"]
        row["speedup"] = 1.0 / row["ratio"]
        row["rollout_s"] = rollout
        row["rollout_steps_per_s"] = done / rollout
        row["update_s"] = row["median_s"] - rollout
        row["env_s"] = statistics.median(env_s[name][1:])
        row["env_share"] = row["env_s"] / row["median_s"]
    a, b = (models[k].policy.state_dict() for k in (NAME_DUMMY, NAME_BATCHED))
    same = all(torch.equal(a[k], b[k]) for k in a)
    for row in rows:
        row["same_weights"] = same
    return rows


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timesteps", type=int, default=8192)
    parser.add_argument("--n-steps", type=int, default=256)
    parser.add_argument("--env-steps", type=int, default=40_000)
    parser.add_argument("--data", default=None, help="directory holding SP500.parquet")
    args = parser.parse_args(argv)
    with sample_dir(args.data) as data:
        stepping = measure_stepping(Path(data), env_steps=args.env_steps, repeats=args.repeats)
        ppo = measure_ppo(
            Path(data), timesteps=args.timesteps, n_steps=args.n_steps, repeats=args.repeats
        )
    print(
        f"### Env stepping, {N_ENVS} envs ({args.env_steps} env steps per repeat, random "
        f"actions, median of {args.repeats} interleaved repeats)\n"
    )
    print(
        markdown_table(
            stepping,
            {
                "name": "vec env",
                "median_s": "median s",
                "iqr_s": "IQR s",
                "steps_per_s": "env steps/s",
                "speedup": "speedup vs DummyVecEnv",
            },
            formats={"steps_per_s": ",.0f", "speedup": ".2f"},
        )
    )
    print(
        f"\n### PPO, {N_ENVS} envs ({args.timesteps} timesteps per repeat, n_steps "
        f"{args.n_steps}, median of {args.repeats} interleaved repeats, torch 1 thread)\n"
    )
    print(
        markdown_table(
            ppo,
            {
                "name": "vec env",
                "median_s": "median s",
                "iqr_s": "IQR s",
                "steps_per_s": "steps/s",
                "speedup": "speedup vs DummyVecEnv",
                "rollout_s": "of which rollouts s",
                "rollout_steps_per_s": "rollout steps/s",
                "env_s": "of which env steps s",
                "env_share": "env share",
                "update_s": "updates s",
            },
            formats={
                "steps_per_s": ",.0f",
                "rollout_steps_per_s": ",.0f",
                "speedup": ".2f",
                "rollout_s": ".3f",
                "update_s": ".3f",
                "env_s": ".3f",
                "env_share": ".1%",
            },
        )
    )
    speedup = next(r["speedup"] for r in ppo if r["name"] == NAME_BATCHED)
    print(f"\nSame weights after every learn call: {ppo[0]['same_weights']}.")
    # Amdahl: the share of a DummyVecEnv learn call spent stepping the envs bounds what any
    # env, however fast, can gain.
    dummy = next(r for r in ppo if r["name"] == NAME_DUMMY)
    print(
        f"Stepping the envs is {dummy['env_s']:.2f} s of DummyVecEnv's {dummy['median_s']:.2f} s "
        f"learn call ({dummy['env_share']:.1%}): an env that cost nothing would make PPO at "
        f"most {1.0 / (1.0 - dummy['env_share']):.2f}x faster."
    )
    verdict = "met" if speedup >= 2.0 else "MISSED"
    print(f"Target PPO n_envs={N_ENVS} >= 2x DummyVecEnv: {speedup:.2f}x, {verdict}.")
    return {"stepping": stepping, "ppo": ppo}


if __name__ == "__main__":
    main()
