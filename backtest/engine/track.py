"""One strategy's per-bar record during a replay (:class:`_Track`), and its LLM calls kept
as columns (:data:`CALL_FIELDS`, :func:`call_row`). :mod:`backtest.engine.write` turns tracks
into the run's tables.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from backtest.env import TradingEnv
from backtest.policy import Decision

__all__ = ["CALL_FIELDS", "call_row"]


class _Track:
    """Per-bar records of one strategy.

    Dense values (position, cash, equity, target) are appended every bar; events (fills,
    exits, fees, financing, risk interventions, LLM calls, abstains) are rare and are
    written into arrays that start at their no-event values.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.target: list[float] = []
        self.units: list[float] = []
        self.exposure: list[float] = []
        self.cash: list[float] = []
        self.equity: list[float] = []
        self.fill_units = np.zeros(n)
        self.fill_price = np.full(n, np.nan)
        self.exit_units = np.zeros(n)
        self.exit_price = np.full(n, np.nan)
        self.fees = np.zeros(n)
        self.financing = np.zeros(n)
        self.llm_cost = np.zeros(n)
        self.llm_calls = np.zeros(n, dtype=np.int64)
        self.abstain = np.zeros(n, dtype=bool)
        self.exit_reason = [""] * n
        self.risk_event = [""] * n
        self.decisions: list[Decision] = []
        # LLM calls, column by column as they happen (the fields of CALL_FIELDS, then the
        # bar of each call in ``call_bars``): the call objects themselves are not kept.
        self.call_columns: dict[str, list[Any]] = {f: [] for f in CALL_FIELDS}
        self.call_bars: list[int] = []
        self._strings: dict[str, str] = {}
        #: What the policy's optional ``run_report()`` returned after its replay (or, for
        #: walk-forward folds, ``{"folds": [one per fold]}``); None without one.
        self.policy_report: dict[str, Any] | None = None

    def record_calls(self, k: int, calls: tuple[Any, ...]) -> None:
        """Keep bar ``k``'s LLM calls as column values; equal strings are kept once (a
        replay parses every answer's model, provider, finish reason... into new strings)."""
        strings = self._strings
        columns = self.call_columns
        for call in calls:
            row = call_row(call)
            for field, values in columns.items():
                value = row.get(field)
                if type(value) is str:
                    value = strings.setdefault(value, value)
                values.append(value)
            self.call_bars.append(k)

    def event(self, k: int, env: TradingEnv) -> None:
        """Record what happened at bar ``k`` besides marking to market."""
        self.fill_units[k] = env.fill_units
        self.fill_price[k] = env.fill_price
        self.exit_units[k] = env.exit_units
        self.exit_price[k] = env.exit_price
        self.fees[k] = env.fees_usd
        self.financing[k] = env.financing_usd
        self.exit_reason[k] = env.exit_reason
        self.risk_event[k] = env.risk_event

    def finish(self) -> None:
        """Pad a ruined run with its final state, then turn the lists into arrays."""
        missing = self.n - len(self.equity)
        self.target.extend([math.nan] * missing)
        for name in ("units", "exposure", "cash", "equity"):
            values = getattr(self, name)
            values.extend([values[-1]] * missing)
            setattr(self, name, np.asarray(values, dtype=np.float64))
        self.target = np.asarray(self.target, dtype=np.float64)  # type: ignore[assignment]


#: The fields of an LLM call kept per call (the columns of ``llm_calls.parquet`` after
#: ``strategy`` and ``timestamp``; :mod:`backtest.engine.write` checks they match).
CALL_FIELDS: tuple[str, ...] = (
    "role",
    "model_requested",
    "model_served",
    "provider",
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "spend_usd",
    "cost_source",
    "cache",
    "fallback_from",
    "retries",
    "error",
    "latency_ms",
    "prompt_version",
    "finish_reason",
    "http_status",
    "answer_error",
    "raw_answer",
)


def call_row(call: Any) -> dict[str, Any]:
    """One LLM call record (an ``LLMCall``, a dataclass or a mapping) as a dict."""
    if hasattr(call, "to_row"):
        return dict(call.to_row())
    if dataclasses.is_dataclass(call):
        return dataclasses.asdict(call)  # type: ignore[arg-type]
    return dict(call)
