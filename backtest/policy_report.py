"""Reading the policies' own reports in ``summary.json`` (the CLI and the HTML report share it).

The engine writes what a policy's optional ``run_report()`` returned to
``summary["strategies"][<name>]["policy_report"]`` (walk-forward runs: ``{"folds": [one per
fold]}``). Two parts are read here, by key, without importing any strategy:

- ``combiner`` (the hybrid, :mod:`strategies.hybrid`): counts, over the member's decision
  bars, of each confidence threshold crossed and of the combiner branch that decided.
  :func:`combiner_rows` sums them over folds and turns them into shares of the bars.
- ``training`` (every DRL-based strategy, :mod:`strategies.drl`): the agent's training
  curve (episode returns) and validation curve (the evaluation callback's scores).
  :func:`training_runs` lists them per strategy, members and folds apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CROSSINGS", "DECIDED_BY", "combiner_lines", "combiner_rows", "training_runs"]

#: ``crossed`` keys with their labels (thresholds filled in from the report).
CROSSINGS = (
    ("drl_confidence_above_agree", "DRL conf > {agree}"),
    ("llm_confidence_above_agree", "LLM conf > {agree}"),
    ("both_above_agree_and_same_direction", "both > {agree}, same direction"),
    ("weighted_beyond_act", "|weighted| > {act}"),
    ("llm_abstained", "LLM abstained"),
)
#: ``decided_by`` keys with their labels.
DECIDED_BY = (
    ("agreement", "agreement"),
    ("weighted_buy", "weighted BUY"),
    ("weighted_sell", "weighted SELL"),
    ("weighted_hold", "weighted HOLD"),
    ("drl_fallback", "DRL fallback"),
)


def _parts(report: Any) -> list[Mapping[str, Any]]:
    """A report's parts: itself, or each fold's (skipping folds without one)."""
    if not isinstance(report, Mapping):
        return []
    if "folds" in report:
        return [p for p in report["folds"] if isinstance(p, Mapping)]
    return [report]


def combiner_rows(summary: Mapping[str, Any], *, controls: bool = False) -> list[dict[str, Any]]:
    """One row per strategy with a combiner report: counts summed over folds, and shares.

    Each row: ``strategy``, ``bars``, ``thresholds`` (``agree``, ``act``), ``crossed``
    and ``decided_by`` (counts), ``share`` (each count over ``bars``, None without bars).
    Controls
    (``<name>~<kind>``) are left out unless ``controls``.
    """
    rows = []
    for name, stats in (summary.get("strategies") or {}).items():
        if "~" in name and not controls:
            continue
        parts = [p["combiner"] for p in _parts(stats.get("policy_report")) if "combiner" in p]
        if not parts:
            continue
        bars = sum(int(p.get("bars") or 0) for p in parts)
        crossed = {k: sum(int(p["crossed"].get(k, 0)) for p in parts) for k, _ in CROSSINGS}
        decided = {k: sum(int(p["decided_by"].get(k, 0)) for p in parts) for k, _ in DECIDED_BY}
        share = {k: (v / bars if bars else None) for k, v in {**crossed, **decided}.items()}
        rows.append(
            {
                "strategy": name,
                "bars": bars,
                "thresholds": {
                    "agree": (parts[0].get("thresholds") or {}).get("agree_confidence"),
                    "act": (parts[0].get("thresholds") or {}).get("act"),
                },
                "crossed": crossed,
                "decided_by": decided,
                "share": share,
            }
        )
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def combiner_lines(summary: Mapping[str, Any]) -> list[str]:
    """Short terminal lines: per hybrid member, the threshold crossings and the branches."""
    lines = []
    for row in combiner_rows(summary):
        th = row["thresholds"]
        s = row["share"]
        crossed = ", ".join(f"{label.format(**th)} {_pct(s[key])}" for key, label in CROSSINGS[:3])
        decided = ", ".join(f"{label} {_pct(s[key])}" for key, label in DECIDED_BY if s[key])
        lines.append(
            f"{row['strategy']} combiner over {row['bars']:,} bars: {crossed}; decided by "
            f"{decided or 'nothing'}"
        )
    return lines


def training_runs(summary: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per strategy (seed members grouped under their base name, controls left out), each
    trained agent's ``label`` (member, and fold in walk-forward runs), ``model`` (its cache
    folder), ``train_curve`` and ``validation_curve`` (a model cached before the curves
    were recorded has none, and is left out).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for name, stats in (summary.get("strategies") or {}).items():
        if "~" in name:
            continue
        report = stats.get("policy_report")
        parts = _parts(report)
        folds = isinstance(report, Mapping) and "folds" in report
        for k, part in enumerate(parts):
            training = part.get("training")
            if not isinstance(training, Mapping) or not training.get("train_curve"):
                continue
            group = name.rpartition("@")[0] if "@" in name else name
            out.setdefault(group, []).append(
                {
                    "label": f"{name} fold {k}" if folds else name,
                    "model": training.get("model"),
                    "train_curve": training["train_curve"],
                    "validation_curve": training.get("validation_curve") or {},
                }
            )
    return out
