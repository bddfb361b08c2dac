"""The run report's look inside the DRL-based strategies.

- one small chart per DRL strategy: every seed's (and walk-forward fold's) training curve
  (the return of each training episode, at the timestep it ended) and validation curve
  (the evaluation callback's mean reward on the validation split; the model kept is the
  one at its best point);
- the hybrid combiner's threshold crossings and branches per member, as shares of its
  decision bars (:func:`backtest.policy_report.combiner_rows`).

Both come from ``summary["strategies"][<name>]["policy_report"]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from backtest.policy_report import CROSSINGS, DECIDED_BY, combiner_rows, training_runs
from reports.figures import Figure, _colour, _layout, _line

__all__ = ["drl_section", "training_figure"]


def training_figure(name: str, runs: list[dict[str, Any]]) -> Figure:
    """Training (thin lines) and validation (dotted, markers) curves of one strategy's runs."""
    data = []
    for i, run in enumerate(runs):
        train, validation = run["train_curve"], run["validation_curve"]
        label = run["label"]
        data.append(
            _line(
                np.asarray(train.get("timesteps") or [], dtype=np.float64),
                np.asarray(train.get("episode_return") or [], dtype=np.float64),
                f"{label} train",
                _colour(i),
                fmt=".4f",
                group=label,
            )
        )
        trace = _line(
            np.asarray(validation.get("timesteps") or [], dtype=np.float64),
            np.asarray(validation.get("mean_reward") or [], dtype=np.float64),
            f"{label} validation",
            _colour(i),
            dash="dot",
            fmt=".4f",
            group=label,
        )
        trace["mode"] = "lines+markers"
        data.append(trace)
    layout = _layout(
        f"{name}: training episodes and validation score (log return)",
        "log return",
        height=300,
        hovermode="closest",
    )
    layout["xaxis"] = {"title": {"text": "timesteps"}, "showgrid": True, "gridcolor": "#eee"}
    return {"data": data, "layout": layout}


def drl_section(summary: Mapping[str, Any]) -> tuple[list[tuple[str, Figure]], dict[str, Any]]:
    """The section's figures (``(key, figure)``) and template context.

    Context: ``training_keys`` (figure keys, one per DRL strategy; a strategy whose models
    are all charted already is listed in ``training_shared`` instead), ``combiner`` (rows with
    ``strategy``, ``bars`` and ``cells``: shares of the bars) and ``combiner_headers``.
    """
    plots: list[tuple[str, Figure]] = []
    shared: list[tuple[str, str]] = []  # (strategy, the strategy whose models it uses)
    shown: dict[str, str] = {}  # model folder -> the strategy charted with it
    for name, runs in sorted(training_runs(summary).items()):
        models = [r["model"] for r in runs]
        if models and all(m in shown for m in models):  # e.g. hybrid@k uses drl@k's model
            shared.append((name, shown[models[0]]))
            continue
        shown.update((m, name) for m in models if m is not None)
        plots.append((f"training-{len(plots)}", training_figure(name, runs)))
    rows = combiner_rows(summary)
    th = rows[0]["thresholds"] if rows else {"agree": "", "act": ""}
    headers = [label.format(**th) for _, label in CROSSINGS]
    headers += [f"decided: {label}" for _, label in DECIDED_BY]
    keys = [k for k, _ in CROSSINGS] + [k for k, _ in DECIDED_BY]
    combiner = [
        {
            "strategy": r["strategy"],
            "bars": r["bars"],
            "cells": [r["share"][k] for k in keys],
        }
        for r in rows
    ]
    context = {
        "training_keys": [key for key, _ in plots],
        "training_shared": shared,
        "combiner": combiner,
        "combiner_headers": headers,
    }
    return plots, context
