"""The meta-RL orchestrator's training env and the side signals it replays.

:class:`MetaEnv` is a :class:`~backtest.env.TradingEnv` whose observation is followed by
both sides' signals and a consult flag, and whose action is a pair (target, consult the
LLMs next bar); :func:`side_signals` replays one side on its own account over a slice of
the history. :mod:`strategies.meta_rl` trains on them.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from backtest.config import EnvConfig
from backtest.data import Bars
from backtest.env import TradingEnv
from backtest.errors import ConfigError
from strategies.base import MarketView, Observation
from strategies.drl_train import _EPSILON

__all__ = ["MetaEnv", "SideSignals", "meta_observation", "side_signals"]

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
