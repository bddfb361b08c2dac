"""The replay engine: several policies trade the same bars; one run directory records it all.

``run(config)`` loads and validates the bars, computes the features once, and for each
strategy steps a :class:`~backtest.env.TradingEnv` over the evaluated split: at the close
of every bar the policy sees an :class:`~backtest.policy.Observation` (bars up to that
close only) and returns a :class:`~backtest.policy.Decision`; the env applies the risk
limits and fills it at the next open. LLM cost a decision reports is taken out of cash
at the decision's bar, so equity is net of it.

A run directory ``<output_dir>/<run_id>/`` holds:

``manifest.json``      config, run id, data sha256, seed, package versions, git revision,
                       warnings, ``llm_cost_estimate`` and ``leakage`` (below)
``ledger.parquet``     one row per strategy per bar (state at the bar's close, the fill
                       at its open, the decision taken at its close)
``decisions.parquet``  one row per decision: action, target, confidence, reasoning, signals
``llm_calls.parquet``  one row per LLM call (empty for strategies without LLMs)
``summary.json``       metrics per strategy, against the benchmark, on the same dates, with
                       LLM counts: ``llm_calls``, ``llm_retries``, ``llm_fallbacks``,
                       ``llm_failed_calls``, ``abstains``;
                       ``seed_groups`` (mean and std of each metric across the members
                       ``<name>@<k>`` of a strategy run with several seeds);
                       ``comparisons`` (the first ``drl`` strategy against the first
                       ``hybrid``, see :mod:`backtest.compare`; empty without both);
                       ``folds`` (per-fold metrics, walk-forward runs only);
                       ``cutoff_split`` (below)

Two optional policy methods feed the LLM parts of the record (the engine imports no strategy):

- ``estimate_llm_cost(market, first_bar) -> {"calls": int, "usd": float}``, asked before
  any strategy runs, with the view positioned at the last evaluated bar; the totals go to
  ``manifest["llm_cost_estimate"] = {"calls", "usd", "per_strategy": {name: {"calls",
  "usd"}}}`` and to the ``on_estimate`` callback (the CLI prints them).
- ``models_used() -> list[str]``, asked after the run: the temporal-leakage guard looks up
  each model's training cutoff in every price table of ``backtest/llm/prices.toml`` (the
  latest published cutoff, else the latest release month, ``cutoff_upper_bound``). When
  the evaluated window starts before the end of a cutoff month, ``manifest["warnings"]``
  says so and ``manifest["leakage"]`` lists ``{"strategy", "model", "training_cutoff"
  (YYYY-MM), "window_start", "window_end" (ISO)}``; ``summary["cutoff_split"][strategy]``
  lists ``{"model", "cutoff", "before", "after"}`` with the metrics of the bars before the
  month after the cutoff and from it on (None for a side with fewer than 2 bars).

The run id is the sha256 of the canonical config (output directory excluded), the data's
sha256 and the sha256 of every other file the strategies read (routing files, prompt
templates, price table: :func:`run_inputs`, recorded in the manifest as ``inputs``), so the
same inputs always land in the same directory, and the ledgers are byte-identical.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backtest._env_nb import (
    CASH,
    ENTRY,
    EQUITY,
    EXIT_UNITS,
    EXPOSURE,
    FEES,
    FILL_UNITS,
    FINANCING,
    RISK_CODE,
    UNITS,
)
from backtest.calendars import bar_close_times
from backtest.compare import compare
from backtest.config import (
    SEEDED_KINDS,
    STRATEGY_KINDS,
    RunConfig,
    StrategyConfig,
    canonical_json,
    config_hash,
)
from backtest.data import (
    Bars,
    Fold,
    TextFeed,
    file_sha256,
    load_bars,
    load_text,
    split_by_date,
    walk_forward_folds,
)
from backtest.env import TradingEnv
from backtest.errors import CassetteError, ConfigError, PricingError
from backtest.features import Features, compute_features
from backtest.policy import Decision, MarketView, Observation, Policy

__all__ = [
    "DECISION_SCHEMA",
    "LEDGER_COLUMNS",
    "LEDGER_SCHEMA",
    "LLM_CALL_COLUMNS",
    "LLM_CALL_SCHEMA",
    "RunResult",
    "build_policy",
    "member_seed",
    "risk_free_rates",
    "run",
    "run_id_for",
    "run_inputs",
]

_TIMESTAMP = pa.timestamp("ns", tz="UTC")
#: Schema of ``ledger.parquet``, one row per strategy per bar.
LEDGER_SCHEMA = pa.schema(
    [
        ("strategy", pa.string()),
        ("timestamp", _TIMESTAMP),
        ("close", pa.float64()),
        ("target_position", pa.float64()),
        ("position_units", pa.float64()),
        ("exposure", pa.float64()),
        ("fill_units", pa.float64()),
        ("fill_price", pa.float64()),
        ("exit_units", pa.float64()),
        ("exit_price", pa.float64()),
        ("exit_reason", pa.string()),
        ("fees_usd", pa.float64()),
        ("financing_usd", pa.float64()),
        ("cash_usd", pa.float64()),
        ("equity_usd", pa.float64()),
        ("llm_cost_usd", pa.float64()),
        ("llm_calls", pa.int64()),
        ("abstain", pa.bool_()),
        ("risk_event", pa.string()),
    ]
)
#: Schema of ``decisions.parquet``, one row per decision.
DECISION_SCHEMA = pa.schema(
    [
        ("strategy", pa.string()),
        ("timestamp", _TIMESTAMP),
        ("action", pa.string()),
        ("target_position", pa.float64()),
        ("confidence", pa.float64()),
        ("abstain", pa.bool_()),
        ("reasoning", pa.string()),
        ("signals", pa.string()),
        ("llm_calls", pa.int64()),
    ]
)
#: Columns of ``ledger.parquet`` in order.
LEDGER_COLUMNS: tuple[str, ...] = tuple(LEDGER_SCHEMA.names)

#: Columns of ``llm_calls.parquet`` and their Arrow types.
LLM_CALL_COLUMNS: dict[str, pa.DataType] = {
    "strategy": pa.string(),
    "timestamp": pa.timestamp("ns", tz="UTC"),
    "role": pa.string(),
    "model_requested": pa.string(),
    "model_served": pa.string(),
    "provider": pa.string(),
    "prompt_tokens": pa.int64(),
    "cached_prompt_tokens": pa.int64(),
    "completion_tokens": pa.int64(),
    "cost_usd": pa.float64(),
    "spend_usd": pa.float64(),
    "cost_source": pa.string(),
    "cache": pa.string(),
    "fallback_from": pa.string(),
    "retries": pa.int64(),
    "error": pa.string(),
    "latency_ms": pa.float64(),
    "prompt_version": pa.string(),
}

_VERSIONED_PACKAGES = (
    "hybrid-backtest",
    "numpy",
    "pandas",
    "pyarrow",
    "gymnasium",
    "stable-baselines3",
    "torch",
    "openai",
    "exchange-calendars",
    "pydantic",
)


@dataclass(frozen=True)
class RunResult:
    """Everything a run produced, as objects (the same data as the run directory).

    The tables are held as Arrow tables (what the run directory stores); the pandas views
    ``ledger``, ``decisions`` and ``llm_calls`` are built on first access.

    Attributes:
        run_id: Hash of the config and the data.
        run_dir: Directory the artifacts were written to.
        tables: ``ledger``, ``decisions`` and ``llm_calls`` as Arrow tables.
        summary: Metrics per strategy (``summary["strategies"][name]``).
        manifest: What the run depended on.
    """

    run_id: str
    run_dir: Path
    tables: dict[str, pa.Table]
    summary: dict[str, Any]
    manifest: dict[str, Any]

    @functools.cached_property
    def ledger(self) -> pd.DataFrame:
        """One row per strategy per bar (columns :data:`LEDGER_COLUMNS`)."""
        return self.tables["ledger"].to_pandas()

    @functools.cached_property
    def decisions(self) -> pd.DataFrame:
        """One row per decision: action, target, confidence, abstain, reasoning, signals."""
        return self.tables["decisions"].to_pandas()

    @functools.cached_property
    def llm_calls(self) -> pd.DataFrame:
        """One row per LLM call (columns :data:`LLM_CALL_COLUMNS`)."""
        return self.tables["llm_calls"].to_pandas()

    def equity(self) -> pd.DataFrame:
        """Equity curves, one column per strategy."""
        return self.ledger.pivot(index="timestamp", columns="strategy", values="equity_usd")


# ---------------------------------------------------------------------------- policies


def build_policy(spec: StrategyConfig, index: int) -> Policy:
    """Instantiate a strategy from its registry entry or ``module:Class`` path.

    Raises:
        ConfigError: Unknown kind, import failure or bad parameters, naming the key.
    """
    import difflib

    target = STRATEGY_KINDS.get(spec.kind, spec.kind)
    key = f"strategies[{index}]"
    if ":" not in target:
        close = difflib.get_close_matches(spec.kind, STRATEGY_KINDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{key}.kind: unknown strategy kind {spec.kind!r}.{hint} Fix: use one "
            f"of {', '.join(STRATEGY_KINDS)} or a 'module:Class' path."
        )
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"{key}.kind: cannot import {target!r} ({exc}). Fix: check the "
            "module path and that the package is installed."
        ) from exc
    try:
        policy = cls(spec.name, **spec.params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{key}.params: {exc}. Fix: correct the parameters of strategy "
            f"{spec.name!r} ({target})."
        ) from exc
    except (ConfigError, PricingError, CassetteError) as exc:
        # Raised by the strategy's own set-up (a routing file, a price table, a cassette):
        # the message names the file; say which strategy's parameters led there.
        raise type(exc)(f"{key}.params (strategy {spec.name!r}): {exc}") from exc
    if not isinstance(policy, Policy):
        raise ConfigError(
            f"{key}.kind: {target} does not implement the Policy protocol "
            "(name, reset(seed=, market=), act(obs))."
        )
    return policy


#: Spawn key of the stream member seeds are drawn from: member ``k`` of every seeded
#: strategy gets the same seed, so paired members (``drl@k``, ``hybrid@k``) share it.
_MEMBER_STREAM = 0x5EED


def member_seed(run_seed: int, k: int) -> int:
    """The seed of member ``k`` of a seeded strategy (``<name>@<k>``) in a run."""
    sequence = np.random.SeedSequence(run_seed, spawn_key=(_MEMBER_STREAM, k))
    return int(sequence.generate_state(1)[0])


def _expand_seeds(
    specs: list[StrategyConfig], run_seed: int
) -> tuple[list[tuple[StrategyConfig, int, int]], dict[str, list[str]]]:
    """One entry per strategy to run: (config, index in the experiment, seed).

    A strategy of a DRL-based kind, or with ``seeds`` > 1, is seeded by member index;
    with ``seeds`` > 1 it becomes members ``<name>@<k>``. Other strategies keep the seed
    of their position in the experiment.
    """
    by_index = np.random.SeedSequence(run_seed).spawn(len(specs))
    out: list[tuple[StrategyConfig, int, int]] = []
    groups: dict[str, list[str]] = {}
    for i, spec in enumerate(specs):
        if spec.seeds == 1 and spec.kind not in SEEDED_KINDS:
            out.append((spec, i, int(by_index[i].generate_state(1)[0])))
        elif spec.seeds == 1:
            out.append((spec, i, member_seed(run_seed, 0)))
        else:
            names = [f"{spec.name}@{k}" for k in range(spec.seeds)]
            groups[spec.name] = names
            for k, name in enumerate(names):
                member = spec.model_copy(update={"name": name, "seeds": 1})
                out.append((member, i, member_seed(run_seed, k)))
    taken = [spec.name for spec, _, _ in out]
    clash = sorted({n for n in taken if taken.count(n) > 1})
    if clash:
        raise ConfigError(
            f"strategies: the seed members' names clash with other strategies: "
            f"{', '.join(clash)}. Fix: rename the strategy or change its seeds."
        )
    return out, groups


def _seed_groups(
    groups: dict[str, list[str]], stats: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Mean and spread (``ddof=1``) of every numeric metric across a group's members."""
    out: dict[str, dict[str, Any]] = {}
    for group, members in groups.items():
        keys = [k for k, v in stats[members[0]].items() if isinstance(v, int | float)]
        mean: dict[str, float | None] = {}
        std: dict[str, float | None] = {}
        for key in keys:
            values = np.array([stats[m].get(key) for m in members], dtype=np.float64)
            values = values[np.isfinite(values)]
            mean[key] = float(np.mean(values)) if values.size else None
            std[key] = float(np.std(values, ddof=1)) if values.size > 1 else None
        out[group] = {"members": list(members), "mean": mean, "std": std}
    return out


