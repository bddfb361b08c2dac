"""What :func:`backtest.run` returns: the run's tables, summary and manifest as objects."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

__all__ = ["RunResult"]


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numeric and text entries of a metrics dict (nested ones, such as the abstain
    reasons by reason, stay in the nested summary)."""
    return {
        k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool) or v is None
    }


@dataclass(frozen=True, repr=False)
class RunResult:
    """Everything a run produced, as objects (the same data as the run directory).

    The tables are held as Arrow tables (what the run directory stores); the pandas views
    ``ledger``, ``decisions``, ``llm_calls``, ``equity``, ``metrics`` and
    ``metrics_by_seed`` are properties, built on first access.

    Attributes:
        run_id: Hash of the config, the data and every other input.
        run_dir: Directory the artifacts were written to; None when nothing was written
            (``run(..., write=False)``).
        tables: ``ledger``, ``decisions`` and ``llm_calls`` as Arrow tables.
        summary: The nested summary, exactly ``summary.json`` (metrics per strategy under
            ``summary["strategies"][name]``, ``seed_groups``, ``verdict``...).
        manifest: What the run depended on.
        reused: True when the run was not redone: a complete run with the same inputs was
            read back from ``run_dir``.
    """

    run_id: str
    run_dir: Path | None
    tables: dict[str, pa.Table]
    summary: dict[str, Any]
    manifest: dict[str, Any]
    reused: bool = False

    @functools.cached_property
    def ledger(self) -> pd.DataFrame:
        """One row per strategy per bar (columns ``backtest.engine.LEDGER_COLUMNS``)."""
        return self.tables["ledger"].to_pandas()

    @functools.cached_property
    def decisions(self) -> pd.DataFrame:
        """One row per decision: action, target, confidence, abstain, reasoning, signals."""
        return self.tables["decisions"].to_pandas()

    @functools.cached_property
    def llm_calls(self) -> pd.DataFrame:
        """One row per LLM call (columns ``backtest.engine.LLM_CALL_COLUMNS``)."""
        return self.tables["llm_calls"].to_pandas()

    @functools.cached_property
    def equity(self) -> pd.DataFrame:
        """Equity curves in dollars: one row per bar, one column per strategy (member)."""
        return self.ledger.pivot(index="timestamp", columns="strategy", values="equity_usd")

    @functools.cached_property
    def metrics_by_seed(self) -> pd.DataFrame:
        """One row per strategy and seed: every scalar metric of ``summary["strategies"]``.

        Index ``(strategy, seed)``: a strategy run with several seeds has a row per member
        (``drl_a2c@1`` is ``("drl_a2c", 1)``); any other strategy has seed ``-1``.
        """
        rows, index = [], []
        for member, metrics in self.summary.get("strategies", {}).items():
            name, sep, seed = member.rpartition("@")
            if sep and seed.isdigit():
                index.append((name, int(seed)))
            else:
                index.append((member, -1))
            rows.append(_scalars(metrics))
        names = ["strategy", "seed"]
        return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=names))

    @functools.cached_property
    def metrics(self) -> pd.DataFrame:
        """One row per strategy: its metrics, the mean over its seeds when it has several.

        Columns: ``seeds`` (how many), every scalar metric, and for a strategy with several
        seeds ``<metric>_std`` (the spread across seeds, ``summary["seed_groups"]``); the
        benchmark is marked in ``benchmark``.
        """
        by_seed = self.metrics_by_seed
        groups = self.summary.get("seed_groups", {})
        rows: dict[str, dict[str, Any]] = {}
        for name in dict.fromkeys(by_seed.index.get_level_values("strategy")):
            part = by_seed.xs(name, level="strategy")
            if name in groups:
                row = _scalars(groups[name]["mean"])
                row.update({f"{k}_std": v for k, v in _scalars(groups[name]["std"]).items()})
            else:
                row = part.iloc[0].to_dict()
            row["seeds"] = len(part)
            rows[name] = row
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame.index.name = "strategy"
        frame.insert(0, "benchmark", frame.index == self.summary.get("benchmark"))
        frame.insert(0, "seeds", frame.pop("seeds"))
        return frame

    def __repr__(self) -> str:
        strategies = len(self.summary.get("strategies", {}))
        where = "not written" if self.run_dir is None else str(self.run_dir)
        bars = self.summary.get("bars")
        span = f"{str(self.summary.get('start'))[:10]}..{str(self.summary.get('end'))[:10]}"
        reused = ", reused" if self.reused else ""
        return (
            f"<RunResult {self.run_id}: {strategies} strategies, {bars} bars {span}, "
            f"{where}{reused}>"
        )

    def _repr_html_(self) -> str:  # notebooks: the metrics table, not the tables' bytes
        import html

        table = self.metrics[
            [c for c in ("seeds", "total_return", "sharpe", "max_drawdown") if c in self.metrics]
        ]
        return f"<p>{html.escape(repr(self))}</p>" + table.to_html(
            float_format=lambda x: "nan" if math.isnan(x) else f"{x:.4g}"
        )
