"""Sweeps: one base experiment, a grid of overrides, every point a run; resumable and honest.

A sweep file (TOML) names a base experiment and a grid of dotted keys, each with a list of
values (the same keys ``--set`` takes), and says how the best configuration is chosen::

    base = "quickstart.toml"          # relative to this file
    output_dir = "../runs/sweep-fees" # where the runs, sweep_summary.parquet, selection.json go
    strategy = "hybrid"               # the strategy being tuned (default: the first one)
    metric = "sharpe"                 # what the selection ranks by (default sharpe)
    top_k = 1                         # how many configurations reach the test split
    baseline = "drl_ppo"              # SPA benchmark: a strategy of the runs (buy_and_hold)

    [grid]
    "env.fee_bps" = [0.5, 1.0, 2.0]
    seed = [0, 1]

Selection discipline (sweeps are where backtests lie): every point of the grid (the
Cartesian product, in sorted key order) is run on the **validation** split only. A
**configuration** is a point without its replication key ``seed``; its seeds are every
member of the tuned strategy (``hybrid``, or ``hybrid@0``, ``hybrid@1``, ...) in every run of
it, and it is scored by the mean of ``metric`` over them, with their spread and a t-interval
over seeds (:mod:`backtest.seed_scores`, with its NaN rule). The ``top_k`` configurations
by that mean are then run on the **test** split (every seed of each), and no other ever is.
Configurations whose runs returned the same on every bar are one distinct trial
(:func:`distinct_trials`). ``selection.json`` records how many configurations were tried and
how many distinct trials they were and, for the best one, the Deflated Sharpe Ratio over the
distinct trials, the probability of backtest overfitting (CSCV over the per-bar validation
returns of each distinct trial's seed average; ties half-counted) and Hansen's SPA p-value
against the baseline (:mod:`backtest.selection`). :func:`sweep_warnings` says, before any run,
when a grid key cannot change the result.

Every run's id is the hash of all of its inputs (:func:`backtest.engine.run_inputs`, see
``docs/provenance.md``), so a run already complete (its directory holds a ``summary.json``:
directories are renamed into place only when complete) is skipped, and a killed sweep
resumes where it stopped. A run that fails is recorded with its error and does not stop the
others. ``sweep_summary.parquet`` (and ``.csv``) has one row per configuration: seeds, NaN
seeds, validation mean, std and interval, ``distinct_trial``, ``selected`` and the selected
configuration's test numbers; ``sweep_runs.parquet`` has one row per run and strategy: the
point, its configuration, the grid values (as text, column ``grid.<key>``), ``split``
(``validation`` or ``test``), ``selected``, run id, status, error, the strategy's metrics and
LLM counts, and ``n_configs_tried``. ``docs/sweeps.md`` has the details.

Backends:

- ``local`` (default): a process pool (one worker per core) whose workers fork from a
  forkserver that has the engine imported.
- ``ray``: every run is a Ray task (``pip install hybrid-backtest[ray]``), on a local Ray
  instance with ``num_cpus=workers`` or on an existing cluster (``address``). Tasks run in
  the driver's working directory when it exists on their node, so relative paths (routing
  files, cassettes, the DRL model cache) mean the same there; on a multi-node cluster those
  directories must be on a shared filesystem. Each worker process records LLM calls into a
  shard of its own (``shard-<host>-<pid>-<random>.tsv``); the driver compacts the shards
  afterwards. Trained DRL models are shared through the model cache directory.

Cassettes that gained shards during a sweep (on either backend) are compacted with
:meth:`backtest.llm.cassette.Cassette.merge` once every run has finished.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError

from backtest.config import Frozen, RunConfig, explain_validation_error, load_experiment, read_toml
from backtest.errors import BacktestError, ConfigError
from backtest.seed_scores import (
    CI_METHOD,
    REPLICATION_KEYS,
    SeedScore,
    member_returns,
    member_values,
    score_seeds,
    trial_fingerprint,
)

__all__ = [
    "METRIC_DIRECTIONS",
    "SelectionConfig",
    "SweepPoint",
    "SweepSpec",
    "distinct_trials",
    "expand_grid",
    "load_sweep",
    "run_sweep",
    "select_top_k",
    "sweep_warnings",
]

#: Metrics a sweep may select by: +1 when higher is better, -1 when lower is better.
METRIC_DIRECTIONS: dict[str, int] = {
    "total_return": 1,
    "cagr": 1,
    "sharpe": 1,
    "sortino": 1,
    "calmar": 1,
    "max_drawdown": 1,  # a negative fraction: closer to zero is better
    "win_rate": 1,
    "alpha": 1,
    "information_ratio": 1,
    "final_equity_usd": 1,
    "annual_volatility": -1,
    "max_drawdown_bars": -1,
    "turnover": -1,
    "fees_usd": -1,
    "tracking_error": -1,
    "llm_cost_usd": -1,
    "llm_calls": -1,
    "abstains": -1,
}
_SUMMARY_METRICS = (
    "total_return",
    "cagr",
    "sharpe",
    "sortino",
    "max_drawdown",
    "trade_count",
    "fees_usd",
    "llm_cost_usd",
    "llm_calls",
    "llm_retries",
    "llm_fallbacks",
    "llm_failed_calls",
    "abstains",
    "final_equity_usd",
)
_SWEEP_KEYS = ("base", "output_dir", "grid")
Split = Literal["validation", "test"]


class SelectionConfig(Frozen):
    """How a sweep picks its configuration (top-level keys of the sweep file).

    Attributes:
        strategy: The strategy whose metric ranks the configurations (default: the first
            strategy of the base experiment).
        metric: A key of :data:`METRIC_DIRECTIONS`.
        top_k: How many of the best configurations are run on the test split.
        baseline: Strategy of the runs that the SPA test compares against (the DRL-only
            policy, e.g. ``drl_ppo``); when not set, ``buy_and_hold`` (the runs' default
            benchmark), and no SPA test when the runs have none.
        spa_reps: Bootstrap replications of the SPA test.
        spa_seed: Seed of the SPA bootstrap's generator.
        pbo_splits: Blocks of the CSCV (even); fewer are used when the validation split is
            too short for this many (at least two bars per block).
    """

    strategy: str | None = None
    metric: str = "sharpe"
    top_k: int = Field(1, ge=1)
    baseline: str | None = None
    spa_reps: int = Field(1000, ge=10)
    spa_seed: int = Field(0, ge=0)
    pbo_splits: int = Field(16, ge=2)


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """One run of a sweep: its grid point, overrides, resolved config and split.

    ``configuration`` numbers the grid point without its replication keys (``seed``): the
    points that differ only in their seed are one configuration's seeds.
    """

    index: int
    values: dict[str, Any]
    config: RunConfig
    split: Split = "validation"
    configuration: int = 0


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """A loaded sweep file."""

    path: Path
    base: Path
    output_dir: Path
    grid: dict[str, list[Any]]
    selection: SelectionConfig = field(default_factory=SelectionConfig)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read a sweep file.

    Raises:
        ConfigError: Missing file or keys, an unknown key, a grid value that is not a
            non-empty list, a grid over the split being evaluated, or a bad selection key.
    """
    path = Path(path)
    raw = read_toml(path, "sweep", "check the path")
    known = [*_SWEEP_KEYS, *SelectionConfig.model_fields]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(hints)}. Fix: a sweep file has "
            f"{', '.join(known)} and [grid]."
        )
    if "base" not in raw:
        raise ConfigError(
            f"{path}: 'base' (the experiment file) is missing. Fix: add base = \"quickstart.toml\"."
        )
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(
            f"{path}: [grid] is empty. Fix: add dotted keys with lists of values, "
            'e.g. "env.fee_bps" = [0.5, 1.0].'
        )
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.{key} must be a non-empty list of values.")
        if key.replace(" ", "") == "splits.evaluate":
            raise ConfigError(
                f"{path}: grid.{key}: a sweep is scored on the validation split and only its "
                "selection sees the test split. Fix: remove this key from [grid]."
            )
    try:
        selection = SelectionConfig.model_validate(
            {k: v for k, v in raw.items() if k in SelectionConfig.model_fields}
        )
    except ValidationError as exc:
        raise explain_validation_error(exc, str(path)) from exc
    if selection.metric not in METRIC_DIRECTIONS:
        close = difflib.get_close_matches(selection.metric, METRIC_DIRECTIONS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{path}: metric = {selection.metric!r} is not a metric a sweep can select by.{hint} "
            f"Fix: use one of {', '.join(METRIC_DIRECTIONS)}."
        )
    if selection.pbo_splits % 2:
        raise ConfigError(f"{path}: pbo_splits must be even (got {selection.pbo_splits}).")
    here = path.resolve().parent
    output = raw.get("output_dir", f"runs/sweep-{path.stem}")
    return SweepSpec(
        path=path,
        base=(here / raw["base"]).resolve(),
        output_dir=(here / output).resolve(),
        grid=dict(grid),
        selection=selection,
    )