def _concat_tracks(parts: list[_Track]) -> _Track:
    """One track from consecutive finished ones (the folds of a walk-forward run)."""
    out = _Track(sum(p.n for p in parts))
    for name in ("target", "units", "exposure", "cash", "equity"):
        setattr(out, name, np.concatenate([getattr(p, name) for p in parts]))
    for name in (
        "fill_units",
        "fill_price",
        "exit_units",
        "exit_price",
        "fees",
        "financing",
        "llm_cost",
        "llm_calls",
        "abstain",
    ):
        setattr(out, name, np.concatenate([getattr(p, name) for p in parts]))
    out.exit_reason = [r for p in parts for r in p.exit_reason]
    out.risk_event = [r for p in parts for r in p.risk_event]
    out.decisions = [d for p in parts for d in p.decisions]
    return out


def _idle_track(n: int, equity: float) -> _Track:
    """A ruined account through a later fold: no decisions, its final equity throughout."""
    tr = _Track(n)
    tr.units, tr.exposure, tr.cash, tr.equity = [0.0], [0.0], [equity], [equity]
    tr.finish()
    tr.target = np.full(n, np.nan)  # type: ignore[assignment]
    tr.decisions = [Decision(target_position=None, abstain=True, reasoning="ruined")] * n
    return tr


