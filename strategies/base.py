"""What a strategy author needs: the Policy protocol and the records it returns.

The types are defined in :mod:`backtest.policy` (so the engine can use them without
importing ``strategies``) and re-exported here; see that module for the action table.
"""

from __future__ import annotations

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
    "action_to_target",
]
