"""Training and caching of the DRL agent (:mod:`strategies.drl` trades with it).

:func:`_train` trains one agent (stable-baselines3 over :class:`~backtest.env.TradingEnv`
envs, an evaluation callback keeping the best model on the validation split) and writes
it, its frozen observation statistics and ``manifest.json`` into the model cache; the
helpers here compute the cache key (the training bars' bytes, the env config, the settings,
the package versions and the sha256 of the training code).

Each training also records its curves in the manifest, so that a cached model still has
them: ``train_curve`` (``timesteps``, ``episode_return``: every training episode's return,
as ``Monitor`` reports it, at the timestep it ended) and ``validation_curve``
(``timesteps``, ``mean_reward``: the evaluation callback's scores on the validation split).
Wall-clock times are left out, so a manifest is the same bytes on every machine.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.config import EnvConfig
from backtest.data import Bars
from backtest.env import TradingEnv
from backtest.errors import ConfigError

__all__ = ["ALGORITHMS", "VEC_ENVS", "TrainedAgent"]

ALGORITHMS: tuple[str, ...] = ("PPO", "A2C", "DQN")
VEC_ENVS: tuple[str, ...] = ("batched", "dummy")
_EPSILON = 1e-8
_CLIP = 10.0


class TrainedAgent:
    """A trained model with its frozen observation statistics and manifest."""

    def __init__(
        self,
        model: Any,
        obs_mean: np.ndarray,
        obs_var: np.ndarray,
        manifest: dict[str, Any],
        path: Path,
    ) -> None:
        self.model = model
        self.obs_mean = obs_mean.astype(np.float32)
        self.obs_scale = (1.0 / np.sqrt(obs_var + _EPSILON)).astype(np.float32)
        self.manifest = manifest
        self.path = path

    def normalise(self, obs: np.ndarray) -> np.ndarray:
        """Apply the train-split statistics, as ``VecNormalize`` does when frozen."""
        return np.clip((obs - self.obs_mean) * self.obs_scale, -_CLIP, _CLIP)


def _algorithm(name: str) -> Any:
    import stable_baselines3 as sb3

    if name not in ALGORITHMS:
        raise ConfigError(
            f"drl.algo: {name!r} is not supported. Fix: use one of {', '.join(ALGORITHMS)}."
        )
    return getattr(sb3, name)


_VERSIONED = ("stable-baselines3", "torch", "gymnasium", "numpy", "hybrid-backtest")


def _data_sha256(frame: pd.DataFrame) -> str:
    """sha256 of the training bars' timestamps and OHLCV values (what training reads)."""
    digest = hashlib.sha256()
    digest.update(frame.index.asi8.tobytes())
    for column in ("open", "high", "low", "close", "volume"):
        digest.update(np.ascontiguousarray(frame[column].to_numpy(np.float64)).tobytes())
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    return {p: importlib.metadata.version(p) for p in _VERSIONED}


# Every module a training run's numbers go through (found without importing them: the
# batched env imports stable-baselines3, which this module only imports when training).
_TRAINING_CODE = (
    "backtest.env",
    "backtest._env_nb",
    "backtest.features",
    "backtest.vecenv",
    "strategies.drl",
    "strategies.drl_train",
)


def _sources_sha256(paths: Iterable[str | Path]) -> str:
    """sha256 of the files' names and bytes, in order."""
    digest = hashlib.sha256()
    for path in paths:
        data = Path(path).read_bytes()
        digest.update(f"{Path(path).name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


@functools.cache
def _code_sha256() -> str:
    paths = []
    for name in _TRAINING_CODE:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"cannot find the source of {name} to hash it")
        paths.append(spec.origin)
    return _sources_sha256(paths)


def _training_key(
    frame: pd.DataFrame,
    env_config: EnvConfig,
    settings: dict[str, Any],
    code_sha256: str | None = None,
) -> str:
    digest = hashlib.sha256(_data_sha256(frame).encode())
    digest.update(
        json.dumps(
            {
                "env": env_config.model_dump(mode="json"),
                "settings": settings,
                "versions": _versions(),
                "code_sha256": code_sha256 if code_sha256 is not None else _code_sha256(),
            },
            sort_keys=True,
        ).encode()
    )
    return digest.hexdigest()


