"""Paired comparison of two strategies of one run: does ``b`` beat ``a``, net of LLM cost?

**A bars-only diagnostic, not the verdict.** The bootstrap here resamples bars and treats
the seeds as one long experiment, so with few seeds its intervals are far too narrow (in
``benchmarks/bench_inference.py`` it rejects a true null in 55-59% of experiments when
seed-to-seed variance dominates). The run's verdict (``summary["verdict"]``,
:mod:`backtest.questions` and :mod:`backtest.inference`) resamples seeds, then blocks of
bars, and is the answer to read; this module stays for ``backtest compare``'s gross/net
and break-even detail. Sharpe ratios follow the rule of :mod:`backtest.metrics` (``nan``
without volatility, 0 for a series that is 0 at every bar), and a pair whose difference
is ``nan`` is left out of every mean, as in the verdict.

For a pair of strategies traded on the same bars, :func:`compare` estimates the difference
``b - a`` in annualised Sharpe ratio and in mean per-bar return, each with a paired
stationary block bootstrap (Politis & Romano, 1994) confidence interval and a two-sided
p-value, twice:

- **net**: from the equity the engine booked, which has every LLM call's ``cost_usd``
  taken out of cash at its bar;
- **gross**: from that equity with the cumulative LLM cost added back, i.e. the P&L had
  the LLM answers been free.

Returns start from the initial capital, so the first bar's LLM cost counts too.

Strategies that ran several seeds (``<name>@<k>``, see ``StrategyConfig.seeds``) are paired
by seed: ``a@k`` with ``b@k``. The estimate is the mean over pairs of the per-pair
difference; every bootstrap replicate resamples the same bars for every pair (the bars are
shared, so the time-series dependence is kept), and the replicate statistic is again the
mean over pairs. ``seed_mean`` and ``seed_std`` (``ddof=1``; 0 with one pair) describe the
spread of the per-pair estimates.

The p-value is the share of replicates whose distance from the estimate is at least the
estimate's distance from zero (the bootstrap distribution shifted to the null), counted
as ``(1 + hits) / (1 + reps)``; the interval is the percentile interval.

**Break-even capital.** LLM cost is dollars, independent of the account size, while P&L
scales with it. With ``g`` the gross excess P&L of ``b`` over ``a`` as a fraction of the
initial capital and ``c`` the extra LLM dollars ``b`` spent over ``a`` (means over pairs),
the account size at which the excess pays for the LLMs is ``c / g``; ``None`` when ``b``
earns no gross excess and costs more (it never pays), 0 when it costs nothing extra.
P&L scaling linearly with capital ignores market impact and the fixed fee per fill.

The bootstrap generator is seeded from the run's seed through ``SeedSequence`` (a stream
of its own, keyed by the two names), so the same run always gives the same numbers.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.errors import ConfigError
from backtest.inference import (
    annualised_sharpe,
    politis_white_block_length,
    stationary_bootstrap_indices,
)
from backtest.metrics import returns_from_equity
from backtest.rates import risk_free_rates

__all__ = [
    "DEFAULT_REPS",
    "Pair",
    "break_even_capital",
    "compare",
    "compare_run_dir",
    "mean_return_diff",
    "optimal_block_size",
    "paired_bootstrap",
    "resolve_pairs",
    "sharpe_diff",
    "stationary_bootstrap_indices",
]

#: Bootstrap replicates unless told otherwise.
DEFAULT_REPS = 2_000
_STREAM = 0xC0A1  # spawn key of the comparison's random stream, apart from strategies'
_MEMBER = re.compile(r"^(?P<group>.+)@(?P<k>\d+)$")
# Replicates x bars gathered at once; bounds memory on long hourly series.
_CHUNK_ELEMENTS = 2_000_000

Statistic = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Pair:
    """One paired member of a comparison: ``a`` and ``b`` traded with seed index ``seed``."""

    seed: int
    a: str
    b: str


def mean_return_diff(a: np.ndarray, b: np.ndarray, rf: np.ndarray) -> np.ndarray:
    """Mean per-bar return of ``b`` minus that of ``a``, along the last axis."""
    return np.mean(b, axis=-1) - np.mean(a, axis=-1)


def _sharpe(r: np.ndarray, rf: np.ndarray, ppy: float) -> np.ndarray:
    # The rule of backtest.metrics, shared with the verdict (backtest.inference).
    return annualised_sharpe(r, ppy, rf)


def sharpe_diff(periods_per_year: float) -> Statistic:
    """Annualised Sharpe ratio of ``b`` minus that of ``a`` (``rf`` is per bar).

    The rule of :mod:`backtest.metrics`: no volatility is ``nan``, a series that is 0 at
    every bar is 0.
    """

    def statistic(a: np.ndarray, b: np.ndarray, rf: np.ndarray) -> np.ndarray:
        return _sharpe(b, rf, periods_per_year) - _sharpe(a, rf, periods_per_year)

    return statistic


def optimal_block_size(x: np.ndarray) -> int:
    """Politis-White (2004, corrected 2009) block length for the stationary bootstrap.

    The verdict's rule (:func:`backtest.inference.politis_white_block_length`): the
    ``stationary`` column of ``arch.bootstrap.optimal_block_length``, rounded up and
    clamped to ``[1, n // 4]``; 1 for a series without variation or under 10 bars.
    """
    return politis_white_block_length(x)


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    statistic: Statistic,
    *,
    rng: np.random.Generator,
    rf: np.ndarray | None = None,
    reps: int = DEFAULT_REPS,
    block_size: float = 10.0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Bootstrap the paired difference ``statistic(a, b)`` of per-bar return series.

    Args:
        a: Returns of ``a``, shape ``(pairs, bars)`` (or ``(bars,)`` for one pair).
        b: Returns of ``b``, the same shape; row ``i`` pairs with ``a``'s row ``i``.
        statistic: Maps ``(a, b, rf)`` arrays whose last axis is bars to the difference.
        rng: The generator resamples are drawn from.
        rf: Risk-free return per bar (``(bars,)``), resampled with the returns.
        reps: Bootstrap replicates.
        block_size: Mean block length of the stationary bootstrap.
        confidence: Coverage of the percentile interval.

    Returns:
        ``estimate`` (mean over pairs), ``ci_low``, ``ci_high``, ``p_value`` (two-sided,
        against no difference), ``seed_mean`` and ``seed_std`` of the per-pair estimates.
    """
    a2 = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b2 = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a2.shape != b2.shape:
        raise ConfigError(f"bootstrap: a has shape {a2.shape} but b has {b2.shape}")
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"bootstrap: confidence must be in (0, 1) (got {confidence})")
    pairs, n = a2.shape
    rf1 = np.zeros(n) if rf is None else np.broadcast_to(np.asarray(rf, np.float64), (n,))
    per_pair = np.asarray(statistic(a2, b2, rf1), dtype=np.float64).reshape(pairs)
    keep = np.isfinite(per_pair)
    if not keep.any():
        keys = ("estimate", "ci_low", "ci_high", "p_value", "seed_mean", "seed_std")
        return dict.fromkeys(keys, math.nan)
    # The NaN rule of the verdict: a pair whose difference is undefined is left out.
    a2, b2, per_pair = a2[keep], b2[keep], per_pair[keep]
    pairs = int(keep.sum())
    estimate = float(np.mean(per_pair))
    replicates = np.empty(reps)
    chunk = max(1, _CHUNK_ELEMENTS // max(n * pairs, 1))
    for lo in range(0, reps, chunk):
        hi = min(reps, lo + chunk)
        idx = stationary_bootstrap_indices(n, hi - lo, block_size, rng)
        # (pairs, chunk, bars): every pair resampled on the same bars.
        values = statistic(a2[:, idx], b2[:, idx], rf1[idx])
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with no pair left
            replicates[lo:hi] = np.nanmean(values, axis=0)
    replicates = replicates[np.isfinite(replicates)]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    hits = int(np.count_nonzero(np.abs(replicates - estimate) >= abs(estimate) - 1e-15))
    return {
        "estimate": estimate,
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": (1 + hits) / (1 + reps),
        "seed_mean": estimate,
        "seed_std": float(np.std(per_pair, ddof=1)) if pairs > 1 else 0.0,
    }


def break_even_capital(excess_gross_return: float, extra_llm_cost_usd: float) -> float | None:
    """Account size at which ``b``'s gross excess return pays for its extra LLM dollars.

    Args:
        excess_gross_return: ``b``'s gross P&L minus ``a``'s, as a fraction of capital.
        extra_llm_cost_usd: ``b``'s LLM dollars minus ``a``'s.

    Returns:
        ``extra_llm_cost_usd / excess_gross_return``; ``None`` ("never") when ``b`` earns
        no more than ``a`` before cost, whatever it costs (no account size makes a loss
        before cost pay); 0 when it earns more and costs nothing extra.
    """
    if not excess_gross_return > 0:
        return None
    if extra_llm_cost_usd <= 0:
        return 0.0
    return extra_llm_cost_usd / excess_gross_return


def _groups(names: Sequence[str]) -> dict[str, dict[int, str]]:
    groups: dict[str, dict[int, str]] = {}
    for name in names:
        match = _MEMBER.match(name)
        if match:
            groups.setdefault(match["group"], {})[int(match["k"])] = name
    return groups


def _members(name: str, names: Sequence[str], groups: dict[str, dict[int, str]]) -> dict[int, str]:
    if name in groups:
        return groups[name]
    if name in names:
        match = _MEMBER.match(name)
        return {int(match["k"]) if match else 0: name}
    known = sorted(set(names) | set(groups))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"compare: no strategy or seed group named {name!r} in this run.{hint} "
        f"Fix: use one of {', '.join(known)}."
    )