def _walk_forward(
    folds: list[Fold],
    expanded: list[tuple[StrategyConfig, int, int]],
    bars: Bars,
    env_config: Any,
    view: MarketView,
    bar_progress: Any,
    warnings: list[str],
) -> dict[str, _Track]:
    """Rebuild and run every strategy on each fold; stitch the test blocks per strategy.

    Fold ``k``'s policies see the bars from its train block's start to its test block's
    end (up to the current bar only), so a DRL agent refits on the bars before the test
    block. Each strategy's fold starts with the equity its previous fold ended with (flat:
    a position open at a fold's end is valued at that close and not carried).
    """
    frame = bars.frame
    capital = {spec.name: env_config.initial_capital_usd for spec, _, _ in expanded}
    parts: dict[str, list[_Track]] = {spec.name: [] for spec, _, _ in expanded}
    for k, fold in enumerate(folds):
        lo = fold.train.start
        sub = Bars(frame=frame.iloc[lo : fold.test.stop], meta=bars.meta)
        sub_frame = sub.frame
        sub_features = compute_features(
            *(sub_frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume"))
        )
        sub_view = view.window(lo, fold.test.stop)
        for spec, index, seed in expanded:
            name = spec.name
            size = fold.test.stop - fold.test.start
            if capital[name] <= 0:
                parts[name].append(_idle_track(size, capital[name]))
                continue
            cfg = env_config.model_copy(update={"initial_capital_usd": capital[name]})
            env = TradingEnv(
                sub,
                cfg,
                start=fold.test.start - lo,
                end=fold.test.stop - lo,
                features=sub_features,
            )
            if env.first_bar != fold.test.start - lo:
                raise ConfigError(
                    f"splits.walk_forward: fold {k}'s train block ({fold.train.stop - lo} "
                    f"bars) is shorter than the feature warm-up and the {cfg.window}-bar "
                    "window. Fix: raise train_size, or use fewer folds."
                )
            policy = build_policy(spec, index)
            bind = getattr(policy, "bind", None)
            if callable(bind):
                bind(cfg)
            show = getattr(policy, "show_progress", None)
            if callable(show):
                show(bar_progress)
            task = None
            if bar_progress is not None:
                task = bar_progress.add_task(f"{name} fold {k}", total=size)
            track, ruined = _replay(policy, env, sub_view, seed, bar_progress, task)
            if ruined:
                warnings.append(
                    f"strategy {name!r} lost its whole equity in fold {k} and stopped trading"
                )
            capital[name] = float(track.equity[-1])
            parts[name].append(track)
    return {name: _concat_tracks(p) for name, p in parts.items()}


def _fold_summaries(
    folds: list[Fold],
    tracks: dict[str, _Track],
    timestamps: pd.DatetimeIndex,
    first_bar: int,
    ppy: float,
    risk_free: float | np.ndarray,
    benchmark: str | None,
) -> list[dict[str, Any]]:
    from backtest import metrics

    out = []
    for k, fold in enumerate(folds):
        a, b = fold.test.start - first_bar, fold.test.stop - first_bar
        rf = risk_free if np.ndim(risk_free) == 0 else np.asarray(risk_free)[a:b]
        entry: dict[str, Any] = {
            "fold": k,
            "train_start": timestamps[fold.train.start].isoformat(),
            "train_end": timestamps[fold.train.stop - 1].isoformat(),
            "test_start": timestamps[fold.test.start].isoformat(),
            "test_end": timestamps[fold.test.stop - 1].isoformat(),
            "strategies": {},
        }
        bench = tracks.get(benchmark) if benchmark else None
        for name, track in tracks.items():
            equity = track.equity[a:b]
            if not equity[0] > 0:
                continue
            stats = metrics.summarize(
                equity,
                periods_per_year=ppy,
                risk_free=rf,
                benchmark_equity=None
                if bench is None or name == benchmark or not bench.equity[a] > 0
                else bench.equity[a:b],
            )
            stats["llm_cost_usd"] = float(track.llm_cost[a:b].sum())
            entry["strategies"][name] = stats
        out.append(entry)
    return out


def _default_pairs(specs: tuple[StrategyConfig, ...]) -> list[tuple[str, str]]:
    """The first DRL strategy against the first hybrid, when there are both."""
    drl = next((s.name for s in specs if s.kind == "drl"), None)
    hybrid = next((s.name for s in specs if s.kind == "hybrid"), None)
    return [] if drl is None or hybrid is None else [(drl, hybrid)]


# ---------------------------------------------------------------------------- the loop


class _Track:
    """Per-bar records of one strategy.

    Dense values (position, cash, equity, target) are appended every bar; events (fills,
    exits, fees, financing, risk interventions, LLM calls, abstains) are rare and are
    written into arrays that start at their no-event values.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.target: list[float] = []
        self.units: list[float] = []
        self.exposure: list[float] = []
        self.cash: list[float] = []
        self.equity: list[float] = []
        self.fill_units = np.zeros(n)
        self.fill_price = np.full(n, np.nan)
        self.exit_units = np.zeros(n)
        self.exit_price = np.full(n, np.nan)
        self.fees = np.zeros(n)
        self.financing = np.zeros(n)
        self.llm_cost = np.zeros(n)
        self.llm_calls = np.zeros(n, dtype=np.int64)
        self.abstain = np.zeros(n, dtype=bool)
        self.exit_reason = [""] * n
        self.risk_event = [""] * n
        self.decisions: list[Decision] = []

    def event(self, k: int, env: TradingEnv) -> None:
        """Record what happened at bar ``k`` besides marking to market."""
        self.fill_units[k] = env.fill_units
        self.fill_price[k] = env.fill_price
        self.exit_units[k] = env.exit_units
        self.exit_price[k] = env.exit_price
        self.fees[k] = env.fees_usd
        self.financing[k] = env.financing_usd
        self.exit_reason[k] = env.exit_reason
        self.risk_event[k] = env.risk_event

    def finish(self) -> None:
        """Pad a ruined run with its final state, then turn the lists into arrays."""
        missing = self.n - len(self.equity)
        self.target.extend([math.nan] * missing)
        for name in ("units", "exposure", "cash", "equity"):
            values = getattr(self, name)
            values.extend([values[-1]] * missing)
            setattr(self, name, np.asarray(values, dtype=np.float64))
        self.target = np.asarray(self.target, dtype=np.float64)  # type: ignore[assignment]


def _call_cost(call: Any) -> float:
    value = call.get("cost_usd") if isinstance(call, Mapping) else getattr(call, "cost_usd", 0.0)
    return float(value or 0.0)


def _replay(
    policy: Policy,
    env: TradingEnv,
    view: MarketView,
    seed: int,
    progress: Any = None,
    task: Any = None,
) -> tuple[_Track, bool]:
    env.reset(seed=seed)
    # At reset a policy sees the bars before its first decision, nothing later.
    view._seek(env.t - 1)
    policy.reset(seed=seed, market=view)
    start, stop = env.t, env.end_bar
    tr = _Track(stop - start)
    # Bound methods, fetched once: this loop runs once per bar per strategy.
    act, advance, observe, seek = policy.act, env.advance, env.observation_for, view._seek
    rec_target, rec_units, rec_exposure = tr.target.append, tr.units.append, tr.exposure.append
    rec_cash, rec_equity, rec_decision = tr.cash.append, tr.equity.append, tr.decisions.append

    terminated = False
    step_every = max(1, (stop - start) // 100)
    snapshot = env._state.tolist  # the env's state vector is reused across steps
    closes = env.bars.frame["close"].tolist()
    t = start
    while True:
        # State at bar t's close (after the fill at its open, exits and financing).
        k = t - start
        s = snapshot()
        if s[FILL_UNITS] or s[EXIT_UNITS] or s[FEES] or s[FINANCING] or s[RISK_CODE]:
            tr.event(k, env)
        seek(t)
        units, equity, exposure = s[UNITS], s[EQUITY], s[EXPOSURE]
        unrealised = (
            units * (closes[t] - s[ENTRY]) / equity if units != 0.0 and equity > 0.0 else 0.0
        )
        decision = act(
            Observation(
                t,
                functools.partial(observe, t, exposure, unrealised),
                exposure,
                equity,
                view,
            )
        )
        rec_decision(decision)
        calls = decision.llm_calls
        if calls:
            cost = math.fsum(_call_cost(c) for c in calls)
            env.charge(cost)
            tr.llm_cost[k] = cost
            tr.llm_calls[k] = len(calls)
            s = snapshot()
        if decision.abstain:
            tr.abstain[k] = True
        target = decision.target_position
        rec_target(math.nan if target is None else target)
        rec_units(s[UNITS])
        rec_exposure(s[EXPOSURE])
        rec_cash(s[CASH])
        rec_equity(s[EQUITY])
        if t + 1 >= stop or terminated:
            break
        terminated = advance(target)
        t += 1
        if progress is not None and (t - start) % step_every == 0:
            progress.update(task, advance=step_every)
    if progress is not None:
        progress.update(task, completed=stop - start)
    close = getattr(policy, "close", None)
    if callable(close):  # release what the policy holds open (an LLM cassette's shard)
        close()
    tr.finish()
    return tr, terminated


# ------------------------------------------------------------------------- artifacts


def _data_hash(path: Path) -> str:
    if path.is_file():
        return file_sha256(path)
    items = [f"{p.relative_to(path)}:{file_sha256(p)}" for p in sorted(path.rglob("*.parquet"))]
    return hashlib.sha256("\n".join(items).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def _git_revision() -> str | None:
    """The commit of the source tree this package runs from, read from .git (no subprocess)."""
    for folder in Path(__file__).resolve().parents:
        git = folder / ".git"
        if not git.is_dir():
            continue
        try:
            head = (git / "HEAD").read_text().strip()
            if not head.startswith("ref: "):
                return head or None
            ref = head[5:]
            if (git / ref).is_file():
                return (git / ref).read_text().strip() or None
            packed = git / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split(" ", 1)[0]
        except OSError:
            return None
        return None
    return None


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _signals_json(decision: Decision) -> str:
    if not decision.signals:
        return ""
    return json.dumps(
        [
            {
                "agent": s.agent_name,
                "signal": s.signal,
                "confidence": s.confidence,
                "abstain": s.abstain,
                "features": dict(s.features),
                "reasoning": s.reasoning,
            }
            for s in decision.signals
        ],
        sort_keys=True,
        default=float,
    )


def _call_row(call: Any) -> dict[str, Any]:
    if hasattr(call, "to_row"):
        return dict(call.to_row())
    if dataclasses.is_dataclass(call):
        return dataclasses.asdict(call)  # type: ignore[arg-type]
    return dict(call)


# ------------------------------------------------------------------------------- run


def _strategy_class(spec: StrategyConfig) -> type | None:
    """The class a strategy entry names, or None when it cannot be imported (the run says why)."""
    target = STRATEGY_KINDS.get(spec.kind, spec.kind)
    module_name, sep, class_name = target.partition(":")
    if not sep:
        return None
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return None
    return cls if isinstance(cls, type) else None


def _named_files(value: Any, key: str) -> list[tuple[str, Path]]:
    """Every string inside ``value`` (nested tables and lists too) that names an existing file."""
    if isinstance(value, Mapping):
        return [hit for k, v in value.items() for hit in _named_files(v, f"{key}.{k}")]
    if isinstance(value, list | tuple):
        return [hit for i, v in enumerate(value) for hit in _named_files(v, f"{key}[{i}]")]
    if isinstance(value, str) and value:
        try:
            path = Path(value)
            if path.is_file():
                return [(key, path)]
        except (OSError, ValueError):  # not a path at all (too long, NUL byte)
            return []
    return []


def run_inputs(config: RunConfig) -> dict[str, str]:
    """The sha256 of every file a run reads besides its data, by what it is.

    A strategy class may say what it reads with a classmethod
    ``input_hashes(params) -> Mapping[str, str]`` (the LLM policy gives its routing file,
    prompt templates and price table); for any other strategy every parameter that names an
    existing file (a model, a routing file) is hashed. A ``risk_free_rate`` file is hashed
    too. These hashes enter the run id, so editing a routing file or a prompt gives a new run.

    Returns:
        ``{"strategies.<name>.<what>": sha256, "risk_free_rate": sha256}``, sorted by key.
    """
    inputs: dict[str, str] = {}
    for spec in config.strategies:
        cls = _strategy_class(spec)
        hook = getattr(cls, "input_hashes", None)
        if callable(hook):
            found = dict(hook(spec.params))
        else:
            found = {k: file_sha256(p) for k, p in _named_files(spec.params, "params")}
        inputs.update({f"strategies.{spec.name}.{k}": v for k, v in found.items()})
    rate = config.risk_free_rate
    if isinstance(rate, str) and Path(rate).is_file():
        inputs["risk_free_rate"] = file_sha256(rate)
    return dict(sorted(inputs.items()))


def run_id_for(
    config: RunConfig,
    data_sha256: str | None = None,
    inputs: Mapping[str, str] | None = None,
) -> str:
    """The run id: hash of the canonical config, the data's sha256 and the other inputs' hashes.

    The data enters by its hash, so where it lives (and where output goes) does not; the
    routing files, prompt templates and other files the strategies read enter by theirs
    (:func:`run_inputs`), so changing one's contents changes the id.

    Args:
        config: The run's configuration.
        data_sha256: The data's hash (computed when None).
        inputs: :func:`run_inputs` of ``config`` (computed when None).
    """
    sha = data_sha256 if data_sha256 is not None else _data_hash(Path(config.data.path))
    found = run_inputs(config) if inputs is None else inputs
    extra = [f"{k}={v}" for k, v in sorted(found.items())]
    return config_hash(config, sha, *extra, exclude={"output_dir": True, "data": {"path"}})[:16]


def _load_text_beside(path: Path, kind: str) -> TextFeed | None:
    folder = path if path.is_dir() else path.parent
    candidate = folder / f"{kind}.parquet"
    return load_text(candidate, kind=kind) if candidate.exists() else None


def _folds(config: RunConfig, bars: Bars) -> list[Fold] | None:
    wf = config.splits.walk_forward
    if wf is None:
        return None
    return walk_forward_folds(
        len(bars),
        n_folds=wf.n_folds,
        test_size=wf.test_size,
        train_size=wf.train_size,
        gap=wf.gap,
    )


def _evaluation_range(config: RunConfig, bars: Bars) -> tuple[int, int]:
    splits = config.splits
    folds = _folds(config, bars)
    if folds is not None:
        return folds[0].test.start, folds[-1].test.stop
    if splits.train_end is None or splits.validation_end is None:
        start, stop = 0, len(bars)
    else:
        split = split_by_date(
            bars.frame.index, train_end=splits.train_end, validation_end=splits.validation_end
        )
        part: slice = getattr(split, splits.evaluate)
        start, stop = part.start, part.stop
    if splits.last_bars is not None:
        start = max(start, stop - splits.last_bars)
    return start, stop


def run(
    config: RunConfig,
    *,
    progress: bool = False,
    write: bool = True,
    on_estimate: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run every strategy of ``config`` over the same bars and write the run directory.

    Args:
        config: The run's configuration.
        progress: Show a progress bar per strategy (for the CLI).
        write: Write the run directory (``False`` keeps everything in memory).
        on_estimate: Called with the LLM cost estimate (``manifest["llm_cost_estimate"]``)
            before any strategy runs, when some strategy calls LLMs.

    Returns:
        The ledger, decisions, LLM calls, summary and manifest as objects.

    Raises:
        BacktestError: Bad data or configuration, before any strategy runs.
    """
    from backtest import metrics

    # Strategies first: a mistake in their parameters (a missing routing file, an unpriced
    # model, an empty replay-only cassette) is reported before any bar is read.
    specs = list(config.strategies)
    if config.benchmark is not None and config.benchmark not in {s.name for s in specs}:
        specs.append(StrategyConfig(name=config.benchmark, kind="buy_and_hold"))
    expanded, groups = _expand_seeds(specs, config.seed)
    specs = [spec for spec, _, _ in expanded]
    policies = [build_policy(spec, index) for spec, index, _ in expanded]  # checks them all
    seeds = [seed for _, _, seed in expanded]
    data_path = Path(config.data.path)
    max_gap = None if config.data.max_gap is None else pd.Timedelta(config.data.max_gap)
    bars = load_bars(
        data_path,
        symbol=config.data.symbol,
        start=config.data.start,
        end=config.data.end,
        max_gap=max_gap,
    )
    data_sha = _data_hash(data_path)
    inputs = run_inputs(config)
    run_id = run_id_for(config, data_sha, inputs)
    env_config = config.env.model_copy(update={"risk": config.risk})
    start, stop = _evaluation_range(config, bars)
    frame = bars.frame
    features: Features = compute_features(
        frame["open"].to_numpy(),
        frame["high"].to_numpy(),
        frame["low"].to_numpy(),
        frame["close"].to_numpy(),
        frame["volume"].to_numpy(),
    )
    timestamps = frame.index
    view = MarketView(
        timestamps_ns=timestamps.asi8,
        # Only policies that read news, documents or the decision time need close times,
        # and deriving them may build an exchange calendar: do it on first use.
        close_times_ns=lambda: bar_close_times(timestamps, bars.frequency, bars.meta.calendar),
        open_=frame["open"].to_numpy(),
        high=frame["high"].to_numpy(),
        low=frame["low"].to_numpy(),
        close=frame["close"].to_numpy(),
        volume=frame["volume"].to_numpy(),
        symbol=bars.symbol,
        frequency=bars.frequency,
        news=_load_text_beside(data_path, "news"),
        documents=_load_text_beside(data_path, "documents"),
    )

    warnings: list[str] = []
    probe = TradingEnv(bars, env_config, start=start, end=stop, features=features)
    estimate = _llm_cost_estimate(policies, specs, view, probe.first_bar, probe.end_bar, warnings)
    if estimate["per_strategy"] and on_estimate is not None:
        on_estimate(estimate)

    tracks: dict[str, _Track] = {}
    first_bar = None
    bar_progress = None
    if progress:
        from rich.progress import Progress

        bar_progress = Progress(transient=False)
        bar_progress.start()
    folds = _folds(config, bars)
    try:
        if folds is not None:
            tracks = _walk_forward(
                folds,
                expanded,
                bars,
                env_config,
                view,
                bar_progress,
                warnings,
            )
            first_bar = start
        # With walk-forward folds, each fold built and ran its own policies above.
        runs = zip(policies, specs, seeds, strict=True) if folds is None else iter(())
        for policy, spec, seed in runs:
            env = TradingEnv(bars, env_config, start=start, end=stop, features=features)
            task = None
            if bar_progress is not None:
                task = bar_progress.add_task(f"{spec.name}", total=env.end_bar - env.first_bar)
            bind = getattr(policy, "bind", None)
            if callable(bind):  # policies that train on the run's env (DRL) take its config
                bind(env_config)
            show = getattr(policy, "show_progress", None)
            if callable(show):  # policies that train can show it beside the bar progress
                show(bar_progress)
            track, ruined = _replay(policy, env, view, seed, bar_progress, task)
            if ruined:
                warnings.append(f"strategy {spec.name!r} lost its whole equity and stopped trading")
            tracks[spec.name] = track
            first_bar = env.first_bar
    finally:
        if bar_progress is not None:
            bar_progress.stop()
    assert first_bar is not None
    if first_bar > start:
        warnings.append(
            f"the first {first_bar - start} bar(s) of the evaluated split only fill "
            f"the {config.env.window}-bar feature window; trading starts at "
            f"{timestamps[first_bar]}"
        )

    index = timestamps[first_bar:stop]
    close = frame["close"].to_numpy()[first_bar:stop]
    tables = {
        "ledger": _ledger_table(tracks, index, close),
        "decisions": _decisions_table(tracks, index),
        "llm_calls": _llm_calls_table(tracks, index),
    }
    calls = tables["llm_calls"]
    if calls.num_rows:
        offline = pc.equal(calls["cache"], "offline")
        for name in tracks:
            mine = pc.and_(offline, pc.equal(calls["strategy"], name))
            count = pc.sum(pc.cast(mine, pa.int64())).as_py() or 0
            if count:
                warnings.append(
                    f"strategy {name!r}: {count} LLM answer(s) came from the offline analyst "
                    "(rule-based, $0, no model was asked); set the provider's API key to use "
                    "real models"
                )

    ppy = (
        config.periods_per_year
        or bars.meta.periods_per_year
        or metrics.periods_per_year(bars.frequency, bars.meta.calendar, index)
    )
    bench = tracks.get(config.benchmark) if config.benchmark else None
    risk_free = risk_free_rates(config.risk_free_rate, index)
    summary: dict[str, Any] = {
        "run_id": run_id,
        "symbol": bars.symbol,
        "start": index[0].isoformat(),
        "end": index[-1].isoformat(),
        "bars": len(index),
        "periods_per_year": ppy,
        "benchmark": config.benchmark,
        "strategies": {},
    }
    if folds is not None:
        summary["folds"] = _fold_summaries(
            folds, tracks, timestamps, first_bar, ppy, risk_free, config.benchmark
        )

    def stats_of(name: str, track: _Track, part: slice) -> dict[str, float]:
        rf = risk_free if isinstance(risk_free, float) else risk_free[part]
        return metrics.summarize(
            track.equity[part],
            periods_per_year=ppy,
            risk_free=rf,
            benchmark_equity=(
                None if bench is None or name == config.benchmark else bench.equity[part]
            ),
            position_units=track.units[part],
            fill_units=_all_fills(track)[part],
            fill_price=_all_prices(track)[part],
            fees_usd=track.fees[part],
        )

    used = _models_used(policies, specs)
    cutoffs = _model_cutoffs(sorted({m for models in used.values() for m in models}))
    leakage = _leakage(used, cutoffs, index)
    cutoff_split: dict[str, list[dict[str, Any]]] = {}
    for entry in leakage:
        boundary = _after_cutoff(entry["training_cutoff"])
        cut = int(np.searchsorted(index.asi8, boundary.value, side="left"))
        track = tracks[entry["strategy"]]
        cutoff_split.setdefault(entry["strategy"], []).append(
            {
                "model": entry["model"],
                "cutoff": entry["training_cutoff"],
                "before": stats_of(entry["strategy"], track, slice(0, cut)) if cut >= 2 else None,
                "after": (
                    stats_of(entry["strategy"], track, slice(cut, None))
                    if len(index) - cut >= 2
                    else None
                ),
            }
        )
    warnings += _leakage_warnings(leakage, used, cutoffs)
    summary["cutoff_split"] = cutoff_split
    for name, track in tracks.items():
        stats = stats_of(name, track, slice(None))
        stats["llm_cost_usd"] = float(track.llm_cost.sum())
        stats["llm_calls"] = int(track.llm_calls.sum())
        stats.update(_llm_counts(calls, name))
        stats["abstains"] = int(track.abstain.sum())
        stats["decisions"] = len(track.decisions)
        stats["final_equity_usd"] = float(track.equity[-1])
        stats["risk_events"] = sum(1 for e in track.risk_event if e)
        stats["stops"] = sum(1 for e in track.exit_reason if e)
        summary["strategies"][name] = stats
    summary["seed_groups"] = _seed_groups(groups, summary["strategies"])
    summary["comparisons"] = [
        compare(
            tables["ledger"],
            a,
            b,
            periods_per_year=ppy,
            initial_capital_usd=config.env.initial_capital_usd,
            seed=config.seed,
            risk_free=risk_free,
        )
        for a, b in _default_pairs(config.strategies)
    ]
    summary = _json_safe(summary)

    manifest = _json_safe(
        {
            "run_id": run_id,
            "name": config.name,
            "config": json.loads(canonical_json(config)),
            "data": {
                "path": str(data_path),
                "sha256": data_sha,
                "symbol": bars.symbol,
                "frequency": bars.frequency,
                "calendar": bars.meta.calendar,
                "source": bars.meta.source,
                "rows_loaded": len(bars),
                "evaluated": [index[0].isoformat(), index[-1].isoformat()],
            },
            "inputs": inputs,
            "seed": config.seed,
            "strategy_seeds": dict(zip([s.name for s in specs], seeds, strict=True)),
            "versions": dict(_versions()),
            "git_revision": _git_revision(),
            "warnings": warnings,
            "llm_cost_estimate": estimate,
            "leakage": leakage,
        }
    )
    run_dir = Path(config.output_dir) / run_id
    if write:
        _write_run_dir(run_dir, tables, summary, manifest)
    return RunResult(
        run_id=run_id, run_dir=run_dir, tables=tables, summary=summary, manifest=manifest
    )


def _llm_cost_estimate(
    policies: list[Policy],
    specs: list[StrategyConfig],
    view: MarketView,
    first: int,
    stop: int,
    warnings: list[str],
) -> dict[str, Any]:
    """Ask each policy that calls LLMs for its estimate (see the module docstring).

    A policy may add ``max_run_usd`` (its hard cap) to its answer: an estimate above it
    gets a warning, since the cap will stop the calls partway through the run.
    """
    per_strategy: dict[str, dict[str, Any]] = {}
    view._seek(stop - 1)
    for policy, spec in zip(policies, specs, strict=True):
        estimate = getattr(policy, "estimate_llm_cost", None)
        if callable(estimate):
            result = estimate(view, first)
            per_strategy[spec.name] = {
                "calls": int(result["calls"]),
                "usd": float(result["usd"]),
            }
            cap = result.get("max_run_usd")
            if cap is not None and float(result["usd"]) > cap:
                warnings.append(
                    f"strategy {spec.name!r}: its {int(result['calls']):,} LLM calls are "
                    f"estimated at up to ${float(result['usd']):,.2f}, above its hard cap "
                    f"max_run_usd = ${cap:,.2f}: once the cap is reached no call is made and "
                    "the decisions abstain. The estimate is an upper bound (every answer at "
                    "max_tokens); raise max_run_usd, call less often (every_n_bars) or route "
                    "to cheaper models."
                )
    return {
        "calls": sum(e["calls"] for e in per_strategy.values()),
        "usd": math.fsum(e["usd"] for e in per_strategy.values()),
        "per_strategy": per_strategy,
    }


def _model_cutoffs(models: list[str]) -> dict[str, str | None]:
    """Each model's training cutoff over every price table (None: unknown).

    A published ``training_cutoff`` (the latest, if tables differ) wins; without one, the
    latest release month bounds it (``cutoff_upper_bound``).
    """
    from backtest.errors import PricingError
    from backtest.llm.pricing import load_tables

    tables = list(load_tables().values()) if models else []
    out: dict[str, str | None] = {}
    for model in models:
        published: list[str] = []
        bounds: list[str] = []
        for table in tables:
            try:
                entries = table.history(model)
            except PricingError:
                continue
            published += [e.training_cutoff for e in entries if e.training_cutoff]
            bounds += [e.cutoff_upper_bound for e in entries if e.cutoff_upper_bound]
        out[model] = max(published or bounds) if (published or bounds) else None
    return out


def _after_cutoff(month: str) -> pd.Timestamp:
    """The first instant the model cannot have seen: the start of the month after ``month``."""
    return pd.Timestamp(f"{month}-01", tz="UTC") + pd.offsets.MonthBegin(1)


def _models_used(policies: list[Policy], specs: list[StrategyConfig]) -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for policy, spec in zip(policies, specs, strict=True):
        models_used = getattr(policy, "models_used", None)
        if callable(models_used):
            used[spec.name] = sorted(set(models_used()))
    return used


def _leakage(
    used: dict[str, list[str]], cutoffs: dict[str, str | None], index: pd.DatetimeIndex
) -> list[dict[str, Any]]:
    """Models whose training cutoff falls after the evaluated window starts."""
    out: list[dict[str, Any]] = []
    for name, models in used.items():
        for model in models:
            cutoff = cutoffs[model]
            if cutoff is not None and index[0] < _after_cutoff(cutoff):
                out.append(
                    {
                        "strategy": name,
                        "model": model,
                        "training_cutoff": cutoff,
                        "window_start": index[0].isoformat(),
                        "window_end": index[-1].isoformat(),
                    }
                )
    return out


def _leakage_warnings(
    leakage: list[dict[str, Any]], used: dict[str, list[str]], cutoffs: dict[str, str | None]
) -> list[str]:
    warnings = []
    by_strategy: dict[str, list[dict[str, Any]]] = {}
    for entry in leakage:
        by_strategy.setdefault(entry["strategy"], []).append(entry)
    for name, entries in by_strategy.items():
        listed = ", ".join(f"{e['model']} ({e['training_cutoff']})" for e in entries)
        start = entries[0]["window_start"][:10]
        warnings.append(
            f"strategy {name!r}: the evaluated window starts on {start}, before the training "
            f"cutoff of {listed} (the published cutoff, else the release month). These models "
            "may have read what happened next, so results before the cutoff can be inflated by "
            "memory, not skill. summary.json's cutoff_split gives the metrics before and after "
            "each cutoff; set anonymize = true on the strategy, or evaluate a later window."
        )
    for name, models in used.items():
        unknown = [m for m in models if cutoffs[m] is None]
        if unknown:
            warnings.append(
                f"strategy {name!r}: no training cutoff or release month is known for "
                f"{', '.join(unknown)}, so look-ahead through the model's training data cannot "
                "be ruled out. Fix: add training_cutoff or released to its entry in "
                "backtest/llm/prices.toml."
            )
    return warnings


def _llm_counts(calls: pa.Table, name: str) -> dict[str, int]:
    """Retries, fallbacks and failed calls of one strategy, from ``llm_calls``."""
    if not calls.num_rows:
        return {"llm_retries": 0, "llm_fallbacks": 0, "llm_failed_calls": 0}
    mine = calls.filter(pc.equal(calls["strategy"], name))

    def count(mask: pa.ChunkedArray) -> int:
        return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)

    return {
        "llm_retries": int(pc.sum(mine["retries"]).as_py() or 0),
        "llm_fallbacks": count(pc.not_equal(pc.fill_null(mine["fallback_from"], ""), "")),
        "llm_failed_calls": count(pc.not_equal(pc.fill_null(mine["error"], ""), "")),
    }


