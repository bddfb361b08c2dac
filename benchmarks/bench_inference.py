"""Size of the seed-level verdict: rejection rates with no true edge, and its run time.

The simulation of ``tests/backtest/inference_sims.py`` (250 daily bars, one asset), in two
regimes: ``seed`` (seed-to-seed variance dominates) and ``market`` (a market path shared
by all seeds dominates), with 5, 10 and 20 seeds and no true edge; ``--assets 3`` draws
three independent assets per experiment (no asset effect). Every experiment is
judged at alpha 0.05 by:

- **t on boot SE**: ``paired_inference``'s default, the hierarchical bootstrap's SE with a
  t-interval on ``n_units - 1`` df (what the verdict uses);
- **percentile**: the same bootstrap replicates, plain percentile interval;
- **bars-only**: ``backtest.compare.paired_bootstrap``, all seeds on the same resampled bars
  but the seeds never resampled (Politis-White block length, percentile p-value);
- **seed t-test**: a one-sample t-test of the per-seed Sharpe differences (bars ignored).

A method of the right size rejects about 5%. Then the median time of one
``paired_inference`` call with the default 2,000 replicates.

Usage: ``.venv/bin/python benchmarks/bench_inference.py [--experiments 1000] [--reps 500]
[--seeds 5 10 20] [--assets 1] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))
sys.path.insert(0, str(_HERE))

from _timing import markdown_table, time_interleaved  # noqa: E402

from backtest.compare import optimal_block_size, paired_bootstrap, sharpe_diff  # noqa: E402
from backtest.inference import Metric, paired_inference  # noqa: E402
from tests.backtest.inference_sims import PPY, Regime, experiment  # noqa: E402

METHODS = ("t on boot SE", "percentile", "bars-only", "seed t-test")


def _cell(
    regime: Regime, n_seeds: int, experiments: int, reps: int, n_assets: int = 1
) -> dict[str, object]:
    hits = dict.fromkeys(METHODS, 0)
    t0 = time.perf_counter()
    for child in np.random.SeedSequence([15, n_seeds]).spawn(experiments):
        data, boot, bars = child.spawn(3)
        rng = np.random.default_rng(data)
        if n_assets == 1:
            a, b = experiment(rng, regime, n_seeds)
        else:
            pairs = [experiment(rng, regime, n_seeds) for _ in range(n_assets)]
            a, b = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        common = {"a": "a", "b": "b", "periods_per_year": PPY, "reps": reps, "min_seeds": 1}
        t_result = paired_inference(a, b, seed=boot, **common)  # type: ignore[arg-type]
        pct_result = paired_inference(a, b, seed=boot, interval="percentile", **common)  # type: ignore[arg-type]
        if n_assets == 1:  # compare.paired_bootstrap knows one asset only
            only = paired_bootstrap(
                a,
                b,
                sharpe_diff(PPY),
                rng=np.random.default_rng(bars),
                reps=reps,
                block_size=optimal_block_size(np.mean(a - b, axis=0)),
            )
            hits["bars-only"] += only["p_value"] < 0.05
        hits["t on boot SE"] += t_result.p_value < 0.05
        hits["percentile"] += pct_result.p_value < 0.05
        hits["seed t-test"] += t_result.seed_tests["t_p"] < 0.05
    row: dict[str, object] = {"regime": regime, "assets": n_assets, "seeds": n_seeds}
    row.update({m: f"{100 * hits[m] / experiments:.1f}%" for m in METHODS})
    if n_assets > 1:
        row["bars-only"] = "-"
    row["wall_s"] = f"{time.perf_counter() - t0:.1f}"
    return row


def _timing_lines(repeats: int) -> list[str]:
    rng = np.random.default_rng(0)
    small = experiment(rng, "market", 10)
    wide = [experiment(rng, "market", 10, n_bars=2520) for _ in range(3)]
    wide_a, wide_b = np.stack([w[0] for w in wide]), np.stack([w[1] for w in wide])

    def call(a: np.ndarray, b: np.ndarray, metric: Metric) -> Callable[[], float]:
        def once() -> float:
            kwargs = {"a": "a", "b": "b", "periods_per_year": PPY, "seed": 1, "metric": metric}
            return paired_inference(a, b, **kwargs).estimate  # type: ignore[arg-type]

        return once

    timing = time_interleaved(
        {
            "sharpe, 1 asset x 10 seeds x 250 bars": call(*small, "sharpe"),
            "sharpe, 3 assets x 10 seeds x 2,520 bars": call(wide_a, wide_b, "sharpe"),
            "max_drawdown, 1 asset x 10 seeds x 250 bars": call(*small, "max_drawdown"),
        },
        repeats=repeats,
    )
    return [
        "### One `paired_inference` call, 2,000 replicates (median of interleaved repeats)",
        "",
        markdown_table(timing, columns=["name", "median_s", "iqr_s"], formats={"median_s": ".3f"}),
    ]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=500, help="bootstrap replicates")
    parser.add_argument("--seeds", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--assets", type=int, default=1, help="assets per experiment")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (0: none)")
    args = parser.parse_args(argv)
    rows = [
        _cell(regime, n_seeds, args.experiments, args.reps, args.assets)
        for regime in ("seed", "market")
        for n_seeds in args.seeds
    ]
    lines = [
        f"### Verdict size: rejection rate at alpha 0.05 with no true edge ({args.experiments} "
        f"experiments per row, {args.reps} bootstrap replicates, 250 bars)",
        "",
        markdown_table(rows, columns=["regime", "assets", "seeds", *METHODS, "wall_s"]),
    ]
    if args.repeats > 0:
        lines += ["", *_timing_lines(args.repeats)]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
