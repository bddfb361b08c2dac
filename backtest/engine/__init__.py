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
                       LLM counts: ``llm_calls``, ``llm_retries``, ``llm_fallbacks``
                       (breaker skips included), ``llm_failed_calls``, ``abstains``,
                       ``llm_unusable_answers`` and ``abstain_reasons`` (answers that came
                       back but were cut off, refused, not JSON or off-schema, by reason);
                       ``seed_groups`` (mean and std of each metric across the members
                       ``<name>@<k>`` of a strategy run with several seeds);
                       ``comparisons`` (the first ``drl`` strategy against the first
                       ``hybrid``, see :mod:`backtest.compare`; empty without both);
                       ``folds`` (per-fold metrics, walk-forward runs only);
                       ``cutoff_split`` (below); per strategy, ``policy_report``:
                       what the policy's optional ``run_report()`` returned after its
                       replay (the DRL agent's training curves, the hybrid's threshold
                       crossings; ``{"folds": [...]}`` in walk-forward runs)

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
sha256 and every other input (:func:`run_inputs`, recorded in the manifest as ``inputs``):
the files the strategies read, news and documents, the LLM source with the cassette's
fingerprint, and the code (``docs/provenance.md``). The same inputs land in the same
directory with byte-identical ledgers, and a complete run there is reused rather than redone;
a run that reached a live provider is never overwritten (:mod:`backtest.engine.reuse`).

The package is the stages a run goes through, one module each, in the order data flows
(:func:`run` below reads as them):

``source``      what to run: an experiment file, a config or a dict; bars from a file or a
                pandas DataFrame (``run(experiment, data=...)``)
``plan``        config → strategies and seeds (``member_seed``), policies (``build_policy``),
                bars, the evaluated range or the walk-forward folds
