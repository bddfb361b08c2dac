"""Run every benchmark and print their Markdown tables.

Usage: ``.venv/bin/python benchmarks/run_all.py [--repeats 7] [--data DIR]``

``--data`` is a directory holding ``SP500.parquet``; by default the samples are written to a
temporary directory with ``backtest data samples --dest``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import bench_cassette  # noqa: E402
import bench_drl  # noqa: E402
import bench_env  # noqa: E402
import bench_llm  # noqa: E402
import bench_report  # noqa: E402
import bench_sma  # noqa: E402
import bench_sweep  # noqa: E402
import bench_vecenv  # noqa: E402
from _data import sample_dir  # noqa: E402

PACKAGES = (
    "numpy",
    "pandas",
    "gymnasium",
    "gym-anytrading",
    "gym-trading-env",
    "backtesting",
    "vectorbt",
    "numba",
    "vcrpy",
    "quantstats",
    "stable-baselines3",
    "torch",
)


def versions_line() -> str:
    parts = [f"python {platform.python_version()}"]
    for name in PACKAGES:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run all benchmarks.")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved warm repeats")
    parser.add_argument("--data", default=None, help="directory holding SP500.parquet")
    parser.add_argument(
        "--cassette-calls",
        type=int,
        default=2000,
        help="chat completions replayed by the cassette benchmark",
    )
    args = parser.parse_args(argv)

    print(f"_{versions_line()}; {platform.machine()}, {platform.system()}_\n", flush=True)
    with sample_dir(args.data) as data:
        for bench in (bench_env, bench_sma):
            t0 = time.perf_counter()
            bench.main(["--repeats", str(args.repeats), "--data", str(data)])
            print(f"\n_{bench.__name__}: {time.perf_counter() - t0:.0f} s wall_\n", flush=True)
        t0 = time.perf_counter()
        bench_drl.main(["--repeats", str(min(args.repeats, 5)), "--data", str(data)])
        print(f"\n_bench_drl: {time.perf_counter() - t0:.0f} s wall_\n", flush=True)
        t0 = time.perf_counter()
        bench_vecenv.main(["--repeats", str(min(args.repeats, 5)), "--data", str(data)])
        print(f"\n_bench_vecenv: {time.perf_counter() - t0:.0f} s wall_\n", flush=True)
        for bench in (bench_llm, bench_sweep, bench_report):
            t0 = time.perf_counter()
            extra = ["--ray"] if bench is bench_sweep else []  # ray comes with the dev extra
            bench.main(["--data", str(data), *extra])
            print(f"\n_{bench.__name__}: {time.perf_counter() - t0:.0f} s wall_\n", flush=True)
    # vcrpy's replay grows with the square of the cassette: 2,000 calls take minutes.
    t0 = time.perf_counter()
    bench_cassette.main(["--calls", str(args.cassette_calls), "--repeats", "1"])
    print(f"\n_bench_cassette: {time.perf_counter() - t0:.0f} s wall_\n", flush=True)


if __name__ == "__main__":
    main()
