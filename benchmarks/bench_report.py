"""Report generation: our run report (4 strategies) against quantstats' HTML tearsheet (1).

A run of 4 strategies (buy-and-hold, SMA 10/30, SMA 20/50, random) over the whole S&P 500
sample (5,031 daily bars) is written once; then, interleaved, ``write_run_report`` builds
its report and ``quantstats.reports.html`` builds a tearsheet of *one* of those strategies
(SMA 10/30's daily returns, no benchmark so nothing is downloaded). Target: ours <= 0.2x
quantstats' time, and the file <= 5 MB.

Usage: ``.venv/bin/python benchmarks/bench_report.py [--repeats 3] [--data DIR]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))
sys.path.insert(0, str(_HERE))

from _data import sample_dir  # noqa: E402
from _timing import markdown_table, time_interleaved  # noqa: E402

from backtest import RunConfig, run  # noqa: E402
from reports.run import write_run_report  # noqa: E402


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=None)
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import quantstats as qs

    with sample_dir(args.data) as data, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = RunConfig.model_validate(
            {
                "name": "report-bench",
                "data": {"path": str(Path(data) / "SP500.parquet")},
                "strategies": [
                    {"name": "sma_10_30", "kind": "sma", "params": {"fast": 10, "slow": 30}},
                    {"name": "sma_20_50", "kind": "sma", "params": {"fast": 20, "slow": 50}},
                    {"name": "random", "kind": "random"},
                ],
                "output_dir": str(folder / "runs"),
                "seed": 0,
            }
        )
        result = run(config)
        bars = result.summary["bars"]
        equity = result.equity
        returns = equity["sma_10_30"].pct_change().dropna()
        returns.index = returns.index.tz_localize(None)
        out = folder / "report.html"

        def ours() -> float:
            return float(write_run_report(result.run_dir, out).stat().st_size)

        def quantstats() -> float:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                qs.reports.html(returns, output=str(folder / "qs.html"), title="sma_10_30")
            return float((folder / "qs.html").stat().st_size)

        rows = time_interleaved(
            {"ours (4 strategies)": ours, "quantstats (1 strategy)": quantstats},
            repeats=args.repeats,
            reference="quantstats (1 strategy)",
        )
    size_mb = rows[0]["result"] / 1e6
    lines = [
        f"### Run report, {len(equity.columns)} strategies x {bars:,} bars, vs quantstats' "
        f"tearsheet of one (median of {args.repeats} interleaved repeats)",
        "",
        markdown_table(rows),
        "",
        f"Our report: {size_mb:.2f} MB (target <= 5 MB); quantstats' file: "
        f"{rows[1]['result'] / 1e6:.2f} MB.",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