def risk_free_rates(value: float | str, index: pd.DatetimeIndex) -> float | np.ndarray:
    """Return a constant annual rate, or read a file of annual rates taken as of each bar.

    Raises:
        ConfigError: The file cannot be read, lacks ``timestamp``/``rate`` columns, or
            starts after the first bar of ``index``.
    """
    if not isinstance(value, str):
        return float(value)
    path = Path(value)
    try:
        rates = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"risk_free_rate: cannot read {path} ({exc}). Fix: give an annual "
            "rate such as 0.02, or a CSV/Parquet file with timestamp and rate "
            "columns."
        ) from exc
    if not {"timestamp", "rate"} <= set(rates.columns):
        raise ConfigError(
            f"risk_free_rate: {path} needs columns 'timestamp' and 'rate' (has "
            f"{', '.join(map(str, rates.columns))})."
        )
    stamps = pd.DatetimeIndex(pd.to_datetime(rates["timestamp"], utc=True)).as_unit("ns")
    order = np.argsort(stamps.asi8, kind="stable")
    known = stamps.asi8[order]
    values = rates["rate"].to_numpy(dtype=np.float64)[order]
    positions = np.searchsorted(known, index.as_unit("ns").asi8, side="right") - 1
    if (positions < 0).any():
        raise ConfigError(
            f"risk_free_rate: {path} starts at {stamps.min()}, after the first "
            f"evaluated bar {index[0]}. Fix: add earlier rates."
        )
    return values[positions]


