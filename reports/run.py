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
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from backtest.errors import BacktestError
from reports import figures, training
from reports._render import figure_json, render_template, short_text, write_atomic

__all__ = ["RUN_FILES", "load_run", "run_report_html", "verdict_rows", "write_run_report"]

#: Files a run directory must hold for a report.
RUN_FILES = ("manifest.json", "summary.json", "ledger.parquet", "decisions.parquet")

#: Metrics table columns: (summary key, header, kind).
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
    """The verdict for the report: the headline rows (pooled, Sharpe), all rows, context."""
    entries = summary.get("verdict") or []
    headline = [e for e in entries if e.get("asset") == "pooled" and e.get("metric") == "sharpe"]
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


def _metrics_rows(summary: Mapping[str, Any], names: list[str]) -> list[dict[str, Any]]:
    rows = []
    benchmark = summary.get("benchmark")
    for name in names:
        stats = summary.get("strategies", {}).get(name, {})
        rows.append(
            {
                "name": name,
                "benchmark": name == benchmark,
                "cells": [(kind, stats.get(key)) for key, _, kind in _METRICS],
            }
        )
    return rows


def _signals_text(raw: str) -> str:
    if not raw:
        return ""
    try:
        signals = json.loads(raw)
    except ValueError:
        return raw
    parts = []
    for s in signals:
        if s.get("abstain"):
            parts.append(f"{s.get('agent')}: abstain")
        else:
            parts.append(
                f"{s.get('agent')}: {float(s.get('signal', 0.0)):+.2f} "
                f"(conf {float(s.get('confidence', 0.0)):.2f})"
            )
    return "; ".join(parts)


def _decision_marks(decisions: pd.DataFrame, target: pd.DataFrame) -> dict[str, pd.DataFrame]:
    marks: dict[str, pd.DataFrame] = {}
    if decisions.empty:
        return marks
    for name, rows in decisions.groupby("strategy", sort=False):
        if name not in target:
            continue
        # Mark what a reader looks for: a new target, an abstain, or an agent-backed BUY/SELL
        # (whose reasoning is worth reading even when the target did not change).
        wanted = rows["target_position"]
        changed = wanted.notna() & wanted.ne(wanted.ffill().shift(1))
        argued = (rows["action"] != "HOLD") & (rows["signals"].fillna("") != "")
        keep = rows[changed | argued | rows["abstain"]]
        if keep.empty:
            continue
        held = target[name].reindex(pd.DatetimeIndex(keep["timestamp"])).to_numpy()
        labels = []
        for row in keep.itertuples(index=False):
            conf = (
                ""
                if row.confidence is None or math.isnan(row.confidence)
                else (f" conf {row.confidence:.2f}")
            )
            body = [f"{short_text(row.action, 12)}{' (abstain)' if row.abstain else ''}{conf}"]
            signals = _signals_text(row.signals)
            if signals:
                body.append(short_text(signals, 160))
            if row.reasoning:
                body.append(short_text(row.reasoning, 160))
            labels.append("<br>".join(body))
        marks[str(name)] = pd.DataFrame(
            {
                "timestamp": keep["timestamp"].to_numpy(),
                "target": np.nan_to_num(held, nan=0.0),
                "label": labels,
                "abstain": keep["abstain"].to_numpy(dtype=bool),
            }
        )
    return marks


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


def _priced_as(table: Any, served: str, requested: str) -> str:
    """The model a call is re-priced as: the one that served it, unless the table does not
    know that name (a server's alias, a dated snapshot): then the one requested."""
    from backtest.errors import PricingError

    if not served or served == requested:
        return requested or served
    try:
        table.price(served)
    except PricingError:
        return requested
    return served


