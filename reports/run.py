"""The run report: ``backtest report RUN_DIR`` writes ``RUN_DIR/report.html``.

One self-contained page (see :mod:`reports._render`) built from the run directory alone
(``manifest.json``, ``summary.json``, ``ledger.parquet``, ``decisions.parquet``,
``llm_calls.parquet``), so a report can be rebuilt anywhere from the artifacts:

- header: experiment, data, period, run id and hashes, and every warning in plain words
  (the manifest's warnings, temporal leakage, offline analyst, budget stops, failed calls);
- metrics of every strategy and the benchmark on the same dates (``summary.json``, computed
  by :mod:`backtest.metrics`);
- equity net and gross of LLM cost, drawdowns, rolling Sharpe, monthly returns;
- price with each strategy's fills, and a decision timeline whose hover shows the action,
  confidence, the agent signals and the start of the reasoning;
- the LLM cost panel: per strategy, role and model; P&L net of LLM cost; the same tokens
  re-priced at the Western reference table with the savings multiple;
- DRL-only vs hybrid (``summary["comparisons"]``), seed groups, metrics split at each model's
  training cutoff and walk-forward folds, when the run has them;
- inside the DRL strategies (:mod:`reports.training`): training and validation curves, and
  the hybrid combiner's threshold crossings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from backtest.errors import BacktestError
from reports import figures, risk, training
from reports._render import figure_json, render_template, write_atomic
from reports.cost import cost_panel
from reports.timeline import decision_marks, decision_timeline

__all__ = ["RUN_FILES", "load_run", "run_report_html", "verdict_rows", "write_run_report"]

#: Files a run directory must hold for a report.
RUN_FILES = ("manifest.json", "summary.json", "ledger.parquet", "decisions.parquet")

#: The first table's columns, chosen to fit 1280 px: (summary key, header, kind). ``var_95``
#: and ``cvar_95`` come from :mod:`reports.risk`; every other key from ``summary.json``.
_HEADLINE = (
    ("total_return", "Return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("max_drawdown", "Max DD", "pct"),
    ("annual_volatility", "Vol.", "pct"),
    ("var_95", "VaR 95%", "pct"),
    ("cvar_95", "CVaR 95%", "pct"),
    ("exposure", "|Exp.|", "pct"),
    ("trade_count", "Trades", "int"),
    ("llm_cost_usd", "LLM $", "usd"),
    ("final_equity_usd", "Equity", "usd0"),
)

#: Every metric, in the table under "All metrics": (summary key, header, kind).
_METRICS = (
    ("total_return", "Total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("calmar", "Calmar", "num"),
    ("annual_volatility", "Volatility", "pct"),
    ("alpha", "Alpha", "pct"),
    ("beta", "Beta", "num"),
    ("information_ratio", "Info. ratio", "num"),
    ("exposure", "Mean |exposure|", "pct"),
    ("time_in_market", "Time in market", "pct"),
    ("turnover", "Turnover /yr", "num"),
    ("trade_count", "Trades", "int"),
    ("fees_usd", "Fees", "usd"),
    ("llm_cost_usd", "LLM cost", "usd"),
    ("llm_calls", "LLM calls", "int"),
    ("abstains", "Abstains", "int"),
    ("final_equity_usd", "Final equity", "usd"),
)


def verdict_rows(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict for the report: the headline rows (pooled, Sharpe, after LLM cost), all
    rows, context."""
    entries = summary.get("verdict") or []
    headline = [
        e
        for e in entries
        if e.get("asset") == "pooled"
        and e.get("metric") == "sharpe"
        and e.get("basis") != "before cost"
    ]
    return {"headline": headline, "all": entries, "context": summary.get("verdict_context") or {}}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise BacktestError(
            f"{path}: cannot read ({exc}). Fix: rerun the experiment; a run directory is "
            "written atomically, so a damaged file means it was edited or truncated."
        ) from exc


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Read a run directory into ``manifest``, ``summary`` and pandas ``ledger``,
    ``decisions`` and ``llm_calls``.

    Raises:
        BacktestError: A file is missing or unreadable, naming it.
    """
    path = Path(run_dir)
    missing = [name for name in RUN_FILES if not (path / name).is_file()]
    if missing:
        raise BacktestError(
            f"{path}: not a complete run directory (missing {', '.join(missing)}). Fix: pass "
            "a directory written by `backtest run` (runs/<run-id>/)."
        )
    out: dict[str, Any] = {
        "manifest": _read_json(path / "manifest.json"),
        "summary": _read_json(path / "summary.json"),
    }
    for name in ("ledger", "decisions", "llm_calls"):
        file = path / f"{name}.parquet"
        try:
            out[name] = pq.read_table(file).to_pandas() if file.exists() else pd.DataFrame()
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise BacktestError(f"{file}: cannot read ({exc}). Fix: rerun the experiment.") from exc
    return out


# ------------------------------------------------------------------------- sections


def _order(
    manifest: Mapping[str, Any], summary: Mapping[str, Any], ledger: pd.DataFrame
) -> list[str]:
    """Strategies in the experiment's order (seed members ``name@k`` by k), then the rest.

    ``summary.json`` sorts its keys, so its order is alphabetical, not the user's.
    """
    present = [str(n) for n in pd.unique(ledger["strategy"])]
    names: list[str] = []
    for spec in (manifest.get("config") or {}).get("strategies") or []:
        name = str(spec.get("name", ""))
        members = [n for n in present if n.startswith(f"{name}@") and n[len(name) + 1 :].isdigit()]
        for n in ([name] if name in present else []) + sorted(
            members, key=lambda n: int(n.rsplit("@", 1)[1])
        ):
            if n not in names:
                names.append(n)
    benchmark = summary.get("benchmark")
    if benchmark in present and benchmark not in names:
        names.insert(0, str(benchmark))
    names += [n for n in present if n not in names]
    return names


def _warnings(
    manifest: Mapping[str, Any], decisions: pd.DataFrame, calls: pd.DataFrame
) -> list[str]:
    # The engine words the temporal-leakage, offline-analyst, ruin and cost-estimate
    # warnings itself (manifest["warnings"]); the rest is read off the ledgers.
    out = [str(w) for w in manifest.get("warnings", [])]
    if not decisions.empty:
        reasons = decisions["reasoning"].fillna("")
        stops = decisions[reasons.str.contains("budget:", regex=False)]
        for name, rows in stops.groupby("strategy", sort=False):
            out.append(
                f"budget: strategy {name!r} stopped calling LLMs at {len(rows)} decision(s) "
                "(the run's hard cap would have been passed); those decisions abstained."
            )
    if not calls.empty and "error" in calls:
        failed = calls[calls["error"].fillna("") != ""]
        for name, rows in failed.groupby("strategy", sort=False):
            kinds = rows["error"].str.split(":").str[0].value_counts()
            listed = ", ".join(f"{k} ×{v}" for k, v in kinds.head(5).items())
            out.append(
                f"LLM failures: strategy {name!r} had {len(rows)} failed call(s) ({listed}); "
                "see the LLM cost panel for fallbacks and abstains."
            )
        misses = calls[calls["cache"].fillna("") == "miss"] if "cache" in calls else calls[:0]
        if len(misses):
            out.append(
                f"cassette: {len(misses)} call(s) were not in the cassette and were made live."
            )
    return out


def _metrics_rows(
    summary: Mapping[str, Any],
    names: list[str],
    columns: tuple[tuple[str, str, str], ...],
    extra: Mapping[str, Mapping[str, float]],
) -> list[dict[str, Any]]:
    rows = []
    benchmark = summary.get("benchmark")
    for name in names:
        stats = {**summary.get("strategies", {}).get(name, {}), **extra.get(name, {})}
        rows.append(
            {
                "name": name,
                "benchmark": name == benchmark,
                "cells": [(kind, stats.get(key)) for key, _, kind in columns],
            }
        )
    return rows


def _drawdown_rows(equity: pd.DataFrame, names: list[str], short: bool) -> list[dict[str, Any]]:
    """The five worst drawdowns of every strategy, for the drawdown table."""
    size = 10 if short else 16
    rows = []
    for name in names:
        for rank, d in enumerate(risk.worst_drawdowns(equity[name].dropna()), start=1):
            rows.append(
                {
                    "strategy": name,
                    "rank": rank,
                    **{
                        k: None if d[k] is None else str(d[k].tz_convert(None))[:size]
                        for k in ("peak", "start", "trough", "recovery")
                    },
                    "depth": d["depth"],
                    "bars": d["bars"],
                }
            )
    return rows


def _fills(ledger: pd.DataFrame, names: list[str]) -> dict[str, pd.DataFrame]:
    """Fills and stop/target exits per strategy, in ``names`` order (colours follow it)."""
    out = {}
    groups = dict(tuple(ledger.groupby("strategy", sort=False)))
    for name in names:
        rows = groups[name]
        opened = rows[rows["fill_units"].fillna(0.0) != 0.0]
        exits = rows[rows["exit_units"].fillna(0.0) != 0.0]
        frame = pd.concat(
            [
                pd.DataFrame(
                    {
                        "timestamp": opened["timestamp"],
                        "units": opened["fill_units"],
                        "price": opened["fill_price"],
                        "why": "",
                    }
                ),
                pd.DataFrame(
                    {
                        "timestamp": exits["timestamp"],
                        "units": exits["exit_units"],
                        "price": exits["exit_price"],
                        "why": "(" + exits["exit_reason"].fillna("exit") + ")",
                    }
                ),
            ]
        ).sort_values("timestamp", kind="stable")
        out[str(name)] = frame
    return out


def _rolling_window(n: int, periods_per_year: float) -> int:
    window = max(20, round(periods_per_year / 4))
    return max(5, min(window, n // 3 or 5))


def _daily(manifest: Mapping[str, Any]) -> bool:
    """True for daily or slower bars (dates without a time of day)."""
    return str((manifest.get("data") or {}).get("frequency", "")).endswith(("d", "w", "mo", "M"))


def _period(summary: Mapping[str, Any], frequency: str) -> tuple[str, str]:
    """Start and end as dates for daily or slower bars, else to the minute (UTC)."""
    size = 10 if frequency.endswith(("d", "w", "mo", "M")) else 16
    return (
        str(summary.get("start", ""))[:size].replace("T", " "),
        str(summary.get("end", ""))[:size].replace("T", " "),
    )


def run_report_html(run_dir: str | Path) -> str:
    """The HTML text of a run's report (see the module docstring for its content)."""
    run = load_run(run_dir)
    manifest, summary = run["manifest"], run["summary"]
    ledger, decisions, calls = run["ledger"], run["decisions"], run["llm_calls"]
    if ledger.empty:
        raise BacktestError(f"{run_dir}: ledger.parquet has no rows. Fix: rerun the experiment.")
    names = _order(manifest, summary, ledger)
    wide = ledger.pivot(index="timestamp", columns="strategy")
    equity = wide["equity_usd"][names]
    llm_cost = wide["llm_cost_usd"][names].fillna(0.0)
    target = wide["target_position"][names].ffill().fillna(0.0)
    exposure = wide["exposure"][names]
    close = wide["close"][names[0]]
    gross_initial = {n: float(equity[n].iloc[0] + llm_cost[n].iloc[0]) for n in names}
    config = manifest.get("config", {})
    initial_capital = float(config.get("env", {}).get("initial_capital_usd", math.nan))
    initial = {
        n: initial_capital if math.isfinite(initial_capital) else gross_initial[n] for n in names
    }
    ppy = float(summary.get("periods_per_year") or 252.0)
    returns = equity.pct_change().iloc[1:]
    window = _rolling_window(len(equity), ppy)

    drl_plots, drl_context = training.drl_section(summary)
    plots = [
        ("equity", figures.equity_figure(equity, llm_cost)),
        ("drawdown", figures.drawdown_figure(equity)),
        ("rolling-sharpe", figures.rolling_sharpe_figure(returns, window, ppy)),
        ("monthly", figures.monthly_heatmap(equity)),
        ("trades", figures.price_trades_figure(close, _fills(ledger, names))),
        (
            "timeline",
            decision_timeline(
                target.where(exposure.notna(), 0.0),
                decisions,
                decision_marks(decisions, target),
                names,
                max_exposure=float(config.get("risk", {}).get("max_leverage") or 1.0),
            ),
        ),
        *drl_plots,
    ]
    tails = risk.tail_risk(equity)
    short_dates = _daily(manifest)
    data = manifest.get("data", {})
    context = {
        "title": f"{manifest.get('name', 'run')} · {summary.get('symbol', '')}",
        "manifest": manifest,
        "summary": summary,
        "data": data,
        "period": _period(summary, data.get("frequency", "")),
        "warnings": _warnings(manifest, decisions, calls),
        "headline_headers": [(header, kind) for _, header, kind in _HEADLINE],
        "headline_rows": _metrics_rows(summary, names, _HEADLINE, tails),
        "metric_headers": [(header, kind) for _, header, kind in _METRICS],
        "metric_rows": _metrics_rows(summary, names, _METRICS, tails),
        "drawdowns": _drawdown_rows(equity, names, short_dates),
        "plots": [(key, figure_json(fig)) for key, fig in plots],
        "cost": cost_panel(calls, decisions, summary, initial),
        "comparisons": summary.get("comparisons") or [],
        "verdict": verdict_rows(summary),
        "seed_groups": summary.get("seed_groups") or {},
        "cutoff_split": summary.get("cutoff_split") or {},
        "folds": summary.get("folds") or [],
        "versions": sorted((manifest.get("versions") or {}).items()),
        "estimate": manifest.get("llm_cost_estimate") or {},
        "inputs": sorted((manifest.get("inputs") or {}).items()),
        "leakage": manifest.get("leakage") or [],
        "window": window,
        "benchmark": summary.get("benchmark"),
        "llm_sources": _llm_sources(summary),
        **drl_context,
    }
    return render_template("run.html.j2", **context)


def _llm_sources(summary: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """Each distinct answer source with the strategies it served (the terminal's lines)."""
    together: dict[str, list[str]] = {}
    for name, text in (summary.get("llm_sources") or {}).items():
        together.setdefault(str(text), []).append(str(name))
    return list(together.items())


def write_run_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's report (default ``RUN_DIR/report.html``) atomically; return its path."""
    target = Path(out) if out is not None else Path(run_dir) / "report.html"
    return write_atomic(target, run_report_html(run_dir))
