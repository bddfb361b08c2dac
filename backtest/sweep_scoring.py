"""Scoring a sweep's configurations and writing down the selection.

A configuration is scored by its seeds (:mod:`backtest.seed_scores`) on one split;
:func:`select_top_k` ranks configurations by the selection metric, :func:`distinct_trials`
groups configurations whose runs returned the same, and the best one's Deflated Sharpe, PBO
and SPA (:mod:`backtest.selection`) go into ``selection.json``. The row builders make
``sweep_runs.parquet`` (per run and strategy) and ``sweep_summary.parquet`` (per
configuration).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.seed_scores import (
    CI_METHOD,
    REPLICATION_KEYS,
    SeedScore,
    member_returns,
    member_values,
    score_seeds,
    trial_fingerprint,
)
from backtest.sweep_plan import METRIC_DIRECTIONS, SweepPoint, SweepSpec, _baseline_of, _strategy_of

__all__ = ["distinct_trials", "select_top_k"]


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