def _all_fills(track: _Track) -> np.ndarray:
    return track.fill_units + track.exit_units


def _all_prices(track: _Track) -> np.ndarray:
    # Notional per bar over units per bar: the VWAP of the bar's fills (turnover uses both).
    notional = np.nan_to_num(np.abs(track.fill_units) * track.fill_price) + np.nan_to_num(
        np.abs(track.exit_units) * track.exit_price
    )
    units = np.abs(track.fill_units) + np.abs(track.exit_units)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(units > 0, notional / units, np.nan)


LLM_CALL_SCHEMA = pa.schema([pa.field(c, t) for c, t in LLM_CALL_COLUMNS.items()])


def _repeat(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int32)), pa.array([value])
    ).cast(pa.string())


def _floats(values: np.ndarray | list[float]) -> pa.Array:
    # NaN stays NaN (no fill price, HOLD target); it is not turned into null.
    return pa.array(values, type=pa.float64())


def _ledger_table(
    tracks: dict[str, _Track], index: pd.DatetimeIndex, close: np.ndarray
) -> pa.Table:
    ts = pa.array(index.asi8, type=pa.int64()).cast(_TIMESTAMP)
    closes = pa.array(close, type=pa.float64())
    parts = []
    for name, tr in tracks.items():
        n = len(index)
        parts.append(
            pa.Table.from_arrays(
                [
                    _repeat(name, n),
                    ts,
                    closes,
                    _floats(tr.target),
                    _floats(tr.units),
                    _floats(tr.exposure),
                    _floats(tr.fill_units),
                    _floats(tr.fill_price),
                    _floats(tr.exit_units),
                    _floats(tr.exit_price),
                    pa.array(tr.exit_reason, type=pa.string()),
                    _floats(tr.fees),
                    _floats(tr.financing),
                    _floats(tr.cash),
                    _floats(tr.equity),
                    _floats(tr.llm_cost),
                    pa.array(tr.llm_calls, type=pa.int64()),
                    pa.array(tr.abstain, type=pa.bool_()),
                    pa.array(tr.risk_event, type=pa.string()),
                ],
                schema=LEDGER_SCHEMA,
            )
        )
    return pa.concat_tables(parts)


