"""Several assets in one experiment: one run per asset, one verdict over all of them.

An experiment whose ``data.path`` lists several files runs every strategy and seed on each
(each asset is an ordinary run, in its own run directory, with its own report and its own
single-asset verdict), then pools them: :func:`backtest.questions.run_verdict` resamples
assets, then seeds, then blocks of bars, and writes one row per asset beside the pooled
one. The pooled record is a small directory ``<output_dir>/<pooled run id>/`` holding
``summary.json`` (``assets``: each asset's run id, directory and metrics; ``verdict``;
``verdict_context``) and ``manifest.json`` (the config and the asset runs); its run id is
the sha256 of the asset run ids, so it changes whenever any of them does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from backtest.config import RunConfig
from backtest.engine.score import roles_of
from backtest.engine.write import _json_safe, _write_run_dir
from backtest.errors import ConfigError
from backtest.questions import asset_series, run_verdict
from backtest.rates import risk_free_rates

__all__ = ["POOLED_MARKER", "pooled_run"]

#: ``summary.json`` of a pooled directory carries this key (reports tell the kinds apart).
POOLED_MARKER = "assets"


def pooled_run(
    config: RunConfig,
    run_one: Callable[[RunConfig], Any],
    *,
    write: bool,
) -> tuple[str, Path, dict[str, Any], dict[str, Any], dict[str, pa.Table]]:
    """Run ``config`` once per asset with ``run_one`` and pool the verdict.

    Returns:
        ``(run_id, run_dir, summary, manifest, tables)`` of the pooled record; ``tables``
        are the asset runs' tables concatenated, with an ``asset`` column first.
    """
    results = []
    for path in config.data.paths:
        one = config.model_copy(update={"data": config.data.model_copy(update={"path": path})})
        results.append(run_one(one))
    symbols = [r.summary["symbol"] for r in results]
    if len(set(symbols)) != len(symbols):
        raise ConfigError(
            f"data.path: two files hold the same symbol ({', '.join(symbols)}); each asset "
            "must be a different market. Fix: list each asset once."
        )
    ppys = [float(r.summary["periods_per_year"]) for r in results]
    if max(ppys) > 1.01 * min(ppys):
        raise ConfigError(
            f"data.path: the assets' bars are not on one clock (bars a year: "
            f"{', '.join(f'{s} {p:.1f}' for s, p in zip(symbols, ppys, strict=True))}); a "
            "pooled Sharpe ratio needs one. Fix: pool assets of the same frequency and "
            "calendar, or set periods_per_year."
        )
    series = []
    for result in results:
        # The traded bars, in order (the ledger holds each strategy's rows in time order).
        stamps = pc.unique(result.tables["ledger"]["timestamp"]).to_pandas()
        rf = risk_free_rates(config.risk_free_rate, pd.DatetimeIndex(stamps))
        series.append(
            asset_series(
                result.tables["ledger"],
                asset=result.summary["symbol"],
                initial_capital_usd=config.env.initial_capital_usd,
                risk_free=rf,
            )
        )
    roles = roles_of(config)
    verdict = run_verdict(
        series,
        roles,
        periods_per_year=sum(ppys) / len(ppys),
        seed=config.seed,
        min_seeds=config.verdict.min_seeds,
        alpha=config.verdict.alpha,
        reps=config.verdict.reps,
    )
    run_ids = [r.run_id for r in results]
    run_id = hashlib.sha256(("pooled\0" + "\0".join(run_ids)).encode()).hexdigest()[:16]
    summary: dict[str, Any] = {
        "run_id": run_id,
        "symbol": "+".join(symbols),
        POOLED_MARKER: {
            r.summary["symbol"]: {
                "run_id": r.run_id,
                "run_dir": str(r.run_dir),
                "start": r.summary["start"],
                "end": r.summary["end"],
                "bars": r.summary["bars"],
                "strategies": r.summary["strategies"],
                "seed_groups": r.summary.get("seed_groups", {}),
            }
            for r in results
        },
        "periods_per_year": sum(ppys) / len(ppys),
        "benchmark": config.benchmark,
        "verdict": verdict,
        # The same config on every asset: the first run's context is every run's.
        "verdict_context": results[0].summary["verdict_context"],
    }
    manifest = {
        "run_id": run_id,
        "name": config.name,
        "seed": config.seed,
        "config": json.loads(config.model_dump_json()),
        "asset_runs": dict(zip(symbols, run_ids, strict=True)),
        "warnings": [
            f"{symbol}: {w}"
            for r, symbol in zip(results, symbols, strict=True)
            for w in r.manifest.get("warnings", [])
        ],
    }
    tables = {
        name: pa.concat_tables(
            [
                r.tables[name].add_column(0, "asset", pa.array([s] * r.tables[name].num_rows))
                for r, s in zip(results, symbols, strict=True)
            ],
            promote_options="default",
        )
        for name in ("ledger", "decisions", "llm_calls")
    }
    run_dir = Path(config.output_dir) / run_id
    summary = _json_safe(summary)
    if write:
        _write_run_dir(run_dir, {}, summary, manifest)  # no tables: JSON only
    return run_id, run_dir, summary, manifest, tables
