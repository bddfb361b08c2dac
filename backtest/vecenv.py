"""N copies of :class:`backtest.env.TradingEnv` stepped together: a native SB3 ``VecEnv``.

:class:`TradingVecEnv` is what ``DummyVecEnv([lambda: TradingEnv(...)] * n)`` computes, step
for step and bit for bit (same observations, rewards, dones, infos and terminal
observations for the same seeds and actions), without a Python call per env per step:

- The N envs' states are the rows of one ``(N, STATE_SIZE)`` matrix. A step maps the N
  actions to N targets with array operations and advances every row in **one** compiled
  call (:func:`backtest._env_nb.step_batch`), which runs the single env's own kernel on each
  row. The accounting therefore exists once, in :mod:`backtest._env_nb`, and the batch
  cannot drift from the env the engine trades with. (A re-implementation of the step as
  masked numpy operations across N would be a second copy of every fee, fill, stop and
  financing rule, and at N = 8 slower: dozens of numpy calls of ~1 us each, against one
  compiled call.)
- Each row still belongs to a real :class:`~backtest.env.TradingEnv` (``envs[i]``, whose
  state *is* that row), so ``get_attr("equity")``, ``env_method("snapshot")`` and the
  per-env random generators (``np_random``, seeded by ``reset(seed=...)``) mean exactly
  what they mean under ``DummyVecEnv``. Resets go through ``envs[i].reset()``: they are
  rare (once per episode) and draw the episode's start from that env's generator.
- SB3's conventions: ``step`` returns float32 rewards (``DummyVecEnv``'s buffer type),
  ``dones = terminated | truncated``, ``info["TimeLimit.truncated"]``, and an env whose
  episode ended is reset at once, its last observation kept in
  ``info["terminal_observation"]``. ``seed(s)`` seeds env *i* with ``s + i`` at the next
  ``reset()``; ``set_options`` likewise. ``render_mode`` is None.
- An ended episode's ``info["episode"]`` holds its return, length and time (``r``, ``l``,
  ``t``) exactly as SB3's ``Monitor`` around each env reports them (Python's ``sum`` of the
  float64 rewards, rounded to 6 places; ``VecMonitor`` would sum the float32 rewards), and with
  no wrapper the batch has the wrapper depth of ``DummyVecEnv``, which SB3's
  ``EvalCallback`` needs to hand ``VecNormalize`` statistics to an evaluation env built
  that way.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from backtest import _env_nb as nb
from backtest.config import EnvConfig
from backtest.data import Bars
from backtest.env import TradingEnv
from backtest.errors import ConfigError
from backtest.features import Features

__all__ = ["TradingVecEnv"]


class TradingVecEnv(VecEnv):
    """Step ``n_envs`` trading envs over the same bars at once (a stable-baselines3 VecEnv).

    Args:
        bars: Validated bars, shared by every env.
        config: The env config of every env (see :class:`~backtest.env.TradingEnv`).
        n_envs: How many envs.
        start: First bar a decision may be taken at, as for ``TradingEnv``.
        end: One past the last bar, as for ``TradingEnv``.
        features: Precomputed features of ``bars`` (computed once here when omitted).

    Attributes:
        envs: The N envs; ``envs[i]`` reads and writes row *i* of the batch's state.
    """

    def __init__(
        self,
        bars: Bars,
        config: EnvConfig | None = None,
        n_envs: int = 1,
        *,
        start: int | None = None,
        end: int | None = None,
        features: Features | None = None,
    ) -> None:
        if n_envs < 1:
            raise ConfigError(f"n_envs must be >= 1, got {n_envs}. Fix: e.g. n_envs=8.")
        first = TradingEnv(bars, config, start=start, end=end, features=features)
        self.envs: list[TradingEnv] = [first] + [
            TradingEnv(bars, first.config, start=start, end=end, features=first.features)
            for _ in range(n_envs - 1)
        ]
        states = np.empty((n_envs, nb.STATE_SIZE), dtype=np.float64)
        for i, env in enumerate(self.envs):
            states[i] = env._state
            env._bind_state(states[i])
        self._states = states
        self._kernel_args = (
            first._params,
            first._bars,
            first._feat_flat,
            first._n_feat,
            first._window,
        )
        self._obs_dim = first._obs_dim
        self._positions = np.asarray(first._positions, dtype=np.float64)
        self._actions: np.ndarray | None = None
        # Each env's rewards this episode (row i, the first lengths[i] slots): summed with
        # Python's sum() when the episode ends, as Monitor sums its list.
        self._episode_rewards = np.zeros((n_envs, first.end_bar - first.first_bar))
        self._episode_lengths = np.zeros(n_envs, dtype=np.int64)
        self._rows = np.arange(n_envs)
        self._t_start = time.time()
        super().__init__(n_envs, first.observation_space, first.action_space)

    # ----------------------------------------------------------------- VecEnv API

    def reset(self) -> VecEnvObs:
        """Reset every env (with the seeds and options set since the last reset)."""
        obs = np.empty((self.num_envs, self._obs_dim), dtype=np.float32)
        for i, env in enumerate(self.envs):
            options = {"options": self._options[i]} if self._options[i] else {}
            obs[i], self.reset_infos[i] = env.reset(seed=self._seeds[i], **options)
        self._reset_seeds()
        self._reset_options()
        self._episode_lengths[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions; :meth:`step_wait` applies them."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Advance every env one bar; reset those whose episode ended."""
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(actions) first")
        n = self.num_envs
        actions = np.asarray(self._actions)
        self._actions = None
        if actions.size != n:
            raise ValueError(
                f"expected one action per env ({n}), got an array of shape {actions.shape}"
            )
        obs = np.empty((n, self._obs_dim), dtype=np.float32)
        rewards = np.empty(n, dtype=np.float32)  # DummyVecEnv's reward type
        dones = np.empty(n, dtype=np.bool_)
        truncated = np.empty(n, dtype=np.bool_)
        states = self._states
        refused = nb.step_batch(
            states,
            *self._kernel_args,
            actions.reshape(n).astype(np.float64),
            self._positions,
            obs,
            rewards,
            dones,
            truncated,
        )
        if refused >= 0:
            raise self._refusal(refused, actions.reshape(n)[refused])
        lengths = self._episode_lengths
        try:
            self._episode_rewards[self._rows, lengths] = states[:, nb.REWARD]
        except IndexError:  # an env reset on its own (env_method) ran past a whole range
            self._episode_rewards = np.pad(self._episode_rewards, ((0, 0), (0, lengths.max())))
            self._episode_rewards[self._rows, lengths] = states[:, nb.REWARD]
        lengths += 1
        # The single env's info (same keys, same order), plus what DummyVecEnv adds.
        infos: list[dict[str, Any]] = [
            {
                "t": int(t),
                "equity": equity,
                "cash": cash,
                "position": units,
                "fill_price": fill_price,
                "fees": fees,
                "TimeLimit.truncated": cut,
            }
            for (t, cash, units, equity, fill_price, fees), cut in zip(
                states[:, : nb.FEES + 1].tolist(), truncated.tolist(), strict=True
            )
        ]
        if dones.any():
            for i in np.flatnonzero(dones).tolist():
                length = int(lengths[i])
                info = infos[i]
                cut = info.pop("TimeLimit.truncated")  # re-added after, in DummyVecEnv's order
                info["episode"] = {
                    "r": round(sum(self._episode_rewards[i, :length].tolist()), 6),
                    "l": length,
                    "t": round(time.time() - self._t_start, 6),
                }
                info["TimeLimit.truncated"] = cut
                info["terminal_observation"] = obs[i].copy()
                obs[i], self.reset_infos[i] = self.envs[i].reset()
                lengths[i] = 0
        return obs, rewards, dones, infos

    def _refusal(self, i: int, action: Any) -> Exception:
        """Why the kernel refused to step env ``i`` (no env moved)."""
        if self._states[i, nb.T] + 1.0 >= self._states[i, nb.STOP]:
            return RuntimeError(
                f"env {i} was stepped past its episode's end (stepped on its own through "
                "envs[i] or env_method?); call reset() first"
            )
        return ValueError(
            f"action {action!r} of env {i} is not in {self.action_space}; give one integer "
            f"in [0, {self._positions.size - 1}] per env"
        )

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No images: the envs do not render (``render_mode`` is None)."""
        warnings.warn(
            f"The render mode is {self.render_mode}, but this method assumes it is "
            "`rgb_array` to obtain images.",
            stacklevel=2,
        )
        return [None for _ in self.envs]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Return an attribute of each env (all, or those at ``indices``)."""
        return [env.get_wrapper_attr(attr_name) for env in self._target_envs(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of each env (all, or those at ``indices``)."""
        for env in self._target_envs(indices):
            setattr(env, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Call a method of each env (all, or those at ``indices``); return the results."""
        return [
            env.get_wrapper_attr(method_name)(*method_args, **method_kwargs)
            for env in self._target_envs(indices)
        ]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper[Any, Any, Any, Any]], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Whether each env is wrapped in ``wrapper_class`` (never: the envs are bare)."""
        from stable_baselines3.common.env_util import is_wrapped

        return [is_wrapped(env, wrapper_class) for env in self._target_envs(indices)]

    def _target_envs(self, indices: VecEnvIndices) -> list[TradingEnv]:
        return [self.envs[i] for i in self._get_indices(indices)]