def expand_grid(spec: SweepSpec) -> list[SweepPoint]:
    """Every grid point as a validated config on the validation split.

    Raises:
        ConfigError: A point's config is invalid, the base experiment has no train /
            validation / test split, or the selected strategy or baseline is missing (each
            naming the sweep file and the point).
    """
    keys = sorted(spec.grid)
    points = []
    configurations: dict[str, int] = {}
    for index, combo in enumerate(itertools.product(*(spec.grid[k] for k in keys))):
        values = dict(zip(keys, combo, strict=True))
        # JSON spells TOML's strings, numbers, booleans and arrays the same way.
        overrides = [f"{k}={json.dumps(v)}" for k, v in values.items()]
        overrides.append('splits.evaluate="validation"')
        try:
            # Grid values are written in the sweep file: their paths are relative to it.
            config = load_experiment(
                spec.base,
                overrides,
                output_dir=spec.output_dir,
                overrides_base=spec.path.resolve().parent,
            )
        except ConfigError as exc:
            raise ConfigError(f"{spec.path}, grid point {index} {values}: {exc}") from exc
        if config.splits.validation_end is None:
            raise ConfigError(
                f"{spec.path}: the base experiment {spec.base} has no validation split. A sweep "
                "is scored on the validation split and only its selection is run on the test "
                "split. Fix: set [splits] train_end and validation_end in the base experiment."
            )
        names = [s.name for s in config.strategies]
        strategy = spec.selection.strategy
        if strategy is not None and strategy not in names:
            close = difflib.get_close_matches(strategy, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{spec.path}: strategy = {strategy!r} is not a strategy of grid point {index} "
                f"({', '.join(names)}).{hint}"
            )
        baseline = spec.selection.baseline
        benchmark_names = [*names, *([config.benchmark] if config.benchmark else [])]
        if baseline is not None and baseline not in benchmark_names:
            close = difflib.get_close_matches(baseline, benchmark_names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{spec.path}: baseline = {baseline!r} is not a strategy of grid point {index} "
                f"({', '.join(benchmark_names)}).{hint} Fix: name the DRL-only strategy the "
                "selection must beat."
            )
        if baseline is not None and _strategy_of(spec, config) == baseline:
            raise ConfigError(
                f"{spec.path}: baseline = {baseline!r} is the strategy being "
                "selected. Fix: set strategy to the tuned strategy and baseline to the one it "
                "must beat (e.g. the DRL-only policy)."
            )
        defining = json.dumps(
            {k: v for k, v in values.items() if k not in REPLICATION_KEYS}, sort_keys=True
        )
        configuration = configurations.setdefault(defining, len(configurations))
        points.append(SweepPoint(index, values, config, configuration=configuration))
    return points


