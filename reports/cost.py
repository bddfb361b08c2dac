"""The report's LLM cost panel: per strategy, role and model; P&L gross and net of LLM cost;
the same tokens re-priced at the Western reference table, with the savings multiple.

Tokens are re-priced as the model *requested* when a server answered under an alias the
price table does not know (a local server's file name, say).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from typing import Any

import pandas as pd

from backtest.errors import BacktestError

__all__ = ["cost_panel"]


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


def cost_panel(
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
