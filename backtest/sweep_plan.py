"""A sweep's plan: the sweep file, its grid of points, and what a grid key cannot change.

:func:`load_sweep` reads and checks the sweep file (:class:`SweepSpec`, with its
:class:`SelectionConfig`); :func:`expand_grid` turns the grid into :class:`SweepPoint` runs
(the Cartesian product in sorted key order, each point's configuration its values without
the replication key ``seed``); :func:`sweep_warnings` says, before any run, when a grid key
cannot change the result. The sweep's rules are in :mod:`backtest.sweep`.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from backtest.config import Frozen, RunConfig, explain_validation_error, load_experiment, read_toml
from backtest.errors import ConfigError
from backtest.seed_scores import REPLICATION_KEYS

__all__ = [
    "METRIC_DIRECTIONS",
    "SelectionConfig",
    "Split",
    "SweepPoint",
    "SweepSpec",
    "expand_grid",
    "load_sweep",
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
            policy, e.g. ``drl_a2c``); when not set, ``buy_and_hold`` (the runs' default
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


def _strategy_of(spec: SweepSpec, config: RunConfig) -> str:
    return spec.selection.strategy or config.strategies[0].name


def _baseline_of(spec: SweepSpec) -> str:
    return spec.selection.baseline or "buy_and_hold"


def _on_test(point: SweepPoint) -> SweepPoint:
    splits = point.config.splits.model_copy(update={"evaluate": "test"})
    return replace(point, config=point.config.model_copy(update={"splits": splits}), split="test")


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
