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

Training data, all before the first decision (no look-ahead by construction), in three
disjoint slices of the history, oldest first (docs/splits.md draws them)::

    bar 0                                                        first decision t0
    |--- DRL train ---|--- DRL validation ---|------ meta ------|t0 --- test --->
                                             m = n - round(n * meta_fraction), n = t0 + 1

- The newest ``meta_fraction`` of the history is the **meta slice**; the DRL agent is
  trained and its checkpoint selected (validation) on the bars before it only (cached as
  in :mod:`strategies.drl`, its ``validation_fraction`` splitting those bars). The meta
  policy learns on the meta slice, which neither the agent's training, nor its checkpoint
  selection, nor the test touches: there the agent's signals are out of sample, as they
  will be when trading. (Before the slice existed the meta policy learnt on the agent's
  validation split, the bars its checkpoint had been picked on, where its signals look
  better than they will.) Too few bars in a slice is a ConfigError naming
  ``meta_fraction``.
- The signals on that slice are what each side decides trading alone on it (its own
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
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np

from backtest.config import EnvConfig
from backtest.data import BarMeta, Bars
from backtest.errors import ConfigError
from strategies.base import AgentSignal, Decision, MarketView, Observation
from strategies.drl import DRLPolicy
from strategies.drl_train import _CLIP, _EPSILON, _versions
from strategies.llm.graph import LLMPolicy
from strategies.meta_env import MetaEnv, SideSignals, meta_observation, side_signals

__all__ = ["MetaEnv", "MetaRLPolicy", "SideSignals", "meta_observation", "side_signals"]

_ALGORITHMS = ("PPO", "A2C")


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
        meta_fraction: Newest share of the history the meta policy learns on (the DRL
            agent trains and validates on the older part).
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
        meta_fraction: float = 0.2,
    ) -> None:
        if not 0.0 < meta_fraction < 0.9:
            raise ConfigError(
                f"meta_rl.meta_fraction must be in (0, 0.9), got {meta_fraction}. Fix: e.g. 0.2."
            )
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
            "meta_fraction": meta_fraction,
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
        self._train_stop: int | None = None

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

    def train_until(self, stop: int) -> None:
        """Learn (both the DRL agent and the meta policy) on the view's bars before ``stop``."""
        if stop < 1:
            raise ValueError(f"train_until: stop must be >= 1, got {stop}")
        self._train_stop = int(stop)

    def layout(self, n: int) -> dict[str, tuple[int, int]]:
        """The history's slices for ``n`` bars: ``drl`` (train + validation) and ``meta``.

        Raises:
            ConfigError: The meta slice would have fewer than 10 bars.
        """
        m = n - round(n * self.settings["meta_fraction"])
        if n - m < 10 or m < 1:
            raise ConfigError(
                f"meta_rl: the {n}-bar history leaves {n - m} bar(s) to the meta slice "
                f"(meta_fraction = {self.settings['meta_fraction']}); it needs at least 10. "
                "Fix: raise meta_rl.meta_fraction or start the evaluated split later."
            )
        return {"drl": (0, m), "meta": (m, n)}

    def run_report(self) -> dict[str, Any]:
        """The DRL agent's training record and the meta policy's slices (for summary.json)."""
        out = dict(self.drl.run_report())
        if self.manifest:
            out["meta"] = {k: self.manifest.get(k) for k in ("layout", "train_bars", "key")}
        return out

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
        frame = market.frame()
        if self._train_stop is not None:
            frame = frame.iloc[: self._train_stop]
        slices = self.layout(len(frame))
        split, stop = slices["meta"]
        self.drl.train_until(split)
        self.drl.act(obs)  # trains (or loads) the DRL agent on the bars before the slice
        agent = self.drl.agent
        assert agent is not None
        bars = Bars(frame=frame, meta=BarMeta(symbol=market.symbol, frequency=market.frequency))
        seed = int(self.seed if self.seed is not None else (self._run_seed or 0)) % (2**31)
        self.training_llm.reset(seed=seed, market=market)
        signal_cfg = self.env_config.model_copy(update={"episode_bars": None})
        drl_signals = side_signals(self.drl, bars, signal_cfg, market, split, stop)
        llm_signals = side_signals(self.training_llm, bars, signal_cfg, market, split, stop)
        episode = min(self.settings["episode_bars"], drl_signals.target.size - 1)
        if episode < 2:
            raise ConfigError(
                f"meta_rl: the meta slice has {drl_signals.target.size} bar(s) to learn "
                "from after the feature warm-up. Fix: raise meta_rl.meta_fraction or start "
                "the evaluated split later."
            )
        key_source = {
            "drl": agent.manifest["key"],
            "drl_signals": drl_signals.digest(),
            "llm_signals": llm_signals.digest(),
            "env": self.env_config.model_dump(mode="json"),
            "settings": self.settings,
            "episode_bars": episode,
            "seed": seed,
            # The history's disjoint slices, oldest first (bar indices, stop exclusive).
            "layout": {
                "drl_train": agent.manifest["train_bars"],
                "drl_validation": agent.manifest["validation_bars"],
                "meta": [split, stop],
            },
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
        try:
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
        except BaseException:  # Ctrl-C mid-write: no half-written model is left
            shutil.rmtree(staging, ignore_errors=True)
            raise

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
