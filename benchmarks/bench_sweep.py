"""Sweep scaling: 8 replay-only LLM runs with 1 worker against 2 (medians of interleaved repeats).

An LLM-only run of the S&P 500 test split is recorded once through the loopback server; the
sweep then replays it under 8 grid points (4 risk-free rates x 2 names: every point is its own
run and none changes a prompt, so every answer comes from the cassette; a grid over fees would
change the equity the meta prompt shows, and rightly miss).

Usage: ``.venv/bin/python benchmarks/bench_sweep.py [--repeats 3]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))
sys.path.insert(0, str(_HERE))

import bench_llm  # noqa: E402
from _data import sample_dir  # noqa: E402

import strategies.llm.graph as graph  # noqa: E402
from backtest import run  # noqa: E402
from backtest.llm.testing import LLMTestServer  # noqa: E402
from backtest.sweep import load_sweep, run_sweep  # noqa: E402

ROUTING = _HERE.parent / "experiments" / "routing" / "seed_stack.toml"
GRID = 'risk_free_rate = [0.0, 0.01, 0.02, 0.03]\nname = ["a", "b"]\n'


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", default=None)
    args = parser.parse_args(argv)
    original = graph.load_routing
    graph.load_routing = lambda p: original(p).model_copy(  # type: ignore[assignment]
        update={"profile": "openai_compatible"}
    )
    with sample_dir(args.data) as data, tempfile.TemporaryDirectory() as tmp:
        data = data.resolve()
        folder = Path(tmp)
        with LLMTestServer(models={"*": bench_llm._answer}) as server:
            run(bench_llm._config(data, folder, server.base_url, "live"), write=False)
        # A routing file with the local profile, for the worker processes.
        routing = folder / "routing.toml"
        routing.write_text(
            ROUTING.read_text().replace('profile = "openrouter"', 'profile = "openai_compatible"')
        )
        cassette = folder / "cassette"
        (folder / "base.toml").write_text(
            f'name = "llm-replay"\n[data]\npath = "{data / "SP500.parquet"}"\n'
            '[splits]\ntrain_end = "2013-01-01"\nvalidation_end = "2016-01-01"\n'
            '[[strategies]]\nname = "llm"\nkind = "llm"\n'
            f'params = {{ routing = "{routing}", mode = "replay", cassette = "{cassette}", '
            'base_url = "http://127.0.0.1:9/v1" }\n'
        )
        times: dict[int, list[float]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for workers in (1, 2):
                out = folder / f"out-{workers}-{repeat}"
                (folder / "sweep.toml").write_text(
                    f'base = "base.toml"\noutput_dir = "{out}"\n[grid]\n{GRID}'
                )
                started = time.perf_counter()
                table = run_sweep(load_sweep(folder / "sweep.toml"), workers=workers)
                times[workers].append(time.perf_counter() - started)
                assert (table["status"] == "done").all(), table["error"].tolist()[:1]
                shutil.rmtree(out)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    lines = [
        f"### Sweep of 8 replay-only LLM runs (median of {args.repeats} interleaved repeats)",
        "",
        "| workers | wall s | speed-up |",
        "|---|---|---|",
        f"| 1 | {one:.2f} | 1.00 |",
        f"| 2 | {two:.2f} | {one / two:.2f} |",
        "",
        f"- target >= 1.7x with 2 workers: {'met' if one / two >= 1.7 else 'missed'}; raw "
        f"{[round(t, 2) for t in times[1]]} vs {[round(t, 2) for t in times[2]]}",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
