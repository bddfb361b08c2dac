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
  its kernels, the features, the batched env, this module and :mod:`strategies.drl_train`,
  which holds the training and caching code), so reruns and sweeps never
  retrain the same thing, and a change to the env's code never reuses a model trained on
  the old one. Beside each model, ``manifest.json`` records the training data's sha256, the
  environment config, the algorithm config, the seed, the timesteps, the code's sha256,
  the package versions and the train / validation ranges.
- From the CLI (the engine's ``progress``), training shows a rich progress bar on a
  terminal, and plain periodic lines on stderr otherwise (:mod:`backtest.progress`).
- Each model's manifest holds its training and validation curves (see
  :mod:`strategies.drl_train`); :meth:`DRLPolicy.run_report` hands them to the engine,
  which writes them to ``summary.json`` and the report draws them. ``tensorboard_log``
  also has stable-baselines3 write TensorBoard logs.
- The engine's walk-forward gap reaches training through :meth:`DRLPolicy.train_until`:
  a fold's agent trains (and validates) on the fold's train block only.

stable-baselines3 seeds Python's, numpy's and torch's global generators inside ``learn``;
the project's own code never reads them, and training is seeded from the run's
``SeedSequence`` child, so results repeat.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from backtest.config import EnvConfig
from backtest.data import BarMeta, Bars
from backtest.errors import ConfigError
from strategies.base import Decision, MarketView, Observation
from strategies.drl_train import (
    ALGORITHMS,
    VEC_ENVS,
    TrainedAgent,
    _algorithm,
    _train,
    _training_key,
    _vec_env_kind,
)
from strategies.drl_train import _data_sha256 as _data_sha256  # re-exported for tests

__all__ = ["ALGORITHMS", "VEC_ENVS", "DRLPolicy", "TrainedAgent", "train_agent"]


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
    tensorboard_log: str | None = None,
) -> TrainedAgent:
    """Train (or load from the cache) an agent on ``bars``.

    The last ``validation_fraction`` of the bars is the validation split the evaluation
    callback scores; the rest is the train split the agent learns on and the observation
    statistics are fitted on.

    Args:
        n_envs: Training envs stepped together (random episode starts of their own).
        vec_env: ``batched`` (:class:`~backtest.vecenv.TradingVecEnv`) or ``dummy``
            (``DummyVecEnv``); None: ``dummy`` for one env, ``batched`` for more.
        progress: A started ``rich.progress.Progress`` (or a
            :class:`backtest.progress.LineProgress`) to show training in (None: quiet).
        label: The progress task's description.
        tensorboard_log: A directory stable-baselines3 writes TensorBoard logs to (None:
            none). Not part of the cache key: a model loaded from the cache writes none.

    Raises:
        ConfigError: Too few bars, or a bad algorithm or setting.
    """
    import torch

    if not 0.0 < validation_fraction < 0.9:
        raise ConfigError("drl.validation_fraction must be in (0, 0.9). Fix: e.g. 0.2.")
    cls = _algorithm(algo)
    if tensorboard_log is not None and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(
            "drl.tensorboard_log is set but the tensorboard package is not installed. "
            "Fix: pip install tensorboard, or remove drl.tensorboard_log."
        )
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
        _train(cls, bars, env_config, settings, folder, key, progress, label, tensorboard_log)
    manifest = json.loads((folder / "manifest.json").read_text())
    stats = np.load(folder / "normalisation.npz")
    model = cls.load(folder / "best_model.zip", device="cpu")
    return TrainedAgent(model, stats["mean"], stats["var"], manifest, folder)


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
        tensorboard_log: Directory for stable-baselines3's TensorBoard logs (None: none;
            needs the ``tensorboard`` package).
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
        tensorboard_log: str | None = None,
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
        self.tensorboard_log = tensorboard_log
        self._train_stop: int | None = None

    def train_until(self, stop: int) -> None:
        """Train on the market view's bars before ``stop`` only (the engine's walk-forward
        gap: a fold's agent trains on its train block, not on the gap after it)."""
        if stop < 1:
            raise ValueError(f"train_until: stop must be >= 1, got {stop}")
        self._train_stop = int(stop)

    def run_report(self) -> dict[str, Any]:
        """The trained agent's record (the engine writes it into ``summary.json``).

        ``training``: the model's cache folder, seed, timesteps, train and validation bar
        ranges and dates, the best validation reward, and the ``train_curve`` and
        ``validation_curve`` of its manifest (None for a model cached before they were
        recorded). Empty before the agent is trained.
        """
        if self.agent is None:
            return {}
        m = self.agent.manifest
        keys = (
            "seed",
            "timesteps",
            "train_bars",
            "validation_bars",
            "first_train_bar",
            "last_train_bar",
            "last_validation_bar",
            "best_validation_reward",
            "train_curve",
            "validation_curve",
        )
        return {"training": {"model": self.agent.path.name, **{k: m.get(k) for k in keys}}}

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
        if self._train_stop is not None:
            frame = frame.iloc[: self._train_stop]
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
            tensorboard_log=self.tensorboard_log,
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