def _watch_parent(sweep_pid: int) -> None:
    """Worker initializer: exit as soon as the sweep process is gone.

    A sweep killed with SIGKILL cannot stop its pool; without this its workers would go on
    with the runs already queued to them, unseen (racing a restarted sweep for the same run
    directories), and then wait forever for work that never comes.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.2)
            if os.getppid() != parent:  # the forkserver went away with the sweep
                os._exit(1)
            try:
                os.kill(sweep_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="sweep-watch-parent", daemon=True).start()


def _strategy_of(spec: SweepSpec, config: RunConfig) -> str:
    return spec.selection.strategy or config.strategies[0].name


def _baseline_of(spec: SweepSpec) -> str:
    return spec.selection.baseline or "buy_and_hold"


def _on_test(point: SweepPoint) -> SweepPoint:
    splits = point.config.splits.model_copy(update={"evaluate": "test"})
    return replace(point, config=point.config.model_copy(update={"splits": splits}), split="test")


# --------------------------------------------------------------------------- execution


def _execute(config_json: str) -> dict[str, Any]:
    """Run one point in a worker process; never raises (a failure is a result)."""
    from backtest.engine import run

    config = RunConfig.model_validate_json(config_json)
    try:
        result = run(config)
    except BacktestError as exc:
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    return {"status": "done", "run_id": result.run_id}


def _execute_in(cwd: str, config_json: str) -> dict[str, Any]:
    """A Ray task: run in the driver's working directory where this node has it."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return _execute(config_json)


Report = Callable[[SweepPoint, dict[str, Any]], None]


class _LocalBackend:
    """A process pool kept for the whole sweep, so the test runs reuse warm workers."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None

    def run(self, todo: Sequence[SweepPoint], report: Report, *, in_pool: bool = False) -> None:
        """Run in this process (one worker, or a lone run unless ``in_pool``) or in the pool."""
        if not todo:
            return
        if self.workers <= 1 or (len(todo) == 1 and not in_pool and self.pool is None):
            for point in todo:
                report(point, _execute(point.config.model_dump_json()))
            return
        if self.pool is None:
            # forkserver: workers fork from a clean server process (no inherited threads,
            # numba or torch state) that has already imported the engine and the strategies
            # the runs use (the LLM graph pulls in the openai SDK, ~1 s per worker
            # otherwise), so they start in milliseconds. Modules that fail to import are
            # skipped there.
            context = get_context("forkserver")
            context.set_forkserver_preload(["backtest.engine", *_strategy_modules(todo)])
            self.pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=context,
                initializer=_watch_parent,
                initargs=(os.getpid(),),
            )
        futures = {self.pool.submit(_execute, p.config.model_dump_json()): p for p in todo}
        for future in as_completed(futures):
            report(futures[future], future.result())

    def close(self) -> None:
        """Stop the pool's workers."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _strategy_modules(points: Sequence[SweepPoint]) -> list[str]:
    """The modules that define the strategies of these runs, in first-use order."""
    from backtest.config import STRATEGY_KINDS

    modules: dict[str, None] = {"strategies.baselines": None}
    for point in points:
        for spec in point.config.strategies:
            module = STRATEGY_KINDS.get(spec.kind, spec.kind).partition(":")[0]
            if module:
                modules[module] = None
    return list(modules)


