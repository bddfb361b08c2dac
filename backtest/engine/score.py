"""Stage 4, score: the tracks become ``summary.json`` and the run's warnings about its models.

Metrics per strategy (:func:`backtest.metrics.summarize`, against the benchmark, on the
same dates) with its LLM counts; the mean and spread of each seed group; the default
comparison (the first ``drl`` strategy against the first ``hybrid``,
:func:`backtest.compare.compare`); the verdict (``summary["verdict"]``, every question of
:mod:`backtest.questions` the strategies allow, seeds as the unit); per-fold metrics of a
walk-forward run; and the temporal-leakage guard: each model's training cutoff, the
strategies whose window starts before it, and their metrics before and after it
(``cutoff_split``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from backtest import metrics
from backtest.compare import compare
from backtest.config import RunConfig, StrategyConfig
from backtest.data import Bars, Fold
from backtest.engine.replay import _Track
from backtest.policy import Policy
from backtest.questions import Roles, asset_series, run_verdict
from backtest.rates import risk_free_rates

__all__ = ["roles_of", "verdict_context"]


def _score(
    config: RunConfig,
    bars: Bars,
    index: pd.DatetimeIndex,
    tracks: dict[str, _Track],
    tables: dict[str, pa.Table],
    *,
    run_id: str,
    groups: dict[str, list[str]],
    folds: list[Fold] | None,
    first_bar: int,
    policies: list[Policy],
    specs: list[StrategyConfig],
    warnings: list[str],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's summary, and the models whose training cutoff falls after its window starts.

    Args:
        config: The run's configuration.
        bars: The run's bars.
        index: The timestamps of the traded bars (``first_bar`` to the range's end).
        tracks: Each strategy's track over ``index``.
        tables: The ``ledger`` and ``llm_calls`` tables of ``tracks``.
        run_id: The run id.
        groups: The seed groups (``{name: [<name>@0, ...]}``).
        folds: The walk-forward folds, or None.
        first_bar: The first bar traded.
        policies: The policies, asked which models they used.
        specs: Their strategy entries, in the same order.
        warnings: Where to append the leakage warnings.

    Returns:
        ``summary`` (not yet JSON-safe) and the leakage entries for the manifest.
    """
    calls = tables["llm_calls"]
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
            folds, tracks, bars.frame.index, first_bar, ppy, risk_free, config.benchmark
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
            exposure=track.exposure[part],
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
        stats: dict[str, Any] = stats_of(name, track, slice(None))
        stats["llm_cost_usd"] = float(track.llm_cost.sum())
        stats["llm_calls"] = int(track.llm_calls.sum())
        stats.update(_llm_counts(calls, name))
        stats["abstains"] = int(track.abstain.sum())
        stats["decisions"] = len(track.decisions)
        stats["final_equity_usd"] = float(track.equity[-1])
        stats["risk_events"] = sum(1 for e in track.risk_event if e)
        stats["stops"] = sum(1 for e in track.exit_reason if e)
        if track.policy_report is not None:
            stats["policy_report"] = track.policy_report
        summary["strategies"][name] = stats
    summary["seed_groups"] = _seed_groups(groups, summary["strategies"])
    summary["llm_sources"] = _llm_sources(policies, specs, calls)
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
    roles = roles_of(config)
    series = asset_series(
        tables["ledger"],
        asset=bars.symbol,
        initial_capital_usd=config.env.initial_capital_usd,
        risk_free=risk_free,
    )
    summary["verdict"] = run_verdict(
        [series],
        roles,
        periods_per_year=ppy,
        seed=config.seed,
        min_seeds=config.verdict.min_seeds,
        alpha=config.verdict.alpha,
        reps=config.verdict.reps,
    )
    summary["verdict_context"] = verdict_context(config, roles, policies, specs)
    return summary, leakage


def roles_of(config: RunConfig) -> Roles:
    """Who plays which part in the verdict: listed strategies by kind (controls excluded)."""
    specs = [s for s in config.strategies if "control" not in s.params]
    return Roles(
        hybrids=tuple(s.name for s in specs if s.kind == "hybrid"),
        drl=next((s.name for s in specs if s.kind == "drl"), None),
        llms=tuple(s.name for s in specs if s.kind == "llm"),
        benchmark=config.benchmark,
    )


def verdict_context(
    config: RunConfig, roles: Roles, policies: list[Policy], specs: list[StrategyConfig]
) -> dict[str, Any]:
    """What the verdict compared against: the DRL baseline's budget, the thresholds.

    The budget is read from the DRL policy's own resolved ``settings`` (defaults filled
    in by the strategy, not restated here).
    """
    members = [
        (spec, policy)
        for spec, policy in zip(specs, policies, strict=True)
        if roles.drl is not None and spec.name.partition("@")[0] == roles.drl
    ]
    settings = getattr(members[0][1], "settings", None) if members else None
    budget = None
    if isinstance(settings, dict):
        budget = (
            f"{settings.get('algo')}, {int(settings.get('timesteps', 0)):,} timesteps, "
            f"{settings.get('n_envs', 1)} env(s), {len(members)} seed(s)"
        )
    return {
        "drl": roles.drl,
        "drl_budget": budget,
        "min_seeds": config.verdict.min_seeds,
        "alpha": config.verdict.alpha,
        "reps": config.verdict.reps,
        "controls": config.controls,
    }


