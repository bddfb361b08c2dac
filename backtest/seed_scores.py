"""Seed groups of a sweep: one configuration's score over its seeds, and when two are one trial.

A sweep's **configuration** is a grid point without its replication keys (``seed``, the
run's seed); its **seeds** are every member of the tuned strategy in every run of the
configuration: ``<strategy>`` in a run of a strategy with one seed, ``<strategy>@0``,
``<strategy>@1``, ... in a run of a strategy with ``seeds`` > 1 (the names the engine gives
seed members, :mod:`backtest.engine.plan`), over every value of ``seed`` in the grid. So a
grid ``seed = [0, 1]`` over a strategy with ``seeds = 3`` gives each configuration six
seeds, and any strategy name works.

**Score.** :func:`score_seeds`: the mean of the metric over the seeds, their spread (the
standard deviation, ``ddof=1``) and a 95% t-interval over seeds, ``mean +- t(n-1) * std /
sqrt(n)``: the seeds are the unit that is resampled (each seed's number is one
observation; bars are not resampled here). One seed has no spread and no interval.

**NaN rule** (the one of :mod:`backtest.inference`, the verdict and ``backtest compare``):
a seed whose metric is NaN or missing (a Sharpe ratio of a series without volatility) is
left out of the mean, the spread and the interval, and counted in ``n_nan_seeds``; a
configuration all of whose seeds are NaN has no score and is never selected. The sweep
report shows ``n_nan_seeds`` beside each configuration.

**Distinct trials.** :func:`trial_fingerprint` is the sha256 of what the configuration's
runs produced for the tuned strategy: every seed's per-bar returns (with their timestamps),
in seed order. Two
configurations whose runs are identical once what is really used is resolved (routing
files that differ only in models the run never calls; any routing when the offline
analyst answers every role; a fee grid over a strategy that never trades) have the same
fingerprint and are one trial: the Deflated Sharpe Ratio counts distinct trials, and the
PBO and SPA see one column per distinct trial.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

__all__ = [
    "CI_METHOD",
    "REPLICATION_KEYS",
    "SeedScore",
    "member_names",
    "member_returns",
    "member_values",
    "score_seeds",
    "trial_fingerprint",
]

#: Grid keys that replicate a configuration rather than define one.
REPLICATION_KEYS = frozenset({"seed"})

#: How the interval of :class:`SeedScore` is computed (written beside it).
CI_METHOD = "t-interval over seeds (95%, n-1 df); unit resampled: seeds"


@dataclass(frozen=True, slots=True)
class SeedScore:
    """A metric over a configuration's seeds.

    Attributes:
        values: Every seed's value, NaN where undefined, in seed order.
        n_seeds: How many seeds ran (NaN ones included).
        n_nan_seeds: Seeds left out by the NaN rule.
        mean: Mean over the finite seeds (None when there is none).
        std: Their standard deviation, ``ddof=1`` (None below two finite seeds).
        ci_low: Lower end of the t-interval over seeds (None below two finite seeds).
        ci_high: Upper end.
    """

    values: tuple[float, ...]
    n_seeds: int
    n_nan_seeds: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: the numbers, NaN seeds as None, and the interval's method."""
        return {
            "values": [v if math.isfinite(v) else None for v in self.values],
            "n_seeds": self.n_seeds,
            "n_nan_seeds": self.n_nan_seeds,
            "mean": self.mean,
            "std": self.std,
            "ci": None if self.ci_low is None else [self.ci_low, self.ci_high],
            "ci_method": CI_METHOD,
        }


def score_seeds(values: Iterable[float | None], confidence: float = 0.95) -> SeedScore:
    """Mean, spread and t-interval of one metric over seeds, by the NaN rule above."""
    from scipy.stats import t

    raw = tuple(math.nan if v is None else float(v) for v in values)
    finite = np.array([v for v in raw if math.isfinite(v)], dtype=np.float64)
    n = int(finite.size)
    mean = float(finite.mean()) if n else None
    std = float(finite.std(ddof=1)) if n > 1 else None
    low = high = None
    if mean is not None and std is not None:
        half = float(t.ppf(0.5 + confidence / 2.0, n - 1)) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    return SeedScore(raw, len(raw), len(raw) - n, mean, std, low, high)


def member_names(names: Iterable[str], strategy: str) -> list[str]:
    """The seed members of ``strategy`` among ``names``, in seed order.

    ``strategy`` itself (one seed) or ``strategy@0``, ``strategy@1``, ... (several);
    controls (``strategy~llm0@0``) and other strategies are not members.
    """
    pattern = re.compile(re.escape(strategy) + r"@(\d+)")
    numbered = sorted(
        (int(m.group(1)), name) for name in names if (m := pattern.fullmatch(name)) is not None
    )
    return [name for _, name in numbered] or [n for n in names if n == strategy]


def _summary(run_dir: Path) -> dict[str, object] | None:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def member_values(run_dir: Path, strategy: str) -> dict[str, dict[str, float]]:
    """Every numeric metric of each seed member of ``strategy`` in a run (NaN when undefined).

    Empty when the run is not complete or has no such strategy.
    """
    summary = _summary(run_dir)
    stats: dict[str, dict[str, object]] = (summary or {}).get("strategies", {})  # type: ignore[assignment]
    out: dict[str, dict[str, float]] = {}
    for name in member_names(stats, strategy):
        out[name] = {
            key: float(value) if value is not None else math.nan
            for key, value in stats[name].items()
            if value is None or (isinstance(value, int | float) and not isinstance(value, bool))
        }
    return out


def member_returns(run_dir: Path, strategy: str) -> dict[str, pd.Series]:
    """Per-bar simple returns of each seed member of ``strategy`` in a run, by timestamp."""
    from backtest.metrics import returns_from_equity

    path = run_dir / "ledger.parquet"
    if not path.is_file():
        return {}
    table = pq.read_table(path, columns=["strategy", "timestamp", "equity_usd"])
    names = member_names(table.column("strategy").unique().to_pylist(), strategy)
    if not names:
        return {}
    frame = table.to_pandas()
    out = {}
    for name in names:
        rows = frame[frame["strategy"] == name]
        if len(rows) < 2:
            continue
        returns = returns_from_equity(rows["equity_usd"].to_numpy())
        index = pd.DatetimeIndex(rows["timestamp"].iloc[1:]).as_unit("ns")
        out[name] = pd.Series(returns, index=index)
    return out


def trial_fingerprint(returns: Sequence[pd.Series]) -> str:
    """sha256 of a configuration's per-seed return series (timestamps and values, in order)."""
    digest = hashlib.sha256()
    for series in returns:
        digest.update(series.index.asi8.tobytes())
        digest.update(np.ascontiguousarray(series.to_numpy(np.float64)).tobytes())
        digest.update(b"|")
    return digest.hexdigest()
