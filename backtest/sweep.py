"""Sweeps: one base experiment, a grid of overrides, every point a run; resumable and honest.

A sweep file (TOML) names a base experiment and a grid of dotted keys, each with a list of
values (the same keys ``--set`` takes), and says how the best configuration is chosen::

    base = "quickstart.toml"          # relative to this file
    output_dir = "../runs/sweep-fees" # where the runs, sweep_summary.parquet, selection.json go
    strategy = "hybrid"               # the strategy being tuned (default: the first one)
    metric = "sharpe"                 # what the selection ranks by (default sharpe)
    top_k = 1                         # how many configurations reach the test split
    baseline = "drl_a2c"              # SPA benchmark: a strategy of the runs (buy_and_hold)

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

import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from backtest.errors import ConfigError
from backtest.seed_scores import REPLICATION_KEYS
from backtest.sweep_backends import (  # noqa: F401 (re-exported: the old home of these names)
    Report,
    _cassettes,
    _check_reachable,
    _execute,
    _execute_in,
    _LocalBackend,
    _RayBackend,
    _shards,
    _strategy_modules,
    _watch_parent,
)
from backtest.sweep_plan import (  # noqa: F401 (re-exported: the old home of these names)
    _SWEEP_KEYS,
    METRIC_DIRECTIONS,
    SelectionConfig,
    Split,
    SweepPoint,
    SweepSpec,
    _baseline_of,
    _by_configuration,
    _on_test,
    _reached,
    _same_run_warnings,
    _strategy_of,
    expand_grid,
    load_sweep,
    sweep_warnings,
)
from backtest.sweep_scoring import (  # noqa: F401 (re-exported: the old home of these names)
    _SUMMARY_METRICS,
    _configuration_rows,
    _finite,
    _per_period_sharpe,
    _score_configuration,
    _Scored,
    _selection_statistics,
    _summary_rows,
    distinct_trials,
    select_top_k,
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


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)


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