def _offline_warnings(calls: pa.Table, names: Iterable[str]) -> list[str]:
    """One warning per strategy some of whose LLM answers came from the offline analyst."""
    warnings: list[str] = []
    if calls.num_rows:
        offline = pc.equal(calls["cache"], "offline")
        for name in names:
            mine = pc.and_(offline, pc.equal(calls["strategy"], name))
            count = pc.sum(pc.cast(mine, pa.int64())).as_py() or 0
            if count:
                warnings.append(
                    f"strategy {name!r}: {count} LLM answer(s) came from the offline analyst "
                    "(rule-based, $0, no model was asked); set the provider's API key to use "
                    "real models"
                )
    return warnings


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


def _llm_counts(calls: pa.Table, name: str) -> dict[str, Any]:
    """Retries, fallbacks, failed calls and unusable answers (by reason) of one strategy."""
    if not calls.num_rows:
        return {
            "llm_retries": 0,
            "llm_fallbacks": 0,
            "llm_failed_calls": 0,
            "llm_unusable_answers": 0,
            "abstain_reasons": {},
        }
    mine = calls.filter(pc.equal(calls["strategy"], name))

    def count(mask: pa.ChunkedArray) -> int:
        return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)

    reasons: dict[str, int] = {}
    for reason in mine["answer_error"].to_pylist():
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
    return {
        "llm_retries": int(pc.sum(mine["retries"]).as_py() or 0),
        "llm_fallbacks": count(pc.not_equal(pc.fill_null(mine["fallback_from"], ""), "")),
        "llm_failed_calls": count(pc.not_equal(pc.fill_null(mine["error"], ""), "")),
        "llm_unusable_answers": sum(reasons.values()),
        "abstain_reasons": dict(sorted(reasons.items())),
    }


def _llm_sources(
    policies: list[Policy], specs: list[StrategyConfig], calls: pa.Table
) -> dict[str, str]:
    """Per LLM strategy, where its answers came from, in words, with how they were served.

    E.g. ``"SmolLM2-135M-Instruct (Q4_1) (local, ...): replayed (604 answers from the
    cassette)"``; the terminal and the report print it, so nobody mistakes a replay, a
    recording or the offline analyst for one another.
    """
    out: dict[str, str] = {}
    for policy, spec in zip(policies, specs, strict=True):
        describe = getattr(policy, "describe_source", None)
        if not callable(describe):
            continue
        mine = calls.filter(pc.equal(calls["strategy"], spec.name)) if calls.num_rows else calls
        caches = mine["cache"].to_pylist() if mine.num_rows else []
        failed = sum(1 for e in (mine["error"].to_pylist() if mine.num_rows else []) if e)
        hits = caches.count("hit")
        fresh = caches.count("recorded") + caches.count("live")
        if not caches:
            how = "no call"
        elif caches.count("offline") == len(caches):
            how = f"{len(caches)} rule-based answers"
        elif fresh == 0:
            how = f"replayed ({hits} answers from the cassette)"
        elif hits == 0:
            how = f"asked live ({fresh} answers)"
        else:
            how = f"{hits} answers replayed from the cassette, {fresh} asked live"
        if failed:
            how += f", {failed} failed"
        out[spec.name] = f"{describe()}: {how}"
    return out


def _seed_groups(
    groups: dict[str, list[str]], stats: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Mean and spread (``ddof=1``) of every numeric metric across a group's members.

    The NaN rule of the verdict, ``backtest compare`` and sweeps: a member whose metric is
    NaN is left out of the mean and spread and counted in ``n_nan_seeds``.
    """
    out: dict[str, dict[str, Any]] = {}
    for group, members in groups.items():
        keys = [k for k, v in stats[members[0]].items() if isinstance(v, int | float)]
        mean: dict[str, float | None] = {}
        std: dict[str, float | None] = {}
        nan: dict[str, int] = {}
        for key in keys:
            values = np.array([stats[m].get(key) for m in members], dtype=np.float64)
            finite = values[np.isfinite(values)]
            mean[key] = float(np.mean(finite)) if finite.size else None
            std[key] = float(np.std(finite, ddof=1)) if finite.size > 1 else None
            nan[key] = int(values.size - finite.size)
        out[group] = {"members": list(members), "mean": mean, "std": std, "n_nan_seeds": nan}
    return out


def _default_pairs(specs: tuple[StrategyConfig, ...]) -> list[tuple[str, str]]:
    """The first DRL strategy against the first hybrid, when there are both."""
    drl = next((s.name for s in specs if s.kind == "drl"), None)
    hybrid = next((s.name for s in specs if s.kind == "hybrid"), None)
    return [] if drl is None or hybrid is None else [(drl, hybrid)]


def _fold_summaries(
    folds: list[Fold],
    tracks: dict[str, _Track],
    timestamps: pd.DatetimeIndex,
    first_bar: int,
    ppy: float,
    risk_free: float | np.ndarray,
    benchmark: str | None,
) -> list[dict[str, Any]]:
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


def _models_used(policies: list[Policy], specs: list[StrategyConfig]) -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for policy, spec in zip(policies, specs, strict=True):
        models_used = getattr(policy, "models_used", None)
        if callable(models_used):
            used[spec.name] = sorted(set(models_used()))
    return used


def _model_cutoffs(models: list[str]) -> dict[str, str | None]:
    """Each model's training cutoff over every price table (None: unknown).

    A published ``training_cutoff`` (the latest, if tables differ) wins; without one, the
    latest release month bounds it (``cutoff_upper_bound``).
    """
    if not models:  # no LLM strategy: the price tables are not even imported
        return {}
    from backtest.errors import PricingError
    from backtest.llm.pricing import load_tables

    tables = list(load_tables().values())
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
