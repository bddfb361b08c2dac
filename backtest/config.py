"""Frozen, keyword-only configuration that rejects unknown keys.

The models here describe one run: the data, the splits, the environment (costs,
financing, action space, reward), the risk limits applied after every decision, the
strategies and the seed. The canonical JSON of a :class:`RunConfig`, hashed together
with the data's sha256, is the run id.

Strategies are found through :data:`STRATEGY_KINDS`, a registry of import paths, so the
engine never imports ``strategies`` by name; ``kind`` may also be a ``module:Class`` path
to a user's own policy, or a ``path/file.py:Class`` file (:mod:`backtest.strategy_loader`).

This module is the face of two: the models and their hashing (:mod:`backtest.config_models`)
and the experiment-file reader with ``--set`` overrides and keyed errors
(:mod:`backtest.config_files`); every name imports from here.
"""

from __future__ import annotations

from backtest.config_files import (
    explain_validation_error,
    load_experiment,
    parse_override,
    read_toml,
)
from backtest.config_models import (
    DEFAULT_DRL_SEEDS,
    LLM_SIDE_KINDS,
    SEEDED_KINDS,
    STRATEGY_KINDS,
    DataConfig,
    EnvConfig,
    Frozen,
    RiskConfig,
    RunConfig,
    SplitsConfig,
    StrategyConfig,
    VerdictConfig,
    WalkForwardConfig,
    canonical_json,
    config_hash,
)

__all__ = [
    "DEFAULT_DRL_SEEDS",
    "LLM_SIDE_KINDS",
    "SEEDED_KINDS",
    "STRATEGY_KINDS",
    "DataConfig",
    "EnvConfig",
    "Frozen",
    "RiskConfig",
    "RunConfig",
    "SplitsConfig",
    "StrategyConfig",
    "VerdictConfig",
    "WalkForwardConfig",
    "canonical_json",
    "config_hash",
    "explain_validation_error",
    "load_experiment",
    "parse_override",
    "read_toml",
]