def _vec_env_kind(n_envs: int, vec_env: str | None) -> str:
    if n_envs < 1:
        raise ConfigError(f"drl.n_envs must be >= 1, got {n_envs}. Fix: e.g. n_envs = 8.")
    if vec_env is None:
        return "dummy" if n_envs == 1 else "batched"
    if vec_env not in VEC_ENVS:
        raise ConfigError(
            f"drl.vec_env: {vec_env!r} is not supported. Fix: use one of {', '.join(VEC_ENVS)}."
        )
    return vec_env


def _callbacks() -> tuple[type, type, type, type]:
    from stable_baselines3.common.callbacks import BaseCallback

    class SnapshotNormalisation(BaseCallback):
        """On a new best validation score, copy the train statistics it was scored with."""

        def __init__(self, source: Any) -> None:
            super().__init__()
            self.source = source
            self.mean: np.ndarray | None = None
            self.var: np.ndarray | None = None

        def _on_step(self) -> bool:
            rms = self.source.obs_rms
            self.mean, self.var = rms.mean.copy(), rms.var.copy()
            return True

    class ProgressUpdate(BaseCallback):
        """Advance a rich progress task with the timesteps done."""

        def __init__(self, progress: Any, task: Any, every: int) -> None:
            super().__init__()
            self.progress, self.task, self.every = progress, task, max(1, every)
            self.shown = 0

        def _on_step(self) -> bool:
            # A step is n_envs timesteps: show progress once ``every`` more have passed.
            if self.num_timesteps - self.shown >= self.every:
                self.shown = self.num_timesteps
                self.progress.update(self.task, completed=self.num_timesteps)
            return True

    class EpisodeCurve(BaseCallback):
        """Record each finished training episode's return (``Monitor``'s ``r``) and when."""

        def __init__(self) -> None:
            super().__init__()
            self.timesteps: list[int] = []
            self.returns: list[float] = []

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", ()):
                episode = info.get("episode") if isinstance(info, dict) else None
                if episode is not None:
                    self.timesteps.append(int(self.num_timesteps))
                    self.returns.append(float(episode["r"]))
            return True

    class ValidationCurve(BaseCallback):
        """After each evaluation, record its timestep and mean validation reward."""

        def __init__(self) -> None:
            super().__init__()
            self.timesteps: list[int] = []
            self.rewards: list[float] = []

        def _on_step(self) -> bool:
            assert self.parent is not None  # the EvalCallback
            self.timesteps.append(int(self.num_timesteps))
            self.rewards.append(float(self.parent.last_mean_reward))  # type: ignore[attr-defined]
            return True

    return SnapshotNormalisation, ProgressUpdate, EpisodeCurve, ValidationCurve