def _reprice(calls: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per strategy: the same tokens at the Western reference table, and the multiple."""
    from backtest.llm.pricing import PriceTable
    from backtest.llm.records import Usage

    out: dict[str, dict[str, Any]] = {}
    if calls.empty:
        return out
    try:
        ours = PriceTable.load(table="openrouter")
        theirs = PriceTable.load(table="western_reference")
    except BacktestError as exc:
        return {"*": {"error": str(exc)}}
    priced = calls[
        (calls["provider"] != "offline")
        & (calls["cost_source"] != "local")  # a local model: $0 by rule, nothing to compare
        & (calls["prompt_tokens"] + calls["completion_tokens"] > 0)
    ]
    for name, rows in calls.groupby("strategy", sort=False):
        mine = priced[priced["strategy"] == name]
        if mine.empty:
            out[str(name)] = {
                "note": "no token usage (offline analyst, a local model or no calls): "
                "nothing to re-price"
            }
            continue
        usages = [
            (
                _priced_as(ours, str(r.model_served or ""), str(r.model_requested)),
                Usage(
                    prompt_tokens=int(r.prompt_tokens),
                    completion_tokens=int(r.completion_tokens),
                    cached_prompt_tokens=int(r.cached_prompt_tokens),
                ),
                date(r.timestamp.year, r.timestamp.month, r.timestamp.day),
            )
            for r in mine.itertuples(index=False)
        ]
        try:
            western = ours.reprice(usages, theirs)
        except BacktestError as exc:
            out[str(name)] = {"error": str(exc)}
            continue
        cost = float(rows["cost_usd"].sum())
        out[str(name)] = {
            "western_usd": western,
            "multiple": western / cost if cost > 0 else None,
        }
    return out


def _cost_panel(
    calls: pd.DataFrame,
    decisions: pd.DataFrame,
    summary: Mapping[str, Any],
    initial: Mapping[str, float],
) -> dict[str, Any]:
    if calls.empty:
        return {"rows": [], "totals": [], "any": False}
    calls = calls.copy()
    calls["model"] = calls["model_served"].where(
        calls["model_served"] != "", calls["model_requested"]
    )
    calls["hit"] = calls["cache"] == "hit"
    calls["fallback"] = calls["fallback_from"].fillna("") != ""
    calls["failed"] = calls["error"].fillna("") != ""
    grouped = calls.groupby(["strategy", "role", "model"], sort=False)
    rows = []
    for (name, role, model), g in grouped:
        rows.append(
            {
                "strategy": name,
                "role": role,
                "model": model,
                "calls": len(g),
                "prompt_tokens": int(g["prompt_tokens"].sum()),
                "completion_tokens": int(g["completion_tokens"].sum()),
                "cost": float(g["cost_usd"].sum()),
                "spend": float(g["spend_usd"].sum()),
                "hits": int(g["hit"].sum()),
                "fallbacks": int(g["fallback"].sum()),
                "failed": int(g["failed"].sum()),
                "retries": int(g["retries"].sum()),
            }
        )
    repriced = _reprice(calls)
    totals = []
    for name, g in calls.groupby("strategy", sort=False):
        stats = summary.get("strategies", {}).get(name, {})
        n_decisions = int(stats.get("decisions") or (decisions["strategy"] == name).sum())
        cost = float(g["cost_usd"].sum())
        net = float(stats.get("final_equity_usd", math.nan)) - initial.get(name, math.nan)
        info = repriced.get(str(name), repriced.get("*", {}))
        totals.append(
            {
                "strategy": name,
                "calls": len(g),
                "cost": cost,
                "spend": float(g["spend_usd"].sum()),
                "per_decision": cost / n_decisions if n_decisions else None,
                "abstains": int(stats.get("abstains", 0)),
                "fallbacks": int(g["fallback"].sum()),
                "retries": int(g["retries"].sum()),
                "hits": int(g["hit"].sum()),
                "offline": int((g["provider"] == "offline").sum()),
                "net_pnl": net,
                "gross_pnl": net + cost,
                "western": info.get("western_usd"),
                "multiple": info.get("multiple"),
                "note": info.get("note") or info.get("error"),
            }
        )
    return {"rows": rows, "totals": totals, "any": True}


def _rolling_window(n: int, periods_per_year: float) -> int:
    window = max(20, round(periods_per_year / 4))
    return max(5, min(window, n // 3 or 5))


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
            figures.decision_timeline(
                target.where(exposure.notna(), 0.0), _decision_marks(decisions, target), names
            ),
        ),
        *drl_plots,
    ]
    data = manifest.get("data", {})
    context = {
        "title": f"{manifest.get('name', 'run')} · {summary.get('symbol', '')}",
        "manifest": manifest,
        "summary": summary,
        "data": data,
        "period": _period(summary, data.get("frequency", "")),
        "warnings": _warnings(manifest, decisions, calls),
        "metric_headers": [(header, kind) for _, header, kind in _METRICS],
        "metric_rows": _metrics_rows(summary, names),
        "plots": [(key, figure_json(fig)) for key, fig in plots],
        "cost": _cost_panel(calls, decisions, summary, initial),
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
