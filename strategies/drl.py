"""DRL-only policy: a stable-baselines3 agent (PPO by default, A2C, DQN) trained on the past.

:class:`DRLPolicy` trains when it first decides, on the bars its
:class:`~backtest.policy.MarketView` shows at that moment (every bar up to the first decision
of the evaluated part, nothing later), so it cannot train on the future by construction. The
older part of that history is the train split, the newer ``validation_fraction`` the
validation split; an evaluation callback keeps the model that did best on validation.

- Observations are normalised with statistics fitted on the train split only
  (``VecNormalize``), saved with the model and frozen when trading. The statistics saved
  are those of the moment the kept (best-on-validation) model was evaluated, so the model
  is always used with the normalisation it was selected under.
- Trading acts with ``deterministic=True``. The decision's confidence is the probability of
  the chosen action (PPO, A2C on discrete actions), the softmax of the Q-values at the chosen
  action (DQN, the seed's ``_get_q_value_confidence``), or for continuous actions
  ``exp(-std)`` of the policy's Gaussian (1 when certain, falling as it spreads).
- ``torch.set_num_threads(1)`` by default: on a busy 2-core machine torch's own threading was
  measured 9x slower for PPO.
- Training steps ``n_envs`` envs at once (default 1). With one env it runs them as it
  always has (``DummyVecEnv`` over a ``Monitor``-ed :class:`~backtest.env.TradingEnv`);
  with more, by default through :class:`~backtest.vecenv.TradingVecEnv` (``vec_env =
  "batched"``: one compiled call steps them all and reports each episode as ``Monitor``
  does), or ``vec_env = "dummy"`` for N ``DummyVecEnv`` envs. The two compute the
  same rollouts bit for bit, so they train the same weights. ``eval_every`` stays in
  timesteps whatever ``n_envs`` is.
- Trained models are cached under ``cache_dir`` keyed by the hash of everything training
  depends on (the training bars' bytes, the environment config, the algorithm and its
  settings, the seed, the timesteps, ``n_envs`` and the vectorisation, the package
  versions, and the sha256 of the source of every module training runs through: the env,
  its kernels, the features, the batched env and this module), so reruns and sweeps never
  retrain the same thing, and a change to the env's code never reuses a model trained on
  the old one. Beside each model, ``manifest.json`` records the training data's sha256, the
  environment config, the algorithm config, the seed, the timesteps, the code's sha256,
  the package versions and the train / validation ranges.
- From the CLI (the engine's ``progress``), training shows a rich progress bar.

stable-baselines3 seeds Python's, numpy's and torch's global generators inside ``learn``;
the project's own code never reads them, and training is seeded from the run's
``SeedSequence`` child, so results repeat.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.config import EnvConfig
from backtest.data import BarMeta, Bars
from backtest.env import TradingEnv
from backtest.errors import ConfigError
from strategies.base import Decision, MarketView, Observation

__all__ = ["ALGORITHMS", "VEC_ENVS", "DRLPolicy", "TrainedAgent", "train_agent"]

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


def train_agent(
    bars: Bars,
    env_config: EnvConfig,
    *,
    algo: str = "PPO",
    timesteps: int = 20_000,
    seed: int = 0,
    validation_fraction: float = 0.2,
    episode_bars: int = 252,
    eval_every: int = 2_048,
    hyperparameters: dict[str, Any] | None = None,
    cache_dir: str | Path = "models",
    torch_threads: int = 1,
    n_envs: int = 1,
    vec_env: str | None = None,
    progress: Any = None,
    label: str = "training",
) -> TrainedAgent:
    """Train (or load from the cache) an agent on ``bars``.

    The last ``validation_fraction`` of the bars is the validation split the evaluation
    callback scores; the rest is the train split the agent learns on and the observation
    statistics are fitted on.

    Args:
        n_envs: Training envs stepped together (random episode starts of their own).
        vec_env: ``batched`` (:class:`~backtest.vecenv.TradingVecEnv`) or ``dummy``
            (``DummyVecEnv``); None: ``dummy`` for one env, ``batched`` for more.
        progress: A started ``rich.progress.Progress`` to show training in (None: quiet).
        label: The progress task's description.

    Raises:
        ConfigError: Too few bars, or a bad algorithm or setting.
    """
    import torch

    if not 0.0 < validation_fraction < 0.9:
        raise ConfigError("drl.validation_fraction must be in (0, 0.9). Fix: e.g. 0.2.")
    cls = _algorithm(algo)
    kind = _vec_env_kind(n_envs, vec_env)
    if algo == "DQN" and env_config.action_space != "discrete":
        raise ConfigError("drl.algo DQN needs env.action_space = 'discrete'.")
    frame = bars.frame
    settings = {
        "algo": algo,
        "timesteps": int(timesteps),
        "seed": int(seed),
        "validation_fraction": validation_fraction,
        "episode_bars": int(episode_bars),
        "eval_every": int(eval_every),
        "hyperparameters": hyperparameters or {},
        "n_envs": int(n_envs),
        "vec_env": kind,
    }
    key = _training_key(frame, env_config, settings)
    folder = Path(cache_dir) / key[:20]
    torch.set_num_threads(torch_threads)
    if not (folder / "manifest.json").exists():
        _train(cls, bars, env_config, settings, folder, key, progress, label)
    manifest = json.loads((folder / "manifest.json").read_text())
    stats = np.load(folder / "normalisation.npz")
    model = cls.load(folder / "best_model.zip", device="cpu")
    return TrainedAgent(model, stats["mean"], stats["var"], manifest, folder)


def _callbacks() -> tuple[type, type]:
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

    return SnapshotNormalisation, ProgressUpdate


def _train(
    cls: Any,
    bars: Bars,
    env_config: EnvConfig,
    settings: dict[str, Any],
    folder: Path,
    key: str,
    progress: Any = None,
    label: str = "training",
) -> None:
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
    model = cls(
        "MlpPolicy", train_env, seed=seed, device="cpu", verbose=0, **settings["hyperparameters"]
    )
    snapshot_cls, progress_cls = _callbacks()
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
    )
    callbacks: list[Any] = [callback]
    task = None
    if progress is not None:
        task = progress.add_task(label, total=settings["timesteps"])
        callbacks.append(progress_cls(progress, task, settings["timesteps"] // 100))
    model.learn(total_timesteps=settings["timesteps"], callback=CallbackList(callbacks))
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
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
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


def _train_env_overrides(train_env: dict[str, Any] | None) -> dict[str, Any]:
    """Check ``drl.train_env``'s keys and values against :class:`EnvConfig`."""
    from pydantic import ValidationError

    overrides = dict(train_env or {})
    try:
        EnvConfig.model_validate(overrides)
    except ValidationError as exc:
        raise ConfigError(
            f"drl.train_env: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}. Fix: give "
            "[env] settings (e.g. turnover_penalty = 0.003) with valid values."
        ) from exc
    return overrides