def _check_reachable(address: str) -> None:
    """Fail fast on a cluster address nothing listens at (Ray itself retries for minutes)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"--address {address!r}: nothing answers there ({exc}). Fix: start the cluster "
            "with `ray start --head` and pass the address it prints, or leave --address out "
            "for a local Ray instance."
        ) from exc


class _RayBackend:
    """Ray tasks on a local instance (started here, stopped at the end) or a cluster."""

    def __init__(self, workers: int, address: str | None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(
                "--backend ray: Ray is not installed. Fix: pip install 'hybrid-backtest[ray]', "
                "or use --backend local."
            ) from exc
        # No usage statistics and no dashboard: nothing leaves the machine.
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            if address is not None:
                _check_reachable(address)
            kwargs: dict[str, Any] = {"logging_level": "warning", "log_to_driver": False}
            if address is None:
                kwargs.update(num_cpus=workers, include_dashboard=False)
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(
                    f"--address {address!r}: cannot connect to a Ray cluster ({exc}). Fix: "
                    "start one with `ray start --head` and pass its address, or leave "
                    "--address out for a local instance."
                ) from exc
            self.started = True
        self.task = ray.remote(num_cpus=1, max_retries=0)(_execute_in)

    def run(self, todo: Sequence[SweepPoint], report: Report) -> None:
        ray = self.ray
        cwd = os.getcwd()
        pending = {self.task.remote(cwd, p.config.model_dump_json()): p for p in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                point = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # the worker died: the run failed, the sweep goes on
                    outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                report(point, outcome)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def _cassettes(configs: Sequence[RunConfig]) -> set[Path]:
    """Cassette directories the strategies of these runs name (``cassette`` parameters)."""

    def walk(value: Any) -> list[str]:
        if isinstance(value, Mapping):
            found = [str(v) for k, v in value.items() if k == "cassette" and isinstance(v, str)]
            return found + [c for v in value.values() for c in walk(v)]
        return []

    return {Path(c).resolve() for cfg in configs for s in cfg.strategies for c in walk(s.params)}


def _shards(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("shard-*.tsv")} if folder.is_dir() else set()


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class _Scored:
    """One configuration's runs on one split, read back: its seeds and their numbers."""

    configuration: int
    points: tuple[SweepPoint, ...]
    run_ids: tuple[str, ...]
    score: SeedScore  # of the selection metric
    means: dict[str, float | None]  # every metric's mean over the seeds (NaN rule)
    returns: tuple[pd.Series, ...]  # per seed, in seed order

    @property
    def mean_returns(self) -> pd.Series | None:
        """The per-bar return of the seeds' average (on the bars all of them traded)."""
        if not self.returns:
            return None
        return pd.concat(self.returns, axis=1, join="inner").mean(axis=1)


def _score_configuration(
    spec: SweepSpec, points: Sequence[SweepPoint], run_ids: Sequence[str], metric: str
) -> _Scored:
    """Read every seed member of the tuned strategy from a configuration's runs."""
    strategy = _strategy_of(spec, points[0].config)
    per_seed: list[dict[str, float]] = []
    returns: list[pd.Series] = []
    for run_id in run_ids:
        run_dir = spec.output_dir / run_id
        per_seed += member_values(run_dir, strategy).values()
        returns += member_returns(run_dir, strategy).values()
    keys = sorted({k for seed in per_seed for k in seed})
    means = {k: score_seeds(seed.get(k) for seed in per_seed).mean for k in keys}
    return _Scored(
        configuration=points[0].configuration,
        points=tuple(points),
        run_ids=tuple(run_ids),
        score=score_seeds(seed.get(metric) for seed in per_seed),
        means=means,
        returns=tuple(returns),
    )


def _per_period_sharpe(returns: np.ndarray) -> float:
    sd = float(np.std(returns, ddof=1)) if returns.size > 1 else 0.0
    # A flat equity curve (no trade) is a trial with a Sharpe ratio of zero.
    return float(np.mean(returns)) / sd if sd > 0 else 0.0


def select_top_k(scores: Mapping[int, float | None], top_k: int, metric: str) -> list[int]:
    """The ``top_k`` indices (configurations) by ``metric`` (direction: :data:`METRIC_DIRECTIONS`).

    Indices without a finite score are never selected; ties go to the lower index.
    """
    sign = METRIC_DIRECTIONS[metric]
    ranked = sorted(
        (i for i, s in scores.items() if s is not None and math.isfinite(s)),
        key=lambda i: (-sign * float(scores[i]), i),  # type: ignore[arg-type]
    )
    return ranked[:top_k]