def _train(
    cls: Any,
    bars: Bars,
    env_config: EnvConfig,
    settings: dict[str, Any],
    folder: Path,
    key: str,
    progress: Any = None,
    label: str = "training",
    tensorboard_log: str | None = None,
) -> None:
    """Train one agent into ``folder`` (see :func:`strategies.drl.train_agent`).

    ``tensorboard_log`` is handed to stable-baselines3 (a directory; None: no logs). It
    changes nothing that is learnt, so it is not part of the cache key: a cached model
    writes no new logs.
    """
    from stable_baselines3.common.callbacks import CallbackList, EvalCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    n = len(bars)
    split = int(n * (1.0 - settings["validation_fraction"]))
    episode = settings["episode_bars"]
    train_cfg = env_config.model_copy(update={"episode_bars": None})
    lo = TradingEnv(bars, train_cfg).first_bar  # where trading can start: warm-up + window
    if split - lo < episode + 2 or n - split < 10:
        raise ConfigError(
            f"drl: {n} bars leave {max(split - lo, 0)} to train on after the feature warm-up "
            f"and {n - split} to validate on; training needs more than one episode "
            f"({episode} bars). Fix: start the evaluated split later, or lower "
            "drl.episode_bars."
        )
    seed = settings["seed"]
    episode_cfg = env_config.model_copy(update={"episode_bars": episode})
    n_envs = settings["n_envs"]
    envs: Any
    if settings["vec_env"] == "batched":
        from backtest.vecenv import TradingVecEnv

        envs = TradingVecEnv(bars, episode_cfg, n_envs, end=split)
    else:
        envs = DummyVecEnv(
            [lambda: Monitor(TradingEnv(bars, episode_cfg, end=split)) for _ in range(n_envs)]
        )
    train_env = VecNormalize(
        envs,
        norm_obs=True,
        norm_reward=False,
        clip_obs=_CLIP,
    )
    train_env.seed(seed)
    eval_env = VecNormalize(
        DummyVecEnv([lambda: Monitor(TradingEnv(bars, train_cfg, start=split))]),
        training=False,
        norm_obs=True,
        norm_reward=False,
        clip_obs=_CLIP,
    )
    staging = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        model = cls(
            "MlpPolicy",
            train_env,
            seed=seed,
            device="cpu",
            verbose=0,
            tensorboard_log=tensorboard_log,
            **settings["hyperparameters"],
        )
        snapshot_cls, progress_cls, curve_cls, validation_cls = _callbacks()
        curve, validation = curve_cls(), validation_cls()
        snapshot = snapshot_cls(train_env)
        callback = EvalCallback(
            eval_env,
            best_model_save_path=str(staging),
            n_eval_episodes=1,
            # Counted in calls, each n_envs timesteps: keep eval_every in timesteps.
            eval_freq=max(1, settings["eval_every"] // n_envs),
            deterministic=True,
            verbose=0,
            callback_on_new_best=snapshot,
            callback_after_eval=validation,
        )
        callbacks: list[Any] = [callback, curve]
        task = None
        if progress is not None:
            task = progress.add_task(label, total=settings["timesteps"])
            callbacks.append(progress_cls(progress, task, settings["timesteps"] // 100))
        model.learn(
            total_timesteps=settings["timesteps"],
            callback=CallbackList(callbacks),
            tb_log_name=label.replace(" ", "_").replace("/", "_"),
        )
        if task is not None:
            progress.update(task, completed=settings["timesteps"])
        if snapshot.mean is None:  # no evaluation happened: keep the last model and statistics
            model.save(staging / "best_model.zip")
            rms: Any = train_env.obs_rms  # one RunningMeanStd for a Box observation space
            mean, var = rms.mean, rms.var
        else:
            mean, var = snapshot.mean, snapshot.var
        np.savez(staging / "normalisation.npz", mean=mean, var=var)
        manifest = {
            "key": key,
            "data_sha256": _data_sha256(bars.frame),
            "env": env_config.model_dump(mode="json"),
            "versions": _versions(),
            "code_sha256": _code_sha256(),
            "normalisation": "VecNormalize statistics of the train split when the kept model "
            "was scored",
            **settings,
            "train_bars": [0, split],
            "validation_bars": [split, n],
            "best_validation_reward": float(callback.best_mean_reward),
            "first_train_bar": str(bars.frame.index[0]),
            "last_train_bar": str(bars.frame.index[split - 1]),
            "last_validation_bar": str(bars.frame.index[-1]),
            "train_curve": {"timesteps": curve.timesteps, "episode_return": curve.returns},
            "validation_curve": {
                "timesteps": validation.timesteps,
                "mean_reward": validation.rewards,
            },
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    except BaseException:
        # Ctrl-C (or any failure) mid-training: no half-written model is left behind.
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if folder.exists():  # another process finished the same training first
        shutil.rmtree(staging)
        return
    try:
        staging.rename(folder)
    except OSError:
        # Another process renamed its copy into place between the check and here (two
        # sweeps sharing one cache): theirs is as good as ours.
        if not (folder / "manifest.json").exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)