class DRLPolicy:
    """Trade with a stable-baselines3 agent trained on the bars before the first decision.

    Args:
        name: Label in the ledger.
        algo: ``PPO``, ``A2C`` or ``DQN``.
        timesteps: Training steps.
        validation_fraction: Newest share of the history kept for validation.
        episode_bars: Length of a training episode (random starts).
        eval_every: Steps between validation evaluations.
        hyperparameters: Keyword arguments for the algorithm.
        cache_dir: Where trained models are cached.
        torch_threads: ``torch.set_num_threads`` while training and acting.
        n_envs: Training envs stepped together.
        vec_env: ``batched`` or ``dummy`` (see :func:`train_agent`); None picks.
        seed: Training seed; None uses the seed the engine hands to ``reset``.
        train_env: Environment settings for training (and the validation score that picks
            the kept model) only, over the run's ``[env]``, e.g. ``{turnover_penalty =
            0.003}``; trading always uses the run's environment.
    """

    def __init__(
        self,
        name: str = "drl",
        *,
        algo: str = "PPO",
        timesteps: int = 20_000,
        validation_fraction: float = 0.2,
        episode_bars: int = 252,
        eval_every: int = 2_048,
        hyperparameters: dict[str, Any] | None = None,
        cache_dir: str = "models",
        torch_threads: int = 1,
        n_envs: int = 1,
        vec_env: str | None = None,
        seed: int | None = None,
        train_env: dict[str, Any] | None = None,
    ) -> None:
        _algorithm(algo)
        self.train_env = _train_env_overrides(train_env)
        _vec_env_kind(n_envs, vec_env)
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        self.name = name
        self.algo = algo
        self.settings: dict[str, Any] = {
            "algo": algo,
            "timesteps": timesteps,
            "validation_fraction": validation_fraction,
            "episode_bars": episode_bars,
            "eval_every": eval_every,
            "hyperparameters": hyperparameters or {},
            "cache_dir": cache_dir,
            "torch_threads": torch_threads,
            "n_envs": n_envs,
            "vec_env": vec_env,
        }
        self.seed = seed
        self.env_config = EnvConfig()
        self.agent: TrainedAgent | None = None
        self._market: MarketView | None = None
        self._run_seed: int | None = None
        self._positions: list[float] = []
        self._progress: Any = None

    def bind(self, env_config: EnvConfig) -> None:
        """Use the run's environment (costs, window, actions) for training and acting."""
        self.env_config = env_config
        self._positions = [float(p) for p in env_config.positions]

    def show_progress(self, progress: Any) -> None:
        """Show training in ``progress`` (a started ``rich.progress.Progress``; None: quiet)."""
        self._progress = progress

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        """Remember the market; training waits for the first decision."""
        self._market = market
        self._run_seed = seed
        self.agent = None
        if not self._positions:
            self._positions = [float(p) for p in self.env_config.positions]

    def _train(self, market: MarketView) -> TrainedAgent:
        frame = market.frame()
        bars = Bars(frame=frame, meta=BarMeta(symbol=market.symbol, frequency=market.frequency))
        seed = self.seed if self.seed is not None else (self._run_seed or 0)
        settings = dict(self.settings)
        env_config = self.env_config
        if self.train_env:
            env_config = EnvConfig.model_validate({**env_config.model_dump(), **self.train_env})
        return train_agent(
            bars,
            env_config,
            seed=int(seed) % (2**31),
            progress=self._progress,
            label=f"train {self.name} ({self.algo})",
            **settings,
        )

    def act(self, obs: Observation) -> Decision:
        """Train on first use, then pick the agent's deterministic action."""
        import torch

        if self.agent is None:
            self.agent = self._train(obs.market)
        agent = self.agent
        x = agent.normalise(obs.features)
        model = agent.model
        with torch.no_grad():
            tensor, _ = model.policy.obs_to_tensor(x)
            if self.algo == "DQN":
                q = model.q_net(tensor)[0].cpu().numpy().astype(np.float64)
                action = int(np.argmax(q))
                z = np.exp(q - q.max())
                confidence = float(z[action] / z.sum())
            else:
                distribution = model.policy.get_distribution(tensor)
                if self._positions and self.env_config.action_space == "discrete":
                    probs = distribution.distribution.probs[0].cpu().numpy()
                    action = int(np.argmax(probs))
                    confidence = float(probs[action])
                else:
                    mean = float(distribution.distribution.mean[0, 0])
                    std = float(distribution.distribution.stddev[0, 0])
                    limit = self.env_config.risk.max_leverage
                    target = min(max(mean, -limit), limit)
                    return Decision(
                        target_position=target,
                        confidence=math.exp(-std),
                        action="TARGET",
                        reasoning=f"{self.algo} mean {mean:+.3f}",
                    )
        target = self._positions[action]
        label = "BUY" if target > 0 else "SELL" if target < 0 else "CLOSE"
        return Decision(
            target_position=target,
            confidence=confidence,
            action=label,
            reasoning=f"{self.algo} action {action} (p={confidence:.2f})",
        )