def _decision_row(d: Decision) -> tuple[Any, ...]:
    target = math.nan if d.target_position is None else float(d.target_position)
    return (
        d.action,
        target,
        float(d.confidence),
        bool(d.abstain),
        d.reasoning,
        _signals_json(d),
        len(d.llm_calls),
    )


def _decisions_table(tracks: dict[str, _Track], index: pd.DatetimeIndex) -> pa.Table:
    parts = []
    for name, tr in tracks.items():
        ds = tr.decisions
        # Baselines hand back the same few Decision objects bar after bar: convert each once.
        seen: dict[int, tuple[Any, ...]] = {}
        rows = []
        for d in ds:
            row = seen.get(id(d))
            if row is None:
                row = seen[id(d)] = _decision_row(d)
            rows.append(row)
        columns = list(zip(*rows, strict=True)) if rows else [()] * 7
        n = len(ds)
        parts.append(
            pa.Table.from_arrays(
                [
                    _repeat(name, n),
                    pa.array(index.asi8[:n], type=pa.int64()).cast(_TIMESTAMP),
                    pa.array(columns[0], type=pa.string()),
                    pa.array(columns[1], type=pa.float64()),
                    pa.array(columns[2], type=pa.float64()),
                    pa.array(columns[3], type=pa.bool_()),
                    pa.array(columns[4], type=pa.string()),
                    pa.array(columns[5], type=pa.string()),
                    pa.array(columns[6], type=pa.int64()),
                ],
                schema=DECISION_SCHEMA,
            )
        )
    return pa.concat_tables(parts)


