"""The configuration models: frozen, keyword-only, unknown keys rejected.

The models here describe one run: the data, the splits, the environment (costs,
financing, action space, reward), the risk limits applied after every decision, the
strategies and the seed. The canonical JSON of a :class:`RunConfig`, hashed together
with the data's sha256, is the run id. :mod:`backtest.config` is the face that re-exports
them with the experiment-file reader (:mod:`backtest.config_files`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from backtest.errors import ConfigError

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
]

#: Kinds whose LLM parameters the experiment's ``[llm]`` table fills: ``None`` for the
#: ``llm`` kind's own parameters, else the name of the parameter holding its LLM side.
LLM_SIDE_KINDS: dict[str, str | None] = {"llm": None, "hybrid": "llm", "meta_rl": "llm"}

#: Built-in strategy kinds and the class each one names.
STRATEGY_KINDS: dict[str, str] = {
    "buy_and_hold": "strategies.baselines:BuyAndHold",
    "sma": "strategies.baselines:SMACrossover",
    "random": "strategies.baselines:RandomPolicy",
    "drl": "strategies.drl:DRLPolicy",
    "llm": "strategies.llm.graph:LLMPolicy",
    "hybrid": "strategies.hybrid:HybridPolicy",
    "meta_rl": "strategies.meta_rl:MetaRLPolicy",
}

#: Kinds that train a DRL agent: they run ``seeds`` times (default
#: :data:`DEFAULT_DRL_SEEDS`) and are reported as mean and spread across seeds.
SEEDED_KINDS: frozenset[str] = frozenset({"drl", "hybrid", "meta_rl"})
DEFAULT_DRL_SEEDS = 5


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
        turnover_penalty: Subtracted from each step's reward per unit of notional traded as a
            fraction of equity (the absolute change of exposure the fills made): a
            turnover control for training on top of the real costs, which the reward
            already pays. 0 (the default) leaves the reward the log change of equity.
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
    turnover_penalty: float = Field(0.0, ge=0)
    episode_bars: int | None = Field(None, ge=2)
    risk: RiskConfig = RiskConfig()

    @field_validator("positions")
    @classmethod
    def _positions_not_empty(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) < 2 or len(set(value)) != len(value):
            raise ValueError("needs at least two distinct target exposures, e.g. [-1, 0, 1]")
        return value


def _date_text(value: Any) -> Any:
    """A date written in a file or ``--set`` as the ISO text the engine reads.

    TOML reads an unquoted ``2013-01-01`` as a date: it is turned into text here, so quoting
    is optional. Text that pandas cannot read as a time is refused here, by key, instead of
    failing later with a traceback.
    """
    import datetime as _dt

    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if isinstance(value, str):
        import pandas as pd

        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(
                f"{value!r} is not a date ({exc}); write it as YYYY-MM-DD "
                "(or YYYY-MM-DDTHH:MM:SS for intraday bars)"
            ) from exc
        if stamp is pd.NaT:
            raise ValueError(f"{value!r} is not a date; write it as YYYY-MM-DD")
    return value


class DataConfig(Frozen):
    """Where the bars come from.

    Attributes:
        path: A bar Parquet file or a dataset directory; or a list of them, one per
            asset: every strategy and seed then runs on each, each asset in its own run
            directory, and the verdict pools them (see ``docs/verdict.md``).
        symbol: Symbol inside a directory.
        start: First bar to load (inclusive).
        end: Last bar to load (inclusive).
        max_gap: Longest allowed span of missing expected bars (pandas Timedelta string),
            or None to allow any.
    """

    path: str | tuple[str, ...]
    symbol: str | None = None
    start: str | None = None
    end: str | None = None
    max_gap: str | None = "7D"

    @field_validator("path", mode="before")
    @classmethod
    def _one_or_several(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("lists no data file; give one path, or a list of several")
            if len(value) == 1:
                return value[0]
            if len(set(value)) != len(value):
                raise ValueError(f"lists a data file twice: {sorted(value)}")
            return tuple(value)
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> Any:
        return _date_text(value)

    @field_validator("max_gap", mode="before")
    @classmethod
    def _timedelta(cls, value: Any) -> Any:
        if isinstance(value, str):
            import pandas as pd

            try:
                pd.Timedelta(value)
            except (ValueError, TypeError) as exc:
                raise ValueError(
                    f'{value!r} is not a time span ({exc}); write e.g. "7D", "36h" or "90min"'
                ) from exc
        return value

    @property
    def paths(self) -> tuple[str, ...]:
        """The data files, one per asset."""
        return (self.path,) if isinstance(self.path, str) else self.path

    @property
    def file(self) -> str:
        """The one data file of a single-asset run.

        Raises:
            ConfigError: The config lists several assets (run it with
                :func:`backtest.engine.run`, which runs them one by one).
        """
        if not isinstance(self.path, str):
            raise ConfigError(
                f"data.path lists {len(self.path)} assets where one was expected. Fix: run "
                "the experiment with backtest.engine.run, which runs each asset in turn."
            )
        return self.path


class WalkForwardConfig(Frozen):
    """Walk-forward folds (:func:`backtest.data.walk_forward_folds`), counted in bars.

    The test blocks are consecutive and end at the last bar; every strategy is rebuilt for
    each fold, so a DRL agent is refitted (and cached) on the bars before the fold's test
    block, and the test blocks' equity is stitched into one out-of-sample curve.

    Attributes:
        n_folds: Number of folds.
        test_size: Bars in each test block.
        train_size: Bars of history each fold's policies see before its test block
            (rolling window); None for all bars from the first (expanding window).
        gap: Bars between a train block and its test block. They are not traded, and a
            policy that trains does not train on them (its training history ends at the
            train block's end, see :mod:`backtest.engine.folds`); policies still read them
            as history for their feature window.
        carry_position: Start each fold with the account the previous fold ended with
            (position, cash, entry price; the previous fold's last decision is filled at
            the fold's first open) instead of flat with the previous fold's equity (the
            default: each fold's result is then independent of how the previous one ended).
    """

    n_folds: int = Field(ge=1)
    test_size: int = Field(ge=2)
    train_size: int | None = Field(None, ge=2)
    gap: int = Field(0, ge=0)
    carry_position: bool = False


class SplitsConfig(Frozen):
    """Train / validation / test by date; ``evaluate`` is the part the engine trades.

    With neither date set, the whole range is the test part. ``walk_forward`` replaces the
    dates with folds: the engine then trades every fold's test block.
    """

    train_end: str | None = None
    validation_end: str | None = None
    evaluate: Literal["train", "validation", "test"] = "test"
    walk_forward: WalkForwardConfig | None = None
    #: Trade only the last N bars of the evaluated part (a short, recent, cheap window:
    #: ``make quickstart`` sets 60 when real models would be called). Strategies that
    #: train still train on every bar before the first decision.
    last_bars: int | None = Field(None, ge=2)

    @field_validator("train_end", "validation_end", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> Any:
        return _date_text(value)

    @model_validator(mode="after")
    def _both_or_neither(self) -> SplitsConfig:
        if (self.train_end is None) != (self.validation_end is None):
            raise ValueError("set both train_end and validation_end, or neither")
        if self.walk_forward is not None and self.train_end is not None:
            raise ValueError(
                "walk_forward replaces train_end and validation_end; set one or the other"
            )
        if self.walk_forward is not None and self.last_bars is not None:
            raise ValueError("last_bars cannot shorten walk-forward folds; set one or the other")
        return self


class StrategyConfig(Frozen):
    """One strategy of a run.

    Attributes:
        name: Label in the ledger and report (unique within a run).
        kind: A key of :data:`STRATEGY_KINDS` or a ``module:Class`` import path.
        params: Keyword arguments for the strategy's constructor.
        seeds: Independent runs of the strategy, each with its own seed drawn from the
            run's ``SeedSequence`` by member index ``k``; with more than one, the strategy
            expands into members named ``<name>@<k>`` (k = 0 .. seeds-1). Defaults to
            :data:`DEFAULT_DRL_SEEDS` for the DRL-based kinds (:data:`SEEDED_KINDS`) and
            1 for the others. Member ``k`` of two strategies gets the same seed, so a DRL
            agent and a hybrid with the same DRL settings share one trained model per ``k``.
    """

    name: str
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)
    seeds: int = Field(1, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _default_seeds(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("seeds") is None:
            data = {**data}
            data["seeds"] = DEFAULT_DRL_SEEDS if data.get("kind") in SEEDED_KINDS else 1
        return data

    @model_validator(mode="after")
    def _one_seed_source(self) -> StrategyConfig:
        if "@" in self.name:
            raise ValueError(
                f"strategy name {self.name!r} contains '@', which marks seed members "
                "(<name>@<k>); choose another name"
            )
        if "~" in self.name:
            raise ValueError(
                f"strategy name {self.name!r} contains '~', which marks the controls the "
                "run adds (<name>~llm0, buy_and_hold~matched:<name>); choose another name"
            )
        if self.seeds > 1:
            fixed = _fixed_seed_keys(self.params, "params")
            if fixed:
                raise ValueError(
                    f"{', '.join(fixed)} fixes one training seed, but seeds = {self.seeds} "
                    "asks for that many independent ones; remove it (members are seeded "
                    "from the run's seed) or set seeds = 1"
                )
        return self


def _fixed_seed_keys(params: Any, where: str) -> list[str]:
    found: list[str] = []
    if isinstance(params, dict):
        for key, value in params.items():
            if key == "seed" and value is not None:
                found.append(f"{where}.seed")
            else:
                found.extend(_fixed_seed_keys(value, f"{where}.{key}"))
    return found


class VerdictConfig(Frozen):
    """How the verdict compares strategies (see ``docs/verdict.md``).

    Attributes:
        min_seeds: Below this many seeds (per asset) a comparison is labelled
            ``underpowered`` whatever its p-value.
        alpha: Significance level; intervals cover ``1 - alpha``.
        reps: Bootstrap replicates of each comparison.
    """

    min_seeds: int = Field(10, ge=2)
    alpha: float = Field(0.05, gt=0, lt=1)
    reps: int = Field(2000, ge=100)


class RunConfig(Frozen):
    """Everything one run depends on besides the data's bytes.

    ``risk_free_rate`` (for Sharpe, Sortino and alpha) is an annual rate, or the path of a
    CSV/Parquet file with ``timestamp`` and ``rate`` columns (annual rates), taken as of each
    bar (the last rate published at or before it).
    """

    name: str = "run"
    data: DataConfig
    splits: SplitsConfig = SplitsConfig()
    env: EnvConfig = EnvConfig()
    risk: RiskConfig = RiskConfig()
    strategies: tuple[StrategyConfig, ...]
    benchmark: str | None = "buy_and_hold"
    seed: int = Field(0, ge=0)
    output_dir: str = "runs"
    risk_free_rate: float | str = 0.0
    periods_per_year: float | None = Field(None, gt=0)
    #: Add the controls that isolate the LLM to every strategy that offers them (a hybrid:
    #: ``<name>~llm0``, ``<name>~random_llm``); ``false`` runs the strategies alone.
    controls: bool = True
    verdict: VerdictConfig = VerdictConfig()
    #: Defaults for the LLM side of every strategy that calls LLMs (see
    #: :data:`LLM_SIDE_KINDS`): any parameter of the ``llm`` kind (``routing``,
    #: ``base_url``, ``api_key_env``, ``cassette``, ``record_mode``, ``max_run_usd``,
    #: ``every_n_bars``...). A strategy's own parameters win. Merged when the config is
    #: read, so the resolved strategies (and the run id) carry the values.
    llm: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _llm_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("llm"):
            return data
        defaults = data["llm"]
        if not isinstance(defaults, dict):
            return data  # the field's own validation reports the type
        strategies = []
        for spec in data.get("strategies") or ():
            raw = spec.model_dump() if isinstance(spec, BaseModel) else spec
            if isinstance(raw, dict) and raw.get("kind") in LLM_SIDE_KINDS:
                params = dict(raw.get("params") or {})
                side = LLM_SIDE_KINDS[raw["kind"]]
                if side is None:
                    params = {**defaults, **params}
                else:
                    params[side] = {**defaults, **dict(params.get(side) or {})}
                raw = {**raw, "params": params}
            strategies.append(raw)
        return {**data, "strategies": strategies}

    @model_validator(mode="after")
    def _unique_names(self) -> RunConfig:
        if "risk" in self.env.model_fields_set and self.env.risk != RiskConfig():
            raise ValueError("put risk limits in the top-level [risk] table, not in [env.risk]")
        names = [s.name for s in self.strategies]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"strategy names must be unique; repeated: {', '.join(duplicated)}")
        if not names:
            raise ValueError("at least one strategy is needed")
        return self


Exclude = set[str] | dict[str, Any] | None


def canonical_json(model: BaseModel, *, exclude: Exclude = None) -> str:
    """The model as canonical JSON: sorted keys, no whitespace, every default spelled out."""
    return json.dumps(
        model.model_dump(mode="json", exclude=exclude), sort_keys=True, separators=(",", ":")
    )


def config_hash(model: BaseModel, *extra: str, exclude: Exclude = None) -> str:
    """sha256 of the canonical JSON plus any extra strings (such as data hashes)."""
    digest = hashlib.sha256(canonical_json(model, exclude=exclude).encode())
    for item in extra:
        digest.update(b"\0" + item.encode())
    return digest.hexdigest()
