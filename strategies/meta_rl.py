"""Meta-RL orchestrator: an SB3 policy that learns how to use the DRL agent and the LLMs.

The seed's "Meta-RL learns optimal weighting". :class:`MetaRLPolicy` holds a DRL agent
(:class:`~strategies.drl.DRLPolicy`) and the LLM graph (:class:`~strategies.llm.graph.LLMPolicy`)
and, at its first decision, trains a second stable-baselines3 policy (PPO or A2C) whose
observation is the trading env's own (feature window, exposure, unrealised P&L) followed by
``[drl_signal, drl_confidence, llm_signal, llm_confidence, consulted]``, and whose action is
a pair: the target exposure (an index into ``env.positions``) and whether to consult the
LLMs at the next bar. The reward is the log change of equity net of trading costs **and of
the LLM dollars of every consulted bar**, so the policy learns when the LLMs are worth
their price; an unconsulted bar costs nothing and shows the LLM signal as 0 with
``consulted = 0``.

Training data, all before the first decision (no look-ahead by construction):

- The DRL agent is trained first (on the bars up to the first decision, cached as in
  :mod:`strategies.drl`); the meta policy then learns on that agent's **validation split**,
  where the agent's signals are out of sample, as they will be when trading.
- The signals on that split are what each side decides trading alone on it (its own
  account), computed once. The LLM side's training answers come from the offline analyst
  (``training_llm = "offline"``, the default) or from the cassette (``"replay"``; a missing
  recording is an error that says how to record it), never from a live call, so training
  never pays for an answer twice. The offline analyst costs $0; ``training_llm_cost_usd``
  sets the dollars a consulted bar is charged in training (e.g. the mean cost per decision
  of a recorded run), else the answers' own ``cost_usd`` is charged.
- Observations are normalised with statistics fitted on the training episodes only, saved
  with the model and frozen when trading; trading acts with ``deterministic=True``.
- The trained policy is cached under ``cache_dir`` keyed by the DRL model's key, the
  training signals, the environment, the settings and the package versions.

Only discrete action spaces are supported (the action is an index into ``env.positions``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from backtest.config import EnvConfig
from backtest.data import BarMeta, Bars
from backtest.env import TradingEnv
from backtest.errors import ConfigError
from strategies.base import AgentSignal, Decision, MarketView, Observation
from strategies.drl import DRLPolicy
from strategies.drl_train import _CLIP, _EPSILON, _versions
from strategies.llm.graph import LLMPolicy

__all__ = ["MetaEnv", "MetaRLPolicy", "SideSignals", "meta_observation", "side_signals"]

_ALGORITHMS = ("PPO", "A2C")
_EXTRA = 5  # drl signal, drl confidence, llm signal, llm confidence, consulted


class SideSignals:
    """One side's decisions over bars ``[start, stop)`` of a history, trading alone.

    Attributes:
        start: First bar.
        target: Signed target per bar (0 for HOLD or abstain).
        confidence: Confidence per bar (0 for an abstain).
        cost_usd: LLM dollars per bar.
    """

    def __init__(self, start: int, n: int) -> None:
        self.start = start
        self.target = np.zeros(n)
        self.confidence = np.zeros(n)
        self.cost_usd = np.zeros(n)

    def digest(self) -> str:
        """sha256 of the three arrays (part of the meta policy's cache key)."""
        h = hashlib.sha256(np.int64(self.start).tobytes())
        for values in (self.target, self.confidence, self.cost_usd):
            h.update(np.ascontiguousarray(values).tobytes())
        return h.hexdigest()


def side_signals(
    policy: Any, bars: Bars, env_config: EnvConfig, market: MarketView, start: int, stop: int
) -> SideSignals:
    """Replay ``policy`` on its own account over bars ``[start, stop)`` of ``bars``.

    ``market`` is the run's view; it is moved back to each earlier bar ``t < stop`` while
    the policy decides there (it never shows a bar after ``t``) and restored afterwards.
    """
    env = TradingEnv(bars, env_config, start=start, end=stop)
    env.reset(seed=0)
    first = env.t
    out = SideSignals(first, stop - first)
    here = market.t
    try:
        for t in range(first, stop):
            market._seek(t)
            features = env.observation_for(t, env.exposure, env.unrealised())
            decision = policy.act(Observation(t, features, env.exposure, env.equity, market))
            k = t - first
            target = decision.target_position
            if not decision.abstain:
                out.target[k] = 0.0 if target is None else float(target)
                out.confidence[k] = float(decision.confidence)
            out.cost_usd[k] = math.fsum(
                float(getattr(c, "cost_usd", 0.0)) for c in decision.llm_calls
            )
            if out.cost_usd[k]:
                env.charge(out.cost_usd[k])
            if t + 1 < stop and env.advance(None if decision.abstain else target):
                break
    finally:
        market._seek(here)
    return out


class MetaEnv(gym.Env[np.ndarray, Any]):
    """The meta policy's training env: a :class:`TradingEnv` plus both sides' signals.

    Args:
        bars: The history.
        config: The trading env's config (``episode_bars`` gives random-start episodes).
        drl: The DRL side's signals.
        llm: The LLM side's signals, over the same bars.
        cost_per_consult_usd: Dollars a consulted bar costs; None charges ``llm.cost_usd``.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's own class attribute

    def __init__(
        self,
        bars: Bars,
        config: EnvConfig,
        drl: SideSignals,
        llm: SideSignals,
        *,
        cost_per_consult_usd: float | None = None,
    ) -> None:
        super().__init__()
        self.inner = TradingEnv(bars, config, start=drl.start, end=drl.start + drl.target.size)
        if drl.start != llm.start or drl.target.size != llm.target.size:
            raise ConfigError("meta_rl: the DRL and LLM signals cover different bars")
        self.drl, self.llm = drl, llm
        self.cost = llm.cost_usd if cost_per_consult_usd is None else None
        self.cost_per_consult = cost_per_consult_usd
        inner_space = self.inner.observation_space
        assert isinstance(inner_space, spaces.Box)
        dim = inner_space.shape[0] + _EXTRA
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)
        self.n_positions = len(config.positions)
        self.action_space = spaces.MultiDiscrete([self.n_positions, 2])
        self._positions = [float(p) for p in config.positions]
        self._consult = True

    def _obs(self, inner: np.ndarray) -> np.ndarray:
        k = self.inner.t - self.drl.start
        return meta_observation(
            inner,
            self.drl.target[k],
            self.drl.confidence[k],
            self.llm.target[k],
            self.llm.confidence[k],
            self._consult,
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode (a random window when ``episode_bars`` is set)."""
        super().reset(seed=seed)
        inner, info = self.inner.reset(seed=seed)
        self._consult = True
        return self._obs(inner), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Trade the chosen target; charge the next bar's LLM cost if it is consulted."""
        choice = np.asarray(action).reshape(-1)
        target = self._positions[int(choice[0])]
        consult = bool(choice[1])
        inner, reward, ruined, truncated, info = self.inner.step_target(target)
        self._consult = consult
        if consult and not ruined:
            k = self.inner.t - self.drl.start
            cost = self.cost_per_consult if self.cost is None else float(self.cost[k])
            equity = self.inner.equity
            if cost and equity > 0:
                self.inner.charge(cost)
                reward += math.log(max(equity - cost, _EPSILON * equity) / equity)
        return self._obs(inner), float(reward), ruined, truncated, info


def meta_observation(
    inner: np.ndarray,
    drl_target: float,
    drl_confidence: float,
    llm_target: float,
    llm_confidence: float,
    consulted: bool,
) -> np.ndarray:
    """The env's observation followed by the two sides' signals and the consult flag."""
    on = 1.0 if consulted else 0.0
    extra = np.array(
        [drl_target, drl_confidence, llm_target * on, llm_confidence * on, on], dtype=np.float32
    )
    return np.concatenate([np.asarray(inner, dtype=np.float32), extra])


class MetaRLPolicy:
    """Trade with a learned orchestrator over a DRL agent and the LLM graph.

    Args:
        name: Label in the ledger.
        drl: Keyword arguments for :class:`~strategies.drl.DRLPolicy`.
        llm: Keyword arguments for :class:`~strategies.llm.graph.LLMPolicy` (trading).
        algo: ``PPO`` or ``A2C`` for the meta policy.
        timesteps: Meta training steps.
        episode_bars: Length of a meta training episode (random starts).
        hyperparameters: Keyword arguments for the meta algorithm.
        training_llm: Where training answers come from: ``offline`` or ``replay``.
        training_llm_cost_usd: Dollars per consulted bar in training (None: the answers').
        cache_dir: Where trained meta policies are cached.
        torch_threads: ``torch.set_num_threads`` while training and acting.
        seed: Training seed; None uses the seed the engine hands to ``reset``.
    """

    def __init__(
        self,
        name: str = "meta_rl",
        *,
        drl: dict[str, Any] | None = None,
        llm: dict[str, Any] | None = None,
        algo: str = "PPO",
        timesteps: int = 20_000,
        episode_bars: int = 126,
        hyperparameters: dict[str, Any] | None = None,
        training_llm: Literal["offline", "replay"] = "offline",
        training_llm_cost_usd: float | None = None,
        cache_dir: str = "models",
        torch_threads: int = 1,
        seed: int | None = None,
    ) -> None:
        if algo not in _ALGORITHMS:
            raise ConfigError(
                f"meta_rl.algo: {algo!r} is not supported (the action is a pair, which "
                f"DQN cannot take). Fix: use one of {', '.join(_ALGORITHMS)}."
            )
        if training_llm not in ("offline", "replay"):
            raise ValueError(f"training_llm must be 'offline' or 'replay', got {training_llm!r}")
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        if training_llm_cost_usd is not None and training_llm_cost_usd < 0:
            raise ValueError("training_llm_cost_usd must be >= 0")
        self.name = name
        self.drl = DRLPolicy(f"{name}.drl", **(drl or {}))
        llm_params = dict(llm or {})
        self.llm = LLMPolicy(f"{name}.llm", **llm_params)
        self.training_llm = LLMPolicy(
            f"{name}.llm.training", **{**llm_params, "mode": training_llm}
        )
        self.settings: dict[str, Any] = {
            "algo": algo,
            "timesteps": int(timesteps),
            "episode_bars": int(episode_bars),
            "hyperparameters": hyperparameters or {},
            "training_llm": training_llm,
            "training_llm_cost_usd": training_llm_cost_usd,
        }
        self.cache_dir = cache_dir
        self.torch_threads = torch_threads
        self.seed = seed
        self.env_config = EnvConfig()
        self.model: Any = None
        self.obs_mean: np.ndarray | None = None
        self.obs_scale: np.ndarray | None = None
        self.manifest: dict[str, Any] = {}
        self._market: MarketView | None = None
        self._run_seed: int | None = None
        self._consult = True
        self._progress: Any = None

    def bind(self, env_config: EnvConfig) -> None:
        """Use the run's environment for training and acting."""
        if env_config.action_space != "discrete":
            raise ConfigError(
                "meta_rl needs env.action_space = 'discrete' (its action is an index into "
                "env.positions). Fix: set env.action_space = 'discrete'."
            )
        self.env_config = env_config
        self.drl.bind(env_config)

    def close(self) -> None:
        """Close the LLM side's cassette (the engine calls this when the run ends)."""
        self.llm.close()

    def show_progress(self, progress: Any) -> None:
        """Show the DRL side's training in ``progress``."""
        self._progress = progress
        self.drl.show_progress(progress)

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        """Reset both sides; training waits for the first decision."""
        self._market = market
        self._run_seed = seed
        self.drl.reset(seed=seed, market=market)
        self.llm.reset(seed=seed, market=market)
        self.model = None
        self._consult = True

    # ----------------------------------------------------------------------- training

    def _fit(self, obs: Observation) -> None:
        import torch

        torch.set_num_threads(self.torch_threads)
        market = obs.market
        self.drl.act(obs)  # trains (or loads) the DRL agent on the bars up to now
        agent = self.drl.agent
        assert agent is not None
        frame = market.frame()
        bars = Bars(frame=frame, meta=BarMeta(symbol=market.symbol, frequency=market.frequency))
        split, stop = agent.manifest["validation_bars"]
        seed = int(self.seed if self.seed is not None else (self._run_seed or 0)) % (2**31)
        self.training_llm.reset(seed=seed, market=market)
        signal_cfg = self.env_config.model_copy(update={"episode_bars": None})
        drl_signals = side_signals(self.drl, bars, signal_cfg, market, split, stop)
        llm_signals = side_signals(self.training_llm, bars, signal_cfg, market, split, stop)
        episode = min(self.settings["episode_bars"], drl_signals.target.size - 1)
        if episode < 2:
            raise ConfigError(
                f"meta_rl: the DRL agent's validation split has {drl_signals.target.size} "
                "bar(s) to learn from. Fix: raise drl.validation_fraction or start the "
                "evaluated split later."
            )
        key_source = {
            "drl": agent.manifest["key"],
            "drl_signals": drl_signals.digest(),
            "llm_signals": llm_signals.digest(),
            "env": self.env_config.model_dump(mode="json"),
            "settings": self.settings,
            "episode_bars": episode,
            "seed": seed,
            "versions": _versions(),
        }
        key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()
        folder = Path(self.cache_dir) / f"meta-{key[:20]}"
        if not (folder / "manifest.json").exists():
            self._train(bars, drl_signals, llm_signals, episode, seed, folder, key_source, key)
        self._load(folder)

    def _train(
        self,
        bars: Bars,
        drl: SideSignals,
        llm: SideSignals,
        episode: int,
        seed: int,
        folder: Path,
        key_source: dict[str, Any],
        key: str,
    ) -> None:
        import stable_baselines3 as sb3
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

        cfg = self.env_config.model_copy(update={"episode_bars": episode})
        cost = self.settings["training_llm_cost_usd"]
        env = VecNormalize(
            DummyVecEnv([lambda: Monitor(MetaEnv(bars, cfg, drl, llm, cost_per_consult_usd=cost))]),
            norm_obs=True,
            norm_reward=False,
            clip_obs=_CLIP,
        )
        env.seed(seed)
        cls = getattr(sb3, self.settings["algo"])
        model = cls(
            "MlpPolicy", env, seed=seed, device="cpu", verbose=0, **self.settings["hyperparameters"]
        )
        task = None
        if self._progress is not None:
            task = self._progress.add_task(f"train {self.name} (meta {cls.__name__})", total=1)
        model.learn(total_timesteps=self.settings["timesteps"])
        if task is not None:
            self._progress.update(task, completed=1)
        staging = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        model.save(staging / "model.zip")
        rms: Any = env.obs_rms
        np.savez(staging / "normalisation.npz", mean=rms.mean, var=rms.var)
        manifest = {
            "key": key,
            **key_source,
            "train_bars": [drl.start, drl.start + drl.target.size],
            "llm_training_cost_usd": float(llm.cost_usd.sum()),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if folder.exists():
            shutil.rmtree(staging)
            return
        staging.rename(folder)

    def _load(self, folder: Path) -> None:
        import stable_baselines3 as sb3

        cls = getattr(sb3, self.settings["algo"])
        self.model = cls.load(folder / "model.zip", device="cpu")
        stats = np.load(folder / "normalisation.npz")
        self.obs_mean = stats["mean"].astype(np.float32)
        self.obs_scale = (1.0 / np.sqrt(stats["var"] + _EPSILON)).astype(np.float32)
        self.manifest = json.loads((folder / "manifest.json").read_text())

    # ------------------------------------------------------------------------ trading

    def act(self, obs: Observation) -> Decision:
        """Train on first use; then ask the DRL side, the LLMs if consulted, and the policy."""
        import torch

        if self.model is None:
            self._fit(obs)
        drl = self.drl.act(obs)
        consulted = self._consult
        llm = self.llm.act(obs) if consulted else None
        use_llm = llm is not None and not llm.abstain
        llm_target = float(llm.target_position or 0.0) if use_llm and llm else 0.0
        llm_conf = float(llm.confidence) if use_llm and llm else 0.0
        x = meta_observation(
            obs.features,
            float(drl.target_position or 0.0),
            float(drl.confidence),
            llm_target,
            llm_conf,
            consulted,
        )
        assert self.obs_mean is not None and self.obs_scale is not None
        x = np.clip((x - self.obs_mean) * self.obs_scale, -_CLIP, _CLIP)
        with torch.no_grad():
            tensor, _ = self.model.policy.obs_to_tensor(x)
            dist = self.model.policy.get_distribution(tensor).distribution
            probs = [d.probs[0].cpu().numpy() for d in dist]
        position, consult_next = (int(np.argmax(p)) for p in probs)
        self._consult = bool(consult_next)
        target = float(self.env_config.positions[position])
        label = "BUY" if target > 0 else "SELL" if target < 0 else "CLOSE"
        signals = [
            AgentSignal(
                agent_name="drl",
                signal=float(np.sign(drl.target_position or 0.0)),
                confidence=drl.confidence,
                reasoning=drl.reasoning,
            )
        ]
        if llm is not None:
            signals.append(
                AgentSignal(
                    agent_name="llm",
                    signal=float(np.sign(llm_target)),
                    confidence=llm.confidence,
                    reasoning=llm.reasoning[:500],
                    abstain=llm.abstain,
                )
            )
            signals.extend(llm.signals)
        asked = "consulted" if consulted else "not consulted (saving its cost)"
        return Decision(
            target_position=target,
            confidence=float(probs[0][position]),
            action=label,
            signals=tuple(signals),
            llm_calls=llm.llm_calls if llm is not None else (),
            reasoning=f"meta-RL: LLM {asked}; next bar {'consult' if consult_next else 'skip'}"
            f" the LLM; DRL {drl.action}",
        )
