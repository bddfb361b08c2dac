"""Sweep scaling: 8 replay-only LLM runs with 1 worker against 2 (medians of interleaved repeats).

An LLM-only run of the S&P 500 validation and test splits is recorded once through the
loopback server; the sweep then replays it under 8 grid points (4 risk-free rates x 2 names:
every point is its own run and none changes a prompt, so every answer comes from the cassette;
a grid over fees would change the equity the meta prompt shows, and rightly miss). A sweep
runs the 8 points on validation, then the selected one on test, then computes the selection
statistics (DSR, PBO, SPA): both the 8-run phase and the whole sweep are timed. With
``--ray`` the whole sweep is also timed on a local 2-CPU Ray instance (started once, outside
the timing, as a cluster would be).

Usage: ``.venv/bin/python benchmarks/bench_sweep.py [--repeats 3] [--ray]``
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--ray", action="store_true", help="also time the Ray backend")
    args = parser.parse_args(argv)
    original = graph.load_routing
    graph.load_routing = lambda p: original(p).model_copy(  # type: ignore[assignment]
        update={"profile": "openai_compatible"}
    )
    with sample_dir(args.data) as data, tempfile.TemporaryDirectory() as tmp:
        data = data.resolve()
        folder = Path(tmp)
        with LLMTestServer(models={"*": bench_llm._answer}) as server:
            for split in ("validation", "test"):
                config = bench_llm._config(data, folder, server.base_url, "live")
                splits = config.splits.model_copy(update={"evaluate": split})
                run(config.model_copy(update={"splits": splits}), write=False)
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
        backends = ["1", "2"] + (["ray"] if args.ray else [])
        times: dict[str, list[float]] = {b: [] for b in backends}
        phase: dict[str, list[float]] = {b: [] for b in backends}
        ray_started = False
        if args.ray:
            import ray

            os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            ray_started = True
        try:
            for repeat in range(args.repeats):
                for backend in backends:
                    out = folder / f"out-{backend}-{repeat}"
                    (folder / "sweep.toml").write_text(
                        f'base = "base.toml"\noutput_dir = "{out}"\nstrategy = "llm"\n'
                        f"[grid]\n{GRID}"
                    )
                    finished: list[float] = []
                    started = time.perf_counter()
                    table = run_sweep(
                        load_sweep(folder / "sweep.toml"),
                        workers=2 if backend == "ray" else int(backend),
                        backend="ray" if backend == "ray" else "local",
                        on_done=lambda point, status, done=finished: done.append(
                            time.perf_counter()
                        ),
                    )
                    times[backend].append(time.perf_counter() - started)
                    phase[backend].append(finished[7] - started)  # the 8th validation run
                    assert len(table["run_id"].unique()) == 9, table
                    assert (table["status"] == "done").all(), table["error"].tolist()[:1]
                    shutil.rmtree(out)
        finally:
            if ray_started:
                ray.shutdown()
    load = os.getloadavg()[1]  # the machine is shared: say how busy it was
    one = statistics.median(phase["1"])
    lines = [
        f"### Sweep of 8 replay-only LLM runs (median of {args.repeats} interleaved repeats)",
        "",
        "| backend | 8 validation runs, s | speed-up | whole sweep (+ test run, statistics), s "
        "| speed-up |",
        "|---|---|---|---|---|",
    ]
    whole_one = statistics.median(times["1"])
    for backend in backends:
        label = {"1": "local, 1 worker", "2": "local, 2 workers", "ray": "Ray, 2 CPUs"}[backend]
        runs, whole = statistics.median(phase[backend]), statistics.median(times[backend])
        lines.append(
            f"| {label} | {runs:.2f} | {one / runs:.2f} | {whole:.2f} | {whole_one / whole:.2f} |"
        )
    two = statistics.median(phase["2"])
    lines += [
        "",
        f"- target >= 1.7x with 2 workers (the 8 runs): {'met' if one / two >= 1.7 else 'missed'}; "
        f"raw {[round(t, 2) for t in phase['1']]} vs {[round(t, 2) for t in phase['2']]}",
        f"- load average over the last 5 minutes at the end: {load:.2f} on {os.cpu_count()} cores",
        "- whole sweeps, raw: "
        + "; ".join(f"{b}: {[round(t, 2) for t in times[b]]}" for b in backends),
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