def distinct_trials(scored: Sequence[_Scored]) -> dict[int, int]:
    """``{configuration: distinct trial id}``: configurations whose runs produced the same
    returns for the tuned strategy (every seed, every bar) share an id, numbered in order of
    first appearance (:func:`backtest.seed_scores.trial_fingerprint`)."""
    ids: dict[str, int] = {}
    return {s.configuration: ids.setdefault(trial_fingerprint(s.returns), len(ids)) for s in scored}


def _selection_statistics(
    spec: SweepSpec,
    scored: Sequence[_Scored],
    trials: Mapping[int, int],
    best: _Scored | None,
) -> dict[str, Any]:
    """Deflated Sharpe, PBO and SPA of the best configuration, as ``selection.json`` has them.

    Each configuration enters by the per-bar returns of its seeds' average, and each distinct
    trial once (its first configuration): copies of one trial would shrink the spread of
    the trials' Sharpe ratios and inflate their number.
    """
    from backtest.selection import (
        deflated_sharpe_ratio,
        probability_of_backtest_overfitting,
        spa_pvalue,
    )

    sel = spec.selection
    out: dict[str, Any] = {"deflated_sharpe": None, "pbo": None, "spa": None, "notes": []}
    if best is None:
        out["notes"].append("no configuration has a score on the validation split")
        return out
    series: dict[int, pd.Series] = {}
    for item in scored:
        returns = item.mean_returns
        if returns is not None and trials[item.configuration] not in series:
            series[trials[item.configuration]] = returns
    best_returns = best.mean_returns
    if best_returns is None or len(best_returns) < 3:
        out["notes"].append("the best configuration has fewer than 3 validation returns")
        return out
    sharpes = np.array([_per_period_sharpe(s.to_numpy()) for s in series.values()])
    dsr = deflated_sharpe_ratio(best_returns.to_numpy(), sharpes)
    out["deflated_sharpe"] = {
        "sharpe": _per_period_sharpe(best_returns.to_numpy()),
        "dsr": None if math.isnan(dsr) else dsr,
        "n_trials": int(sharpes.size),
        "n_configurations": len(scored),
        "sharpe_variance": float(sharpes.var(ddof=1)) if sharpes.size > 1 else 0.0,
    }
    if len(series) < len(scored):
        out["notes"].append(
            f"{len(scored)} configurations are {len(series)} distinct trial(s): configurations "
            "whose runs returned the same on every bar count once"
        )
    # Every distinct trial on the bars they all traded (the same bars unless the grid
    # changes the data or the window).
    matrix = pd.DataFrame(series).dropna()
    if matrix.shape[1] >= 2:
        n_splits = min(sel.pbo_splits, (len(matrix) // 2) // 2 * 2)
        if n_splits >= 2:
            out["pbo"] = {
                "pbo": probability_of_backtest_overfitting(matrix.to_numpy(), n_splits),
                "n_splits": n_splits,
                "ties": "half-counted",
            }
        else:
            out["notes"].append(f"PBO needs at least 4 common validation bars ({len(matrix)})")
    else:
        out["notes"].append("PBO needs at least two distinct trials")
    benchmark = _baseline_of(spec)
    baseline_seeds = [
        r
        for run_id in best.run_ids
        for r in member_returns(spec.output_dir / run_id, benchmark).values()
    ]
    if benchmark == _strategy_of(spec, best.points[0].config):
        out["notes"].append(f"SPA: the selected strategy {benchmark!r} is the baseline itself")
    elif not baseline_seeds:
        out["notes"].append(
            f"SPA: the baseline strategy {benchmark!r} is not in the best run's ledger"
        )
    else:
        baseline = pd.concat(baseline_seeds, axis=1, join="inner").mean(axis=1)
        common = matrix.join(baseline.rename("baseline"), how="inner")
        if len(common) >= 3:
            p_value = spa_pvalue(
                common["baseline"].to_numpy(),
                common.drop(columns="baseline").to_numpy(),
                reps=sel.spa_reps,
                seed=sel.spa_seed,
            )
            out["spa"] = {
                "p_value": p_value,
                "benchmark": benchmark,
                "reps": sel.spa_reps,
                "n_models": int(common.shape[1] - 1),
                "seed": sel.spa_seed,
            }
        else:
            out["notes"].append("SPA needs at least 3 validation bars shared with the baseline")
    return out


# ------------------------------------------------------------------------------- sweep


def _summary_rows(
    point: SweepPoint, run_id: str, status: str, error: str, selected: bool, metric: str
) -> list[dict[str, Any]]:
    base = {
        "point": point.index,
        "configuration": point.configuration,
        **{f"grid.{k}": str(v) for k, v in point.values.items()},
        "split": point.split,
        "selected": selected,
        "run_id": run_id,
        "status": status,
        "error": error,
    }
    summary_path = Path(point.config.output_dir) / run_id / "summary.json"
    if status == "failed" or not summary_path.exists():
        return [{**base, "strategy": None}]
    summary = json.loads(summary_path.read_text())
    rows = []
    keys = _SUMMARY_METRICS if metric in _SUMMARY_METRICS else (*_SUMMARY_METRICS, metric)
    for name, stats in summary["strategies"].items():
        decisions = stats.get("decisions") or 0
        rows.append(
            {
                **base,
                "strategy": name,
                **{k: stats.get(k) for k in keys},
                "llm_cost_per_decision_usd": (stats.get("llm_cost_usd") or 0.0) / decisions
                if decisions
                else None,
            }
        )
    return rows


def _configuration_rows(
    spec: SweepSpec,
    validation: Mapping[int, _Scored],
    test: Mapping[int, _Scored],
    trials: Mapping[int, int],
    failed: Mapping[int, int],
    chosen: Sequence[int],
    configurations: Mapping[int, Sequence[SweepPoint]],
) -> pd.DataFrame:
    """``sweep_summary``: one row per configuration (its seeds' numbers on validation, the
    selected ones' on test)."""
    metric = spec.selection.metric
    n_distinct = len(set(trials.values()))
    rows = []
    for configuration, points in sorted(configurations.items()):
        scored = validation.get(configuration)
        score = scored.score if scored is not None else score_seeds([])
        on_test = test.get(configuration)
        row: dict[str, Any] = {
            "configuration": configuration,
            **{
                f"grid.{k}": str(v)
                for k, v in points[0].values.items()
                if k not in REPLICATION_KEYS
            },
            "strategy": _strategy_of(spec, points[0].config),
            "metric": metric,
            "n_runs": len(points),
            "n_runs_failed": failed.get(configuration, 0),
            "seeds": score.n_seeds,
            "n_nan_seeds": score.n_nan_seeds,
            "seed_values": json.dumps(score.as_dict()["values"]),
            "validation_mean": score.mean,
            "validation_std": score.std,
            "validation_ci_low": score.ci_low,
            "validation_ci_high": score.ci_high,
            "ci_method": CI_METHOD,
            "distinct_trial": trials.get(configuration),
            "n_distinct_trials": n_distinct,
            "selected": configuration in chosen,
            "test_seeds": on_test.score.n_seeds if on_test else None,
            "test_mean": on_test.score.mean if on_test else None,
            "test_std": on_test.score.std if on_test else None,
            "test_ci_low": on_test.score.ci_low if on_test else None,
            "test_ci_high": on_test.score.ci_high if on_test else None,
            "run_ids": " ".join(scored.run_ids) if scored else "",
            "test_run_ids": " ".join(on_test.run_ids) if on_test else "",
        }
        rows.append(row)
    table = pd.DataFrame(rows)
    for column in ("distinct_trial", "test_seeds"):
        table[column] = table[column].astype("Int64")
    for column in [c for c in table if c.startswith(("validation_", "test_"))]:
        if column not in ("test_seeds", "test_run_ids"):
            table[column] = table[column].astype("float64")
    return table


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)


def sweep_warnings(points: Sequence[SweepPoint]) -> list[str]:
    """Grid keys that cannot change a result, said before the sweep starts.

    Values of a key that give the same run (the same resolved config and inputs, e.g. 1
    and 1.0) are one trial, run once. A key whose values name routing files while every
    LLM strategy it reaches (``strategies[i]....routing``: that strategy; ``llm.routing``:
    every LLM strategy) is answered by the offline analyst in every point (no API key, no
    recorded cassette): the analyst is rule-based and calls no model, so the routings'
    models, fallbacks, budgets and prices are never used; only which roles the routing
    lists can matter (said when even those are the same). Such configurations are then
    also counted as one trial.
    """
    from backtest.engine import run_id_for, run_inputs

    out = _same_run_warnings(points, [run_id_for(p.config) for p in points])
    inputs = [run_inputs(p.config) for p in points]
    for key in sorted({k for p in points for k in p.values}):
        values = {json.dumps(p.values[key]) for p in points}
        if len(values) < 2 or key.rsplit(".", 1)[-1] != "routing":
            continue
        index = re.match(r"strategies\[(\d+)\]\.", key.replace(" ", ""))
        names = {p.config.strategies[int(index.group(1))].name if index else None for p in points}

        sources = {v for found in inputs for v in _reached(found, "source", names).values()}
        if sources != {"offline"}:
            continue
        roles = {json.dumps(_reached(found, "roles", names), sort_keys=True) for found in inputs}
        same = " and list the same roles" if len(roles) == 1 else ""
        out.append(
            f"grid key {key!r} varies the routing file, but every answer of the LLM "
            f"strategies it reaches comes from the offline analyst (no API key set, no "
            f"recorded cassette){same}: its {len(values)} values cannot change which models "
            "answer" + (", nor the result" if same else "") + ". Fix: set the API key or "
            "point cassette at a recorded cassette, or drop the key from [grid]."
        )
    return out


def run_sweep(
    spec: SweepSpec,
    *,
    workers: int | None = None,
    backend: Literal["local", "ray"] = "local",
    address: str | None = None,
    on_done: Callable[[SweepPoint, str], None] | None = None,
) -> pd.DataFrame:
    """Run the grid on validation, the selection on test; write the summaries and selection.

    Args:
        spec: The sweep.
        workers: Processes (default: one per core; 1 runs in this process). With Ray, the
            CPUs of the local instance (ignored with ``address``).
        backend: ``local`` (process pool) or ``ray``.
        address: A Ray cluster's address (``ray``); a local instance is started when None.
        on_done: Called after each run with its point (``point.split`` says which split)
            and status (``done``, ``skipped``, ``failed``).

    Returns:
        The table of runs (one row per run and strategy; ``sweep_runs.parquet``).

    Raises:
        ConfigError: A bad sweep or grid point, or Ray missing or unreachable.
    """
    from backtest.engine import run_id_for

    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend {backend!r}: use local or ray.")
    points = expand_grid(spec)
    warnings = sweep_warnings(points)
    workers = workers or os.cpu_count() or 1
    cassettes = _cassettes([p.config for p in points])
    shards_before = {c: _shards(c) for c in cassettes}
    status: dict[tuple[Split, int], tuple[str, str]] = {}
    ids: dict[tuple[Split, int], str] = {}

    def report(point: SweepPoint, outcome: dict[str, Any]) -> None:
        status[(point.split, point.index)] = (outcome["status"], outcome.get("error", ""))
        if outcome.get("run_id"):
            # The id the run itself computed: a run that records into a cassette changes
            # the cassette's fingerprint for the runs after it.
            ids[(point.split, point.index)] = outcome["run_id"]
        if on_done:
            on_done(point, outcome["status"])

    def pending(batch: Sequence[SweepPoint]) -> tuple[list[SweepPoint], list[SweepPoint]]:
        """The points to run, and the points whose run is the same as one of those
        (two grid values that resolve to one config): they take its outcome instead of
        racing it for the same run directory."""
        todo: list[SweepPoint] = []
        twins: list[SweepPoint] = []
        scheduled: set[str] = set()
        for point in batch:
            run_id = ids[(point.split, point.index)] = run_id_for(point.config)
            if (spec.output_dir / run_id / "summary.json").exists():
                report(point, {"status": "skipped"})
            elif run_id in scheduled:
                twins.append(point)
            else:
                scheduled.add(run_id)
                todo.append(point)
        return todo, twins

    def settle(twins: Sequence[SweepPoint], batch: Sequence[SweepPoint]) -> None:
        first = {ids[(p.split, p.index)]: p for p in batch}
        for point in twins:
            twin = first.get(ids[(point.split, point.index)])
            if twin is None:
                report(point, {"status": "failed", "error": "its twin run changed its id"})
                continue
            state, error = status[(twin.split, twin.index)]
            ids[(point.split, point.index)] = ids[(twin.split, twin.index)]
            report(point, {"status": "skipped" if state == "done" else state, "error": error})

    def scored_on(split: Split, batch: Sequence[SweepPoint]) -> dict[int, _Scored]:
        """Each configuration with a completed run in ``batch``, its seeds read back."""
        out = {}
        for configuration, group in _by_configuration(batch).items():
            done = [p for p in group if status[(split, p.index)][0] != "failed"]
            if done:
                run_ids = [ids[(split, p.index)] for p in done]
                out[configuration] = _score_configuration(spec, done, run_ids, metric)
        return out

    metric = spec.selection.metric
    configurations = _by_configuration(points)
    ray_backend = _RayBackend(workers, address) if backend == "ray" else None
    local_backend = _LocalBackend(workers)
    try:
        spec.output_dir.mkdir(parents=True, exist_ok=True)

        def execute(batch: Sequence[SweepPoint], in_pool: bool = False) -> None:
            todo, twins = pending(batch)
            if ray_backend is not None:
                ray_backend.run(todo, report)
            else:
                local_backend.run(todo, report, in_pool=in_pool)
            settle(twins, todo)

        execute(points)
        validation = scored_on("validation", points)
        trials = distinct_trials(list(validation.values()))
        scores = {c: s.score.mean for c, s in validation.items()}
        chosen = select_top_k(scores, spec.selection.top_k, metric)
        # Only the selected configurations reach the test split: every seed of each.
        test_points = [_on_test(p) for c in chosen for p in configurations[c]]
        best = validation[chosen[0]] if chosen else None
        tried = list(validation.values())
        if test_points and (ray_backend is not None or workers > 1):
            # The test runs go to other processes while this one computes the statistics
            # (which read only the validation runs).
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweep-test") as side:
                running = side.submit(execute, test_points, True)
                statistics = _selection_statistics(spec, tried, trials, best)
                running.result()
        else:
            execute(test_points)
            statistics = _selection_statistics(spec, tried, trials, best)
        test = scored_on("test", test_points)
    finally:
        local_backend.close()
        if ray_backend is not None:
            ray_backend.close()

    for folder in sorted(cassettes):
        if _shards(folder) - shards_before[folder] and len(_shards(folder)) > 1:
            from backtest.llm.cassette import Cassette

            Cassette(folder, "none").merge()

    rows = []
    for point in [*points, *test_points]:
        key = (point.split, point.index)
        state, error = status[key]
        selected = point.configuration in chosen
        rows += _summary_rows(point, ids[key], state, error, selected, metric)
    table = pd.DataFrame(rows)
    # How many configurations the selection chose among, on every row (also in selection.json).
    table["n_configs_tried"] = len(tried)
    _write_atomic(
        spec.output_dir / "sweep_runs.parquet", lambda p: table.to_parquet(p, index=False)
    )
    failed = {
        c: sum(status[("validation", p.index)][0] == "failed" for p in group)
        for c, group in configurations.items()
    }
    summary = _configuration_rows(spec, validation, test, trials, failed, chosen, configurations)
    _write_atomic(
        spec.output_dir / "sweep_summary.parquet", lambda p: summary.to_parquet(p, index=False)
    )
    _write_atomic(spec.output_dir / "sweep_summary.csv", lambda p: summary.to_csv(p, index=False))

    selected = []
    for configuration in chosen:
        scored = validation[configuration]
        group = configurations[configuration]
        on_test = test.get(configuration)
        test_errors = sorted({status[("test", p.index)][1] for p in group} - {""})
        selected.append(
            {
                "configuration": configuration,
                "point": group[0].index,
                "points": [p.index for p in group],
                "run_id": ids[("validation", group[0].index)],
                "run_ids": list(scored.run_ids),
                "test_run_id": ids[("test", group[0].index)],
                "test_run_ids": [ids[("test", p.index)] for p in group],
                "params": {k: v for k, v in group[0].values.items() if k not in REPLICATION_KEYS},
                "replications": {
                    k: [p.values[k] for p in group]
                    for k in group[0].values
                    if k in REPLICATION_KEYS
                },
                "strategy": _strategy_of(spec, group[0].config),
                "distinct_trial": trials[configuration],
                "validation": scored.means,
                "validation_seeds": scored.score.as_dict(),
                "test": on_test.means if on_test else None,
                "test_seeds": on_test.score.as_dict() if on_test else None,
                "test_error": "; ".join(test_errors) or None,
            }
        )
    document = {
        "metric": metric,
        "selection_split": "validation",
        "test_split": "test",
        "n_configs_tried": len(tried),
        "n_configs_failed": len(configurations) - len(tried),
        "n_distinct_trials": len(set(trials.values())),
        "nan_rule": "a seed whose metric is NaN is left out of the mean, spread and interval "
        "and counted in n_nan_seeds; a configuration without a finite seed is never selected",
        "top_k": spec.selection.top_k,
        "selected": selected,
        "deflated_sharpe": statistics["deflated_sharpe"],
        "pbo": statistics["pbo"],
        "spa": statistics["spa"],
        "warnings": warnings,
        "notes": statistics["notes"],
    }
    text = json.dumps(_finite(document), indent=2, sort_keys=True) + "\n"
    _write_atomic(spec.output_dir / "selection.json", lambda p: p.write_text(text))
    return table


def _reached(found: Mapping[str, str], what: str, names: set[str | None]) -> dict[str, str]:
    """The ``<what>`` inputs of the strategies ``names`` (every strategy when None is in it)."""
    return {
        k: v
        for k, v in found.items()
        if k.endswith(f".{what}")
        and (None in names or any(k.startswith(f"strategies.{n}.") for n in names))
    }


def _same_run_warnings(points: Sequence[SweepPoint], run_ids: Sequence[str]) -> list[str]:
    out = []
    for key in sorted({k for p in points for k in p.values}):
        same: dict[tuple[str, str], list[str]] = {}
        for point, run_id in zip(points, run_ids, strict=True):
            others = json.dumps({k: v for k, v in point.values.items() if k != key}, sort_keys=True)
            shown = json.dumps(point.values[key])
            values = same.setdefault((others, run_id), [])
            if shown not in values:
                values.append(shown)
        twins = sorted({" and ".join(v) for v in same.values() if len(v) > 1})
        if twins:
            out.append(
                f"grid key {key!r}: values {'; '.join(twins)} give the same run (the same "
                "resolved config and inputs): they are run once and are one trial. Fix: drop "
                "the duplicates from [grid]."
            )
    return out


def _by_configuration(points: Sequence[SweepPoint]) -> dict[int, list[SweepPoint]]:
    out: dict[int, list[SweepPoint]] = {}
    for point in points:
        out.setdefault(point.configuration, []).append(point)
    return out


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value
