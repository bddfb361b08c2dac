"""Seed-level inference for a paired comparison: is ``a`` better than ``b``, and how sure?

Training seeds are the unit of inference. Strategy ``a@k`` and ``b@k`` share the DRL
model of seed ``k`` and trade the same bars, so they are a *pair*; assets are a level
above the seeds (each asset has its own models), and bars are the level below (one market
path per asset, shared by every seed). :func:`paired_inference` takes per-bar returns
shaped ``(n_assets, n_seeds, n_bars)`` (or one ``(n_seeds, n_bars)`` array per asset, so
assets may differ in length) and returns a :class:`PairedResult`.

**Estimate.** The mean over assets of the mean over seeds of ``metric(a@k) - metric(b@k)``
(``a`` minus ``b``: positive means ``a`` is better, for every metric here, drawdown
included, since a drawdown is a negative number and a shallower one is higher).

**Bootstrap.** Each replicate resamples assets with replacement (when there are several),
then seed pairs with replacement within each drawn asset, then bars by a stationary block
bootstrap (Politis & Romano, 1994) with *one* block draw per asset per replicate, used for
every seed of that asset: the seeds share one market path, and resampling it once keeps
the dependence between seeds that the path creates. The mean block length is the
Politis-White (2004; corrected 2009) length from ``arch.bootstrap.optimal_block_length``
of the per-bar difference ``a - b`` averaged over the asset's seeds: the ``stationary``
column, rounded up, clamped to ``[1, n_bars // 4]``; one length per asset, all reported.

**Small-sample correction.** The interval is ``estimate +- t(df, 1 - alpha/2) * se``
where ``se`` is the standard deviation of the bootstrap replicates times
``sqrt(n_units / (n_units - 1))``, ``n_units`` the number of (asset, seed) pairs used
and ``df = n_units - 1``; the p-value is the two-sided one of ``t = estimate / se`` on
the same ``df``, so the interval excludes 0 exactly when ``p < alpha``. The plain
percentile interval of the same two-level bootstrap treats the bootstrap distribution as
exact, which it is not with few seeds: the spread of 5 resampled seeds is ``(n-1)/n`` of
the true one and its tails are normal-thin where a 5-seed mean has ``t_4`` tails. In the
simulation of ``benchmarks/bench_inference.py`` (no true edge, 250 bars, one asset,
1000 experiments per cell, alpha 0.05) the percentile interval rejects 11.7% at 5 seeds
and 6.9% at 10 when seed-to-seed variance dominates; the t-interval rejects 2.0% and 2.9%
there, and 0.4% and 1.7% when a market path shared by all seeds dominates. With 20 seeds
in the market regime it rejects 6.7%: the t quantile nears the normal one and the
stationary bootstrap's own downward bias on 250 autocorrelated bars shows (a bars-only
bootstrap rejects 9.7% there). For reference, bars-only rejects 55-59% in the seed regime
and a seed-level t-test 60-82% in the market regime. The t-interval is conservative when
seeds dominate (each seed's own bar noise is counted by both the seed and the bar level);
that is the price of one rule that holds its size in both regimes. A studentised
bootstrap would need a standard error inside every replicate, which 5 to 10 seeds cannot
estimate well. ``df`` counts (asset, seed) pairs rather than assets: with one to three
assets a df of ``n_assets - 1`` would make every interval useless, and the asset level of
the bootstrap already widens ``se`` by the spread between assets (it counts the seed
spread again, so with several assets the interval is conservative); with many
heterogeneous assets and few seeds per asset this df is optimistic.

**NaN rule** (the one rule everywhere): a seed whose metric is NaN for ``a`` or for ``b``
(a Sharpe ratio of a series without volatility, a return series holding NaN) is dropped
from the pair set on both sides, for the estimate, the bootstrap and the seed-level tests,
and counted in ``n_nan_seeds``; an asset left without a pair is dropped. A bootstrap
replicate whose resampled series gives a NaN metric averages over the seeds that remain
and is dropped only when none remain.

**Seed-level tests** beside the bootstrap take each (asset, seed) pair's difference as
one observation: a one-sample t-test, the Wilcoxon signed-rank test and the sign test
(``scipy.stats``). They ignore the shared market path, so they are anti-conservative when
the path dominates; they are there to be read beside the bootstrap, not instead of it.

**Cost.** Pass LLM cost inside the returns, or as ``cost_a`` / ``cost_b`` (per-bar cost as
a fraction of equity, subtracted from the returns); "before cost" and "after cost" are two
calls, and ``basis`` names which one a result is.

**Labels.** ``underpowered`` when fewer than ``min_seeds`` seeds (per asset, the smallest
count) remain, else ``significant`` when ``p < alpha``, else ``not significant``.

The bootstrap draws from ``numpy.random.default_rng(seed)`` for the ``SeedSequence``
passed in, so the same inputs and seed give the same result.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from backtest.errors import ConfigError
from backtest.inference_kernels import (  # noqa: F401 (re-exported: the old home of these names)
    _DEGENERATE_STD,
    METRICS,
    FloatArray,
    Metric,
    _MetricFn,
    annualised_return,
    annualised_sharpe,
    max_drawdown,
    politis_white_block_length,
    stationary_bootstrap_indices,
)
from backtest.verdict import PairedResult

__all__ = [
    "DEFAULT_REPS",
    "METRICS",
    "Metric",
    "annualised_return",
    "annualised_sharpe",
    "max_drawdown",
    "paired_inference",
    "politis_white_block_length",
    "stationary_bootstrap_indices",
]


Interval = Literal["t", "percentile"]

#: Bootstrap replicates unless told otherwise.
DEFAULT_REPS = 2_000
# Resampled elements (replicates x seeds x bars) gathered at once: bounds memory.
# 250,000 keeps the transient arrays of one chunk (indices, counts, gathered returns: about
# eight of this size) near 16 MB; 2,000,000 added ~150 MB to the peak of a 3,500-bar
# replay (tests/faults/test_load.py) for no measurable speed.
_CHUNK_ELEMENTS = 250_000


def _per_asset(values: Any, name: str) -> list[FloatArray]:
    try:
        array = np.asarray(values, np.float64)
    except ValueError:  # ragged: one array per asset, assets of different lengths
        array = None
    if array is not None:
        if array.ndim == 2:
            return [array]
        if array.ndim == 3:
            return list(array)
        raise ConfigError(
            f"{name}: expected (n_assets, n_seeds, n_bars) or (n_seeds, n_bars), got shape "
            f"{array.shape}. Fix: stack one row per seed, one block per asset."
        )
    assets = [np.asarray(v, np.float64) for v in values]
    for i, each in enumerate(assets):
        if each.ndim != 2:
            raise ConfigError(
                f"{name}[{i}]: expected (n_seeds, n_bars), got shape {each.shape}. "
                "Fix: pass one 2-D array per asset, one row per seed."
            )
    return assets


def _per_asset_rate(rate: Any, n_bars: list[int], periods_per_year: float) -> list[FloatArray]:
    if isinstance(rate, (int, float, np.integer, np.floating)):
        return [np.full(n, float(rate) / periods_per_year) for n in n_bars]
    if len(rate) != len(n_bars):
        raise ConfigError(
            f"risk_free: {len(rate)} entries for {len(n_bars)} assets. Fix: one annual rate "
            "(or one per-bar array of annual rates) per asset."
        )
    out = []
    for i, (r, n) in enumerate(zip(rate, n_bars, strict=True)):
        values = np.asarray(r, np.float64)
        if values.shape not in ((), (n,)):
            raise ConfigError(
                f"risk_free[{i}]: got shape {values.shape} for an asset of {n} bars. Fix: "
                f"pass one annual rate or {n} per-bar annual rates for that asset."
            )
        out.append(np.broadcast_to(values, (n,)) / periods_per_year)
    return out


def _nanmean(x: FloatArray, axis: int) -> FloatArray:
    finite = np.isfinite(x)
    count = finite.sum(axis=axis)
    total = np.where(finite, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _gathered_diffs(
    a: FloatArray,
    b: FloatArray,
    rf: FloatArray,
    metric: str,
    ppy: float,
    seeds: NDArray[np.int64],
    bars: NDArray[np.int64],
) -> FloatArray:
    # Metric differences of resampled series, (m, n_seeds), gathering every resampled bar.
    fn = METRICS[metric]
    rows, cols = seeds[:, :, None], bars[:, None, :]
    rate = rf[bars][:, None, :]
    return fn(a[rows, cols], rate, ppy) - fn(b[rows, cols], rate, ppy)


def _counted_diffs(
    a: FloatArray,
    b: FloatArray,
    rf: FloatArray,
    metric: str,
    ppy: float,
    seeds: NDArray[np.int64],
    bars: NDArray[np.int64],
) -> FloatArray:
    # _gathered_diffs for order-free metrics: Sharpe and geometric return depend on a
    # resample only through how often each bar appears, so sums over a resample are one
    # product of the (m, n_bars) counts with the per-bar values, and no
    # (m, n_seeds, n_bars) array is built.
    m, n_bars = bars.shape
    offsets = bars + (np.arange(m) * n_bars)[:, None]
    counts = np.bincount(offsets.ravel(), minlength=m * n_bars).reshape(m, n_bars)
    counts = counts.astype(np.float64)
    picked = np.arange(m)[:, None], seeds

    def total(values: FloatArray) -> FloatArray:
        # einsum's own loop, not BLAS: a threaded matmul of this size is slower on a
        # shared machine than one core doing it.
        return np.einsum("rt,st->rs", counts, values)[picked]

    out = []
    for x in (a, b):
        if metric == "annual_return":
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                growth = total(np.log1p(x)) * (ppy / n_bars)
                out.append(np.expm1(growth))
            continue
        excess = x - rf
        # Centring on the original mean keeps the one-pass variance free of cancellation.
        shift = excess.mean(axis=1)
        centred = excess - shift[:, None]
        s1 = total(centred)
        s2 = total(centred * centred)
        mean = s1 / n_bars
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(np.maximum(s2 - n_bars * mean * mean, 0.0) / (n_bars - 1))
            scale = np.max(np.abs(excess), axis=1)[seeds]
            ok = (std > 0) & (std > _DEGENERATE_STD * scale)
            ratio = (mean + shift[seeds]) / np.where(ok, std, 1.0) * math.sqrt(ppy)
        # A series that is 0 at every bar resamples to 0 at every bar: ratio 0.
        out.append(np.where(ok, ratio, np.where(scale == 0, 0.0, np.nan)))
    return out[0] - out[1]


def _inner_replicates(
    a: FloatArray,
    b: FloatArray,
    rf: FloatArray,
    metric: str,
    ppy: float,
    count: int,
    block_length: int,
    rng: np.random.Generator,
) -> FloatArray:
    # `count` replicates of one asset: seeds with replacement, one block draw per replicate
    # shared by every resampled seed.
    n_seeds, n_bars = a.shape
    diffs = _gathered_diffs if metric == "max_drawdown" else _counted_diffs
    out = np.empty(count)
    step = max(1, _CHUNK_ELEMENTS // (n_seeds * n_bars))
    for lo in range(0, count, step):
        m = min(step, count - lo)
        seeds = rng.integers(0, n_seeds, size=(m, n_seeds))
        bars = stationary_bootstrap_indices(n_bars, m, block_length, rng)
        out[lo : lo + m] = _nanmean(diffs(a, b, rf, metric, ppy, seeds, bars), axis=1)
    return out


def _seed_tests(diffs: FloatArray) -> dict[str, float]:
    # scipy.stats costs ~0.5 s to import: only runs that compare pay for it.
    from scipy import stats

    nan = {"t_p": math.nan, "wilcoxon_p": math.nan, "sign_p": math.nan}
    if diffs.size < 2:
        return nan
    nonzero = diffs[diffs != 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t_p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
        wilcoxon_p = float(stats.wilcoxon(nonzero).pvalue) if nonzero.size else 1.0
    positive = int(np.count_nonzero(nonzero > 0))
    sign_p = float(stats.binomtest(positive, nonzero.size).pvalue) if nonzero.size else 1.0
    return {"t_p": t_p, "wilcoxon_p": wilcoxon_p, "sign_p": sign_p}


def paired_inference(
    a_returns: ArrayLike | Sequence[ArrayLike],
    b_returns: ArrayLike | Sequence[ArrayLike],
    *,
    a: str,
    b: str,
    periods_per_year: float,
    seed: np.random.SeedSequence | int,
    metric: Metric = "sharpe",
    risk_free: float | Sequence[float | ArrayLike] = 0.0,
    cost_a: ArrayLike | Sequence[ArrayLike] | None = None,
    cost_b: ArrayLike | Sequence[ArrayLike] | None = None,
    basis: str | None = None,
    reps: int = DEFAULT_REPS,
    alpha: float = 0.05,
    min_seeds: int = 10,
    interval: Interval = "t",
    question: str | None = None,
) -> PairedResult:
    """Compare ``a`` with ``b`` on ``metric``, seeds paired, by a hierarchical bootstrap.

    Args:
        a_returns: Per-bar returns of ``a``: ``(n_assets, n_seeds, n_bars)``, one
            ``(n_seeds, n_bars)`` array per asset, or ``(n_seeds, n_bars)`` for one asset.
        b_returns: Those of ``b``, the same shapes; row ``k`` pairs with ``a``'s row ``k``.
        a: Name of the challenger (``hybrid``); a positive estimate means it is better.
        b: Name of the baseline (``drl``).
        periods_per_year: Bars per year (``backtest.metrics.periods_per_year``).
        seed: The bootstrap's ``SeedSequence`` (or an int to build one).
        metric: ``sharpe``, ``annual_return`` or ``max_drawdown``.
        risk_free: Annual risk-free rate: one number, or per asset a number or one annual
            rate per bar (de-annualised as ``rate / periods_per_year``; Sharpe only).
        cost_a: Per-bar cost of ``a`` as a fraction of equity, shaped like ``a_returns``,
            subtracted from them; None when the returns already hold the cost (or to
            measure before cost).
        cost_b: The same for ``b``.
        basis: ``before cost`` or ``after cost`` for the sentence; default ``after cost``
            when a cost is given, else unstated.
        reps: Bootstrap replicates.
        alpha: Significance level; the interval covers ``1 - alpha``.
        min_seeds: Below this many seeds the label is ``underpowered``.
        interval: ``t`` (the default, see the module docs) or ``percentile`` (the plain
            percentile interval, anti-conservative at small seed counts; for reference).
        question: The question in words; a default is built from the names.

    Returns:
        The :class:`PairedResult`.

    Raises:
        ConfigError: Unknown metric, mismatched shapes, or a bad ``reps``/``alpha``.
    """
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r} is unknown. Fix: use one of {sorted(METRICS)}.")
    if reps < 2 or not 0.0 < alpha < 1.0 or interval not in ("t", "percentile"):
        raise ConfigError(
            f"need reps >= 2, 0 < alpha < 1, interval 't' or 'percentile' (got reps={reps}, "
            f"alpha={alpha}, interval={interval!r})"
        )
    fn = METRICS[metric]
    assets_a, assets_b = _per_asset(a_returns, "a_returns"), _per_asset(b_returns, "b_returns")
    for name, cost, assets in (("cost_a", cost_a, assets_a), ("cost_b", cost_b, assets_b)):
        if cost is not None:
            costs = _per_asset(cost, name)
            if [c.shape for c in costs] != [x.shape for x in assets]:
                raise ConfigError(
                    f"{name}: per-asset shapes {[c.shape for c in costs]} differ from the "
                    f"returns' {[x.shape for x in assets]}. Fix: one cost per seed per bar, "
                    "shaped like the returns it is paid from."
                )
            assets[:] = [x - c for x, c in zip(assets, costs, strict=True)]
    shapes_a, shapes_b = [x.shape for x in assets_a], [x.shape for x in assets_b]
    if shapes_a != shapes_b:
        raise ConfigError(
            f"a_returns has per-asset shapes {shapes_a} but b_returns has {shapes_b}. Fix: "
            "pair a@k with b@k on the same bars of the same assets."
        )
    rates = _per_asset_rate(risk_free, [s[1] for s in shapes_a], periods_per_year)
    if basis is None:
        basis = "after cost" if cost_a is not None or cost_b is not None else ""

    used: list[tuple[FloatArray, FloatArray, FloatArray]] = []
    per_seed: list[tuple[float, ...]] = []
    n_nan = 0
    for x, y, rf in zip(assets_a, assets_b, rates, strict=True):
        diff = fn(x, rf, periods_per_year) - fn(y, rf, periods_per_year)
        valid = np.isfinite(diff)
        n_nan += int(np.count_nonzero(~valid))
        per_seed.append(tuple(float(d) for d in diff))
        if valid.any():
            used.append((x[valid], y[valid], rf))
    diffs = [np.asarray(d)[np.isfinite(d)] for d in per_seed]
    diffs = [d for d in diffs if d.size]
    pooled = np.concatenate(diffs) if diffs else np.empty(0)
    n_assets, n_units = len(used), int(pooled.size)
    n_seeds = min((d.size for d in diffs), default=0)
    estimate = float(np.mean([d.mean() for d in diffs])) if diffs else math.nan
    lengths = tuple(politis_white_block_length(np.mean(x - y, axis=0)) for x, y, _ in used)

    rng = np.random.default_rng(seed)
    replicates = np.full(reps, np.nan)
    if n_assets:
        draws = (
            rng.integers(0, n_assets, size=(reps, n_assets))
            if n_assets > 1
            else np.zeros((reps, 1), dtype=np.int64)
        )
        totals = np.zeros(reps)
        for i, ((x, y, rf), length) in enumerate(zip(used, lengths, strict=True)):
            where = np.nonzero(draws == i)[0]
            inner = _inner_replicates(x, y, rf, metric, periods_per_year, where.size, length, rng)
            np.add.at(totals, where, inner)
        replicates = totals / n_assets
    replicates = replicates[np.isfinite(replicates)]

    df = max(n_units - 1, 0)
    se = math.nan
    if replicates.size >= 2 and n_units >= 2:
        se = float(np.std(replicates, ddof=1)) * math.sqrt(n_units / (n_units - 1))
    if interval == "t":
        ci, p_value = _t_interval(estimate, se, df, alpha)
        how = f"t-interval on bootstrap SE x sqrt(n/(n-1)), df={df}"
    else:
        ci, p_value = _percentile_interval(replicates, alpha)
        how = "percentile interval"
    levels = "assets, then seeds, then" if n_assets > 1 else "seeds, then"
    shown = "/".join(str(v) for v in lengths) or "-"
    method = (
        f"paired bootstrap ({replicates.size} reps): {levels} stationary blocks "
        f"(Politis-White L={shown}, one block draw per asset shared by its seeds); {how}"
    )
    if n_seeds < min_seeds:
        label = "underpowered"
    else:
        label = "significant" if p_value < alpha else "not significant"
    if question is None:
        question = f"Does {a} beat {b} on {metric.replace('_', ' ')}{' ' + basis if basis else ''}?"
    return PairedResult(
        question=question,
        a=a,
        b=b,
        metric=metric,
        estimate=estimate,
        ci=ci,
        p_value=p_value,
        n_seeds=n_seeds,
        n_assets=n_assets,
        block_length=max(lengths, default=1),
        method=method,
        label=label,
        basis=basis,
        alpha=alpha,
        min_seeds=min_seeds,
        se=se,
        df=df,
        n_reps=int(replicates.size),
        block_lengths=lengths,
        seed_tests=_seed_tests(pooled),
        per_seed=tuple(per_seed),
        n_nan_seeds=n_nan,
    )


def _t_interval(
    estimate: float, se: float, df: int, alpha: float
) -> tuple[tuple[float, float], float]:
    # scipy.stats costs ~0.5 s to import: only runs that compare pay for it.
    from scipy import stats

    if not (math.isfinite(estimate) and math.isfinite(se) and df >= 1):
        return (math.nan, math.nan), math.nan
    if se == 0.0:
        return (estimate, estimate), 1.0 if estimate == 0.0 else 0.0
    half = float(stats.t.ppf(1.0 - alpha / 2.0, df)) * se
    p_value = float(2.0 * stats.t.sf(abs(estimate) / se, df))
    return (estimate - half, estimate + half), p_value


def _percentile_interval(replicates: FloatArray, alpha: float) -> tuple[tuple[float, float], float]:
    if replicates.size < 2:
        return (math.nan, math.nan), math.nan
    low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    tail = min(float(np.mean(replicates <= 0.0)), float(np.mean(replicates >= 0.0)))
    return (float(low), float(high)), float(min(1.0, 2.0 * tail))
