"""Frozen, keyword-only configuration that rejects unknown keys.

The models here describe one run: the data, the splits, the environment (costs,
financing, action space, reward), the risk limits applied after every decision, the
strategies and the seed. The canonical JSON of a :class:`RunConfig`, hashed together
with the data's sha256, is the run id.

Strategies are found through :data:`STRATEGY_KINDS`, a registry of import paths, so the
engine never imports ``strategies`` by name; ``kind`` may also be a ``module:Class`` path
to a user's own policy.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "STRATEGY_KINDS",
    "DataConfig",
    "EnvConfig",
    "Frozen",
    "RiskConfig",
    "RunConfig",
    "SplitsConfig",
    "StrategyConfig",
    "canonical_json",
    "config_hash",
]

#: Built-in strategy kinds and the class each one names.
STRATEGY_KINDS: dict[str, str] = {
    "buy_and_hold": "strategies.baselines:BuyAndHold",
    "sma": "strategies.baselines:SMACrossover",
    "random": "strategies.baselines:RandomPolicy",
}


class Frozen(BaseModel):
    """Base of every config model: immutable, keyword-only, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class RiskConfig(Frozen):
    """Limits applied after the policy decides; no policy (or LLM text) can exceed them.

    Attributes:
        max_leverage: Largest |target exposure|; also the continuous action bound.
        allow_short: When False, a negative target becomes flat.
        max_position_usd: Largest |target exposure| x equity, in dollars (None: no cap).
        max_trades_per_day: Fills allowed per UTC day; further changes are held (None: no cap).
    """

    max_leverage: float = Field(1.0, gt=0)
    allow_short: bool = True
    max_position_usd: float | None = Field(None, gt=0)
    max_trades_per_day: int | None = Field(None, ge=1)


class EnvConfig(Frozen):
    """The trading environment: observation, actions, costs, financing and reward.

    Attributes:
        window: Bars of features in each observation.
        initial_capital_usd: Starting cash.
        fee_bps: Commission on each fill's notional, in basis points.
        spread_bps: Quoted bid-ask spread; a fill pays half of it.
        slippage_bps: Further adverse price move on each fill.
        fixed_fee_usd: Fee charged once per fill.
        max_participation: Largest fraction of the fill bar's volume one fill may take
            (partial fills beyond it); None for no cap.
        stop_loss: Exit when price moves this fraction against the average entry price.
        take_profit: Exit when price moves this fraction in favour of it.
        borrow_rate: Yearly fee on the notional of a short position.
        margin_rate: Yearly interest on borrowed cash (negative cash balance).
        cash_rate: Yearly interest earned on idle (positive) cash.
        action_space: ``discrete`` (over ``positions``) or ``continuous`` (a target in
            [-max_leverage, max_leverage]).
        positions: Target exposures the discrete actions stand for.
        rebalance_band: Smallest change of exposure that trades (HOLD-like dead band that
            stops a drifting position from churning fees); going flat always trades.
        reward: ``log_return`` of equity net of all costs, or ``differential_sharpe``
            (Moody & Saffell, 1998).
        dsr_eta: Adaptation rate of the differential Sharpe ratio's moving moments.
        episode_bars: Bars per training episode with a random start drawn from the env's
            seeded generator; None runs the whole range from its first bar.
        risk: Limits applied after every decision.
    """

    window: int = Field(30, ge=1)
    initial_capital_usd: float = Field(100_000.0, gt=0)
    fee_bps: float = Field(1.0, ge=0)
    spread_bps: float = Field(1.0, ge=0)
    slippage_bps: float = Field(0.5, ge=0)
    fixed_fee_usd: float = Field(0.0, ge=0)
    max_participation: float | None = Field(None, gt=0, le=1)
    stop_loss: float | None = Field(None, gt=0, lt=1)
    take_profit: float | None = Field(None, gt=0)
    borrow_rate: float = Field(0.0, ge=0)
    margin_rate: float = Field(0.0, ge=0)
    cash_rate: float = 0.0
    action_space: Literal["discrete", "continuous"] = "discrete"
    positions: tuple[float, ...] = (-1.0, 0.0, 1.0)
    rebalance_band: float = Field(0.01, ge=0)
    reward: Literal["log_return", "differential_sharpe"] = "log_return"
    dsr_eta: float = Field(0.01, gt=0, lt=1)
    episode_bars: int | None = Field(None, ge=2)
    risk: RiskConfig = RiskConfig()

    @field_validator("positions")
    @classmethod
    def _positions_not_empty(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) < 2 or len(set(value)) != len(value):
            raise ValueError("needs at least two distinct target exposures, e.g. [-1, 0, 1]")
        return value


class DataConfig(Frozen):
    """Where the bars come from.

    Attributes:
        path: A bar Parquet file or a dataset directory.
        symbol: Symbol inside a directory.
        start: First bar to load (inclusive).
        end: Last bar to load (inclusive).
        max_gap: Longest allowed span of missing expected bars (pandas Timedelta string),
            or None to allow any.
    """

    path: str
    symbol: str | None = None
    start: str | None = None
    end: str | None = None
    max_gap: str | None = "7D"


class SplitsConfig(Frozen):
    """Train / validation / test by date; ``evaluate`` is the part the engine trades.

    With neither date set, the whole range is the test part.
    """

    train_end: str | None = None
    validation_end: str | None = None
    evaluate: Literal["train", "validation", "test"] = "test"

    @model_validator(mode="after")
    def _both_or_neither(self) -> SplitsConfig:
        if (self.train_end is None) != (self.validation_end is None):
            raise ValueError("set both train_end and validation_end, or neither")
        return self


class StrategyConfig(Frozen):
    """One strategy of a run.

    Attributes:
        name: Label in the ledger and report (unique within a run).
        kind: A key of :data:`STRATEGY_KINDS` or a ``module:Class`` import path.
        params: Keyword arguments for the strategy's constructor.
    """

    name: str
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)


class RunConfig(Frozen):
    """Everything one run depends on besides the data's bytes."""

    name: str = "run"
    data: DataConfig
    splits: SplitsConfig = SplitsConfig()
    env: EnvConfig = EnvConfig()
    strategies: tuple[StrategyConfig, ...]
    benchmark: str | None = "buy_and_hold"
    seed: int = Field(0, ge=0)
    output_dir: str = "runs"
    risk_free_rate: float = 0.0
    periods_per_year: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _unique_names(self) -> RunConfig:
        names = [s.name for s in self.strategies]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"strategy names must be unique; repeated: {', '.join(duplicated)}")
        if not names:
            raise ValueError("at least one strategy is needed")
        return self


def canonical_json(model: BaseModel, *, exclude: set[str] | None = None) -> str:
    """The model as canonical JSON: sorted keys, no whitespace, every default spelled out."""
    return json.dumps(
        model.model_dump(mode="json", exclude=exclude), sort_keys=True, separators=(",", ":")
    )


def config_hash(model: BaseModel, *extra: str, exclude: set[str] | None = None) -> str:
    """sha256 of the canonical JSON plus any extra strings (such as data hashes)."""
    digest = hashlib.sha256(canonical_json(model, exclude=exclude).encode())
    for item in extra:
        digest.update(b"\0" + item.encode())
    return digest.hexdigest()