def _llm_calls_table(tracks: dict[str, _Track], index: pd.DatetimeIndex) -> pa.Table:
    # Column by column: a run of 100,000 bars makes 400,000 calls, and a dict per row
    # (about 1 KB each) would be the run's largest allocation.
    columns: dict[str, list[Any]] = {c: [] for c in LLM_CALL_COLUMNS}
    stamps: list[int] = []
    names: list[str] = []
    for name, tr in tracks.items():
        if not tr.llm_calls.any():
            continue
        for k, decision in enumerate(tr.decisions):
            for call in decision.llm_calls:
                row = _call_row(call)
                for column, values in columns.items():
                    values.append(row.get(column))
                names.append(name)
                stamps.append(int(index.asi8[k]))
    if not names:
        return LLM_CALL_SCHEMA.empty_table()
    columns["strategy"] = names
    arrays = [
        pa.array(stamps, type=pa.int64()).cast(_TIMESTAMP)
        if column == "timestamp"
        else pa.array(values, type=LLM_CALL_COLUMNS[column])
        for column, values in columns.items()
    ]
    return pa.Table.from_arrays(arrays, schema=LLM_CALL_SCHEMA)


def _pid_alive(text: str) -> bool:
    try:
        os.kill(int(text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _write_run_dir(
    run_dir: Path, tables: dict[str, pa.Table], summary: dict[str, Any], manifest: dict[str, Any]
) -> None:
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.parent.glob(f".{run_dir.name}.tmp-*"):
        # A writer that was killed mid-write left this; a live one is left alone.
        if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    staging = run_dir.with_name(f".{run_dir.name}.tmp-{os.getpid()}")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    for name, table in tables.items():
        pq.write_table(table, staging / f"{name}.parquet", compression="zstd")
    (staging / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    staging.rename(run_dir)
