"""A decision timeline a person can read: strategies by week (or month), coloured by position.

The old timeline drew every strategy's target exposure bar by bar; over a few years of daily
bars the lines flipped so often that the chart read as a barcode. Here each strategy is a row
and each calendar period (a week for spans up to three years, a month beyond) a cell:

- the colour is the mean target exposure held over the period's bars (red short, blue long,
  white flat; the colour bar is the legend);
- the hover shows the period, the mean exposure, how many decisions of each kind were taken
  (BUY, SELL, CLOSE, HOLD, abstain) and the last decision worth reading in the period (a new
  target, an abstain or an agent-backed BUY/SELL) with its confidence, agent signals and the
  start of its reasoning, already escaped by :func:`reports._render.short_text`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from reports._render import short_text

__all__ = ["decision_marks", "decision_timeline", "timeline_period"]

_KINDS = ("BUY", "SELL", "CLOSE", "HOLD")


def timeline_period(index: pd.DatetimeIndex) -> str:
    """``"W"`` for spans up to three years, ``"M"`` beyond (at most ~250 cells a row)."""
    if len(index) < 2:
        return "W"
    span = index[-1] - index[0]
    return "W" if span <= pd.Timedelta(days=3 * 366) else "M"


def _period_start(index: pd.DatetimeIndex, period: str) -> pd.DatetimeIndex:
    naive = index.tz_convert(None) if index.tz is not None else index
    if period == "W":
        return (naive - pd.to_timedelta(naive.day_of_week, unit="D")).normalize()
    return naive.to_period("M").to_timestamp()


def _middles(starts: pd.DatetimeIndex, period: str) -> pd.DatetimeIndex:
    if period == "W":
        return starts + pd.Timedelta(hours=84)
    ends = (starts.to_period("M") + 1).to_timestamp()
    return starts + (ends - starts) / 2


def decision_timeline(
    target: pd.DataFrame,
    decisions: pd.DataFrame,
    marks: Mapping[str, pd.DataFrame],
    strategies: Sequence[str],
    *,
    max_exposure: float = 1.0,
) -> dict[str, Any]:
    """The timeline heatmap (a plotly figure dict).

    Args:
        target: Target exposure held at each bar (after risk limits), one column per
            strategy, indexed by timestamp.
        decisions: ``decisions.parquet`` (``strategy``, ``timestamp``, ``action``,
            ``abstain``).
        marks: Per strategy, the decisions worth reading: ``timestamp`` and ``label``
            (escaped hover text).
        strategies: Rows, top to bottom.
        max_exposure: The colour scale's end (the run's leverage limit).
    """
    index = pd.DatetimeIndex(target.index)
    period = timeline_period(index)
    starts = _period_start(index, period)
    columns = pd.DatetimeIndex(pd.unique(starts))
    position = {stamp: i for i, stamp in enumerate(columns)}
    cell_of_bar = np.array([position[s] for s in starts])
    z: list[list[float | None]] = []
    text: list[list[str]] = []
    label = "week of" if period == "W" else "month"
    fmt = "%Y-%m-%d" if period == "W" else "%Y-%m"
    for name in strategies:
        held = target[name].to_numpy(dtype=np.float64)
        sums = np.bincount(cell_of_bar, weights=np.nan_to_num(held), minlength=len(columns))
        counts = np.bincount(cell_of_bar, minlength=len(columns))
        means = sums / np.maximum(counts, 1)
        mine = decisions[decisions["strategy"] == name] if not decisions.empty else decisions
        tally: list[dict[str, int]] = [dict.fromkeys((*_KINDS, "abstain"), 0) for _ in columns]
        if not mine.empty:
            cells = [
                position[s] for s in _period_start(pd.DatetimeIndex(mine["timestamp"]), period)
            ]
            for cell, action, abstain in zip(cells, mine["action"], mine["abstain"], strict=True):
                key = "abstain" if abstain else str(action).upper()
                if key in tally[cell]:
                    tally[cell][key] += 1
        last: dict[int, str] = {}
        frame = marks.get(name)
        if frame is not None and not frame.empty:
            cells = _period_start(pd.DatetimeIndex(frame["timestamp"]), period)
            for stamp, cell_start, body in zip(
                frame["timestamp"], cells, frame["label"], strict=True
            ):
                last[position[cell_start]] = (
                    f"last: {pd.Timestamp(stamp).strftime('%Y-%m-%d')} {body}"
                )
        row_text = []
        for i, stamp in enumerate(columns):
            counted = ", ".join(f"{v} {k}" for k, v in tally[i].items() if v) or "none"
            parts = [
                f"<b>{short_text(name, 40)}</b>, {label} {stamp.strftime(fmt)}",
                f"mean target exposure {means[i]:+.2f}",
                f"decisions: {counted}",
            ]
            if i in last:
                parts.append(last[i])
            row_text.append("<br>".join(parts))
        z.append([round(float(v), 4) for v in means])
        text.append(row_text)
    bound = max(float(max_exposure), 1e-9)
    trace = {
        "type": "heatmap",
        "name": "decisions",
        # Each cell is centred on the middle of its period, so it covers the period's dates.
        "x": [c.strftime("%Y-%m-%dT%H:%M:%S") for c in _middles(columns, period)],
        "y": [short_text(n, 40) for n in strategies],
        "z": z,
        "zmin": -bound,
        "zmax": bound,
        "zmid": 0,
        "colorscale": [[0.0, "#b2182b"], [0.5, "#f7f7f7"], [1.0, "#2166ac"]],
        "colorbar": {"title": {"text": "mean target<br>exposure"}, "tickformat": "+.1f"},
        "xgap": 1,
        "ygap": 2,
        "hovertext": text,
        "hovertemplate": "%{hovertext}<extra></extra>",
    }
    every = "week" if period == "W" else "month"
    layout = {
        "title": {
            "text": f"Decisions by {every}: mean target exposure (hover for the decisions taken)",
            "x": 0.01,
            "font": {"size": 15},
        },
        "xaxis": {"type": "date"},
        "yaxis": {"type": "category", "autorange": "reversed", "automargin": True},
        "height": max(220, 90 + 30 * len(strategies)),
        "margin": {"l": 64, "r": 16, "t": 40, "b": 40},
        "hoverlabel": {"align": "left"},
        "plot_bgcolor": "#fff",
        "paper_bgcolor": "#fff",
    }
    return {"data": [trace], "layout": layout}


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


def decision_marks(decisions: pd.DataFrame, target: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per strategy, the decisions worth reading: a new target, an abstain, or an agent-backed
    BUY/SELL, with escaped hover text (action, confidence, agent signals, reasoning)."""
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