``provenance``  the run id and the hashes of its inputs (``run_id_for``, ``run_inputs``;
                the code's part in ``code``)
``reuse``       a complete run with the same inputs read back; live runs never overwritten
``replay``      the bar loop: features, the policies' market view, the LLM cost estimate,
                one track per strategy (fold by fold for walk-forward runs)
``track``       a strategy's per-bar record, its LLM calls kept as columns
``score``       metrics, seed groups, comparisons, fold summaries, LLM counts, the
                temporal-leakage guard
``write``       ledger, decisions and LLM-call tables, manifest, the run directory
``result``      :class:`RunResult`: the tables, the nested summary and its tidy views

There is no ``train`` module: a DRL policy trains (or loads its cached model) itself when the
replay binds and resets it. Risk-free rates are read by :mod:`backtest.rates`, which
:mod:`backtest.compare` shares.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from backtest.config import RunConfig
from backtest.engine.plan import (
    _evaluation_range,
    _folds,
    _load_bars,
    _members,
    build_policy,
    member_seed,
)
from backtest.engine.provenance import _identity, run_id_for, run_inputs
from backtest.engine.replay import _llm_cost_estimate, _market, _replay_all
from backtest.engine.result import RunResult
from backtest.engine.reuse import calls_reached_live, load_run, reached_live, redo_dir
from backtest.engine.score import _offline_warnings, _score
from backtest.engine.source import Experiment, resolve_experiment
from backtest.engine.write import (
    DECISION_SCHEMA,
    LEDGER_COLUMNS,
    LEDGER_SCHEMA,
    LLM_CALL_COLUMNS,
    LLM_CALL_SCHEMA,
    _json_safe,
    _manifest,
    _tables,
    _write_run_dir,
)
from backtest.env import TradingEnv
from backtest.rates import risk_free_rates

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


def run(
    experiment: Experiment,
    *,
    data: pd.DataFrame | str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    progress: bool = False,
    write: bool = True,
    on_estimate: Callable[[dict[str, Any]], None] | None = None,
    force: bool = False,
) -> RunResult:
    """Run every strategy of an experiment over the same bars and write the run directory.

    A complete run with the same inputs (the same run id) is read back, not redone
    (``RunResult.reused``), unless ``force``; a run that reached a live provider is never
    overwritten: its redo goes to ``<run_id>.<n>`` (:mod:`backtest.engine.reuse`).

    Args:
        experiment: A :class:`~backtest.config.RunConfig`, a dict of its keys, or the path
            of an experiment ``.toml`` file (:mod:`backtest.engine.source`).
        data: Bars to use instead of the experiment's ``data.path``: a file or dataset
            path, or a pandas DataFrame of OHLCV bars (validated like an imported file).
        overrides: ``dotted.key=value`` strings, as ``--set`` (a file or a dict only).
        progress: Show a progress bar per strategy (for the CLI).
        write: Write the run directory (``False`` keeps everything in memory, reuses
            nothing, and the result's ``run_dir`` is None).
        on_estimate: Called with the LLM cost estimate (``manifest["llm_cost_estimate"]``)
            before any strategy runs, when some strategy calls LLMs.
        force: Redo a complete run with the same inputs.

    Returns:
        The ledger, decisions, LLM calls, summary and manifest as objects.

    Raises:
        BacktestError: Bad data or configuration, before any strategy runs.
    """
    with resolve_experiment(experiment, data=data, overrides=overrides, write=write) as config:
        result = _run(config, progress=progress, write=write, on_estimate=on_estimate, force=force)
    if not write:
        return dataclasses.replace(result, run_dir=None)
    return result


def _run(
    config: RunConfig,
    *,
    progress: bool,
    write: bool,
    on_estimate: Callable[[dict[str, Any]], None] | None,
    force: bool,
) -> RunResult:
    """:func:`run` of a resolved config."""
    if not isinstance(config.data.path, str):
        # Several assets: one ordinary run each, then the verdict pooled over them.
        from backtest.engine.assets import pooled_run

        def run_one(one: RunConfig) -> RunResult:
            return _run(one, progress=progress, write=write, on_estimate=on_estimate, force=force)

        run_id, run_dir, summary, manifest, tables = pooled_run(config, run_one, write=write)
        return RunResult(
            run_id=run_id, run_dir=run_dir, tables=tables, summary=summary, manifest=manifest
        )
    # The identity first (before any call can add to a cassette): a complete run with the
    # same inputs is reused, a live one is never overwritten.
    data_sha, inputs, run_id = _identity(config)
    run_dir = Path(config.output_dir) / run_id
    if write and (run_dir / "summary.json").is_file():
        done = None if force else load_run(run_dir, inputs)
        if done is not None:
            return RunResult(run_id=run_id, run_dir=run_dir, reused=True, **done)
        if reached_live(run_dir):
            run_dir = redo_dir(run_dir)
    # Plan. Strategies first: a mistake in their parameters (a missing routing file, an
    # unpriced model, an empty replay-only cassette) is reported before any bar is read.
    members, groups = _members(config)
    specs = [spec for spec, _, _ in members]
    policies = [build_policy(spec, index) for spec, index, _ in members]  # checks them all
    seeds = [seed for _, _, seed in members]
    bars = _load_bars(config)
    env_config = config.env.model_copy(update={"risk": config.risk})
    start, stop = _evaluation_range(config, bars)
    folds = _folds(config, bars)

    # Replay, after the LLM cost estimate.
    features, view = _market(bars, Path(config.data.file))
    warnings: list[str] = []
    probe = TradingEnv(bars, env_config, start=start, end=stop, features=features)
    estimate = _llm_cost_estimate(policies, specs, view, probe.first_bar, probe.end_bar, warnings)
    if estimate["per_strategy"] and on_estimate is not None:
        on_estimate(estimate)
    tracks, first_bar = _replay_all(
        members,
        policies,
        bars,
        features,
        view,
        env_config,
        (start, stop),
        folds,
        progress,
        warnings,
        carry_position=bool(
            config.splits.walk_forward and config.splits.walk_forward.carry_position
        ),
    )

    # Score, from the tables the run directory will hold (the ledger, the LLM calls).
    index = bars.frame.index[first_bar:stop]
    tables = _tables(tracks, index, bars.frame["close"].to_numpy()[first_bar:stop])
    warnings += _offline_warnings(tables["llm_calls"], tracks)
    summary, leakage = _score(
        config,
        bars,
        index,
        tracks,
        tables,
        run_id=run_id,
        groups=groups,
        folds=folds,
        first_bar=first_bar,
        policies=policies,
        specs=specs,
        warnings=warnings,
    )
    summary = _json_safe(summary)

    # Write.
    manifest = _manifest(
        config,
        bars,
        index,
        run_id=run_id,
        data_sha=data_sha,
        inputs=inputs,
        strategy_seeds=dict(zip([s.name for s in specs], seeds, strict=True)),
        warnings=warnings,
        estimate=estimate,
        leakage=leakage,
        reached_live=calls_reached_live(tables["llm_calls"]),
    )
    if write:
        _write_run_dir(run_dir, tables, summary, manifest)
    return RunResult(
        run_id=run_id, run_dir=run_dir, tables=tables, summary=summary, manifest=manifest
    )