def resolve_pairs(a: str, b: str, names: Sequence[str]) -> list[Pair]:
    """Pair the members of ``a`` and ``b`` by seed index.

    ``a`` and ``b`` are strategy names or seed-group names (``drl`` for ``drl@0..``). Two
    groups pair ``a@k`` with ``b@k`` for every ``k`` both have; a single strategy pairs
    with every member of the other.

    Raises:
        ConfigError: An unknown name (with the known ones), the same name twice, or two
            groups without a seed index in common.
    """
    if a == b:
        raise ConfigError(f"compare: --a and --b are both {a!r}. Fix: name two strategies.")
    groups = _groups(names)
    left, right = _members(a, names, groups), _members(b, names, groups)
    if a in groups and b in groups:
        common = sorted(set(left) & set(right))
        if not common:
            raise ConfigError(
                f"compare: {a!r} has seeds {sorted(left)} and {b!r} has {sorted(right)}; "
                "none in common to pair. Fix: run both with the same seeds."
            )
        return [Pair(k, left[k], right[k]) for k in common]
    if b in groups:
        only = next(iter(left.values()))
        return [Pair(k, only, right[k]) for k in sorted(right)]
    only = next(iter(right.values()))
    return [Pair(k, left[k], only) for k in sorted(left)]


def _columns(ledger: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.compute as pc

    rows = ledger.filter(pc.equal(ledger["strategy"], name))
    equity = rows["equity_usd"].to_numpy()
    cost = np.nan_to_num(rows["llm_cost_usd"].to_numpy())
    return np.asarray(equity, np.float64), np.asarray(cost, np.float64)


def compare(
    ledger: pa.Table,
    a: str,
    b: str,
    *,
    periods_per_year: float,
    initial_capital_usd: float,
    seed: int,
    risk_free: float | np.ndarray = 0.0,
    reps: int = DEFAULT_REPS,
    block_size: int | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Compare strategy (or seed group) ``b`` with ``a`` on a run's ledger.

    Args:
        ledger: The run's ``ledger.parquet`` table (columns ``strategy``, ``equity_usd``,
            ``llm_cost_usd``, one row per strategy per bar in time order).
        a: Baseline strategy or seed group (e.g. ``drl``).
        b: Challenger (e.g. ``hybrid``).
        periods_per_year: Bars per year (the summary's ``periods_per_year``).
        initial_capital_usd: The account's starting cash.
        seed: The run's seed; the bootstrap draws from a stream of it.
        risk_free: Annual risk-free rate, a number or one per ledger bar.
        reps: Bootstrap replicates.
        block_size: Mean block length; None picks the Politis-White length of the net
            return difference.
        confidence: Coverage of the intervals.

    Returns:
        The comparison in ``summary["comparisons"]``'s format (see the module docs).
    """
    names = list(dict.fromkeys(ledger["strategy"].to_pylist()))
    pairs = resolve_pairs(a, b, names)
    series: dict[str, tuple[np.ndarray, np.ndarray, float, float]] = {}
    for name in {p.a for p in pairs} | {p.b for p in pairs}:
        equity, cost = _columns(ledger, name)
        net = np.concatenate([[initial_capital_usd], equity])
        gross = net + np.concatenate([[0.0], np.cumsum(cost)])
        series[name] = (
            returns_from_equity(net),
            returns_from_equity(gross),
            float(gross[-1] - initial_capital_usd),
            float(cost.sum()),
        )
    n = len(next(iter(series.values()))[0])
    if np.ndim(risk_free) == 0:
        rf = np.full(n, float(risk_free) / periods_per_year)
    else:
        # The rate at bar t applies to the return that ends at t (from t-1, or from the
        # initial capital for the first bar).
        rf = np.asarray(risk_free, np.float64) / periods_per_year
    net_a = np.stack([series[p.a][0] for p in pairs])
    net_b = np.stack([series[p.b][0] for p in pairs])
    gross_a = np.stack([series[p.a][1] for p in pairs])
    gross_b = np.stack([series[p.b][1] for p in pairs])
    if block_size is None:
        block_size = optimal_block_size(np.mean(net_b - net_a, axis=0))
    key = zlib.crc32(f"{a}\0{b}".encode())
    streams = np.random.SeedSequence(seed, spawn_key=(_STREAM, key)).spawn(4)
    sharpe = sharpe_diff(periods_per_year)
    size = float(block_size)

    def boot(ra: np.ndarray, rb: np.ndarray, stat: Statistic, stream: Any) -> dict[str, float]:
        rng = np.random.default_rng(stream)
        return paired_bootstrap(
            ra, rb, stat, rng=rng, rf=rf, reps=reps, block_size=size, confidence=confidence
        )

    result: dict[str, Any] = {"a": a, "b": b, "n_seeds": len(pairs), "reps": reps}
    result["block_size"] = int(block_size)
    result["confidence"] = confidence
    for label, (ra, rb), (s1, s2) in (
        ("gross", (gross_a, gross_b), (streams[0], streams[1])),
        ("net", (net_a, net_b), (streams[2], streams[3])),
    ):
        result[label] = {
            "sharpe_diff": boot(ra, rb, sharpe, s1),
            "mean_return_diff": boot(ra, rb, mean_return_diff, s2),
        }
    excess = float(np.mean([series[p.b][2] - series[p.a][2] for p in pairs]))
    extra_cost = float(np.mean([series[p.b][3] - series[p.a][3] for p in pairs]))
    result["break_even_capital_usd"] = break_even_capital(excess / initial_capital_usd, extra_cost)
    result["llm_cost_usd"] = float(np.mean([series[p.b][3] for p in pairs]))
    result["per_seed"] = [
        {
            "seed": p.seed,
            "a": p.a,
            "b": p.b,
            "gross_sharpe_diff": float(sharpe(gross_a[i], gross_b[i], rf)),
            "net_sharpe_diff": float(sharpe(net_a[i], net_b[i], rf)),
        }
        for i, p in enumerate(pairs)
    ]
    return result


def compare_run_dir(
    run_dir: str | Path,
    a: str,
    b: str,
    *,
    reps: int = DEFAULT_REPS,
    block_size: int | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Recompute a comparison from a run directory (``backtest compare``).

    Raises:
        ConfigError: Not a run directory, or an unknown strategy name.
    """
    folder = Path(run_dir)
    paths = [folder / f for f in ("ledger.parquet", "summary.json", "manifest.json")]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(
            f"{folder}: not a run directory (missing {', '.join(missing)}). Fix: pass a "
            "directory written by `backtest run` (runs/<run_id>)."
        )
    ledger = pq.read_table(
        paths[0], columns=["strategy", "timestamp", "equity_usd", "llm_cost_usd"]
    )
    summary = json.loads(paths[1].read_text())
    manifest = json.loads(paths[2].read_text())
    config = manifest["config"]
    first = ledger["strategy"][0].as_py()
    import pyarrow.compute as pc

    stamps = ledger.filter(pc.equal(ledger["strategy"], first))["timestamp"].to_pandas()
    import pandas as pd

    rf = risk_free_rates(config.get("risk_free_rate", 0.0), pd.DatetimeIndex(stamps))
    return compare(
        ledger,
        a,
        b,
        periods_per_year=float(summary["periods_per_year"]),
        initial_capital_usd=float(config["env"]["initial_capital_usd"]),
        seed=int(manifest["seed"]),
        risk_free=rf,
        reps=reps,
        block_size=block_size,
        confidence=confidence,
    )
