"""What a strategy author needs: a base class, the Policy protocol and the records it returns.

The types are defined in :mod:`backtest.policy` (so the engine can use them without
importing ``strategies``) and re-exported here; see that module for the action table.
:class:`Strategy` is an optional base class: any object with ``name``, ``reset`` and ``act``
is a policy. ``docs/strategies.md`` walks through writing one in a single file.
"""

from __future__ import annotations

import numpy as np

from backtest.policy import (
    ACTIONS,
    AgentSignal,
    Decision,
    MarketView,
    Observation,
    Policy,
    action_to_target,
)

__all__ = [
    "ACTIONS",
    "AgentSignal",
    "Decision",
    "MarketView",
    "Observation",
    "Policy",
    "Strategy",
    "action_to_target",
]


class Strategy:
    """Base class for a strategy of your own (optional; it saves the boilerplate).

    The contract, which the engine keeps for every strategy:

    1. **Construction.** ``cls(name, **params)``: ``name`` is the entry's ``name`` in the
       experiment, ``params`` its ``params`` table as keyword arguments. Declare your
       parameters as keyword-only arguments with defaults and call
       ``super().__init__(name)``. Raise ``ValueError`` for a bad value: the run stops
       before any bar with ``strategies[i].params`` and your message.
    2. **reset(*, seed, market).** Called once before the first decision of a run (of each
       walk-forward fold, and of each seed of a seeded strategy). ``seed`` is an int drawn
       from the run's seed (``numpy.random.SeedSequence``) or None; draw every random
       number from ``self.rng``, never from a global generator, so runs repeat.
       ``market`` is a :class:`~backtest.policy.MarketView` positioned before the first
       decision: the bars before it (history to warm up on) and nothing later.
    3. **act(obs) -> Decision.** Called at the close of every bar ``obs.t`` of the
       evaluated part, in order. ``obs.market`` shows bars (and news) up to and including
       ``obs.t`` only: look-ahead is impossible by construction. ``obs.position`` and
       ``obs.equity_usd`` are the account at that close; ``obs.features`` the DRL
       observation vector (built only if read). Return a :class:`Decision` whose
       ``target_position`` is the signed exposure wanted (1.0 fully long, -0.5 half short,
       0 flat) or ``None`` to hold; :meth:`target` and :meth:`hold` build them. The engine
       fills it at the next bar's open, after the risk limits.

    Optional hooks the engine looks for are listed on :class:`~backtest.policy.Policy`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.rng = np.random.default_rng(0)
        self.market: MarketView | None = None

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        """Remember the market view and seed :attr:`rng` (override to reset your own state,
        and call ``super().reset(seed=seed, market=market)``)."""
        self.rng = np.random.default_rng(seed)
        self.market = market

    def act(self, obs: Observation) -> Decision:
        """Decide at the close of bar ``obs.t`` (override this)."""
        raise NotImplementedError(f"{type(self).__name__} must define act(obs) -> Decision")

    @staticmethod
    def target(exposure: float, reasoning: str = "", confidence: float = 1.0) -> Decision:
        """A decision to hold ``exposure`` (fraction of equity, signed) from the next open."""
        action = "BUY" if exposure > 0 else "SELL" if exposure < 0 else "CLOSE"
        return Decision(
            target_position=float(exposure),
            action=action,
            reasoning=reasoning,
            confidence=confidence,
        )

    @staticmethod
    def hold(reasoning: str = "") -> Decision:
        """A decision to keep the position as it is (no order)."""
        return Decision(target_position=None, action="HOLD", reasoning=reasoning)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
