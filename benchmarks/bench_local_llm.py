"""The local model: SmolLM2-135M-Instruct through llama.cpp's server, asked for real.

An LLM-only run of the quickstart's prompts (local routing, 20-bar prompts, every role in its
JSON schema) over the first ``--decisions`` bars of the S&P 500 test split, every bar a
decision, against the real server (started once, before the clock), into a fresh cassette:

- per call: latency p50 / p95 and completion tokens per second (from ``llm_calls``);
- per decision: the wall time of one ``LLMPolicy.act`` (4 calls: chart, then narrative and
  data together, then the orchestrator), the "live decision" of the issue's table;
- how many answers were usable (the rest abstain, by reason).

Needs ``make local``. Usage: ``.venv/bin/python benchmarks/bench_local_llm.py [--data DIR]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))
sys.path.insert(0, str(_HERE))

from _data import sample_dir  # noqa: E402

import strategies.llm.graph as graph  # noqa: E402
from backtest import RunConfig, run  # noqa: E402
from backtest.llm import local  # noqa: E402

ROUTING = _HERE.parent / "experiments" / "routing" / "local.toml"


def _config(data: Path, folder: Path, base_url: str) -> RunConfig:
    # The data end cuts the test split to its first 7 bars (2016-01-04..2016-01-12).
    return RunConfig.model_validate(
        {
            "data": {"path": str(data / "SP500.parquet"), "end": "2016-01-12"},
            "splits": {"train_end": "2013-01-01", "validation_end": "2016-01-01"},
            "strategies": [
                {
                    "name": "llm",
                    "kind": "llm",
                    "params": {
                        "routing": str(ROUTING),
                        "base_url": base_url,
                        "cassette": str(folder / "cassette"),
                        "lookback_bars": 20,
                        "portfolio_in_prompt": False,
                    },
                }
            ],
            "benchmark": None,
            "output_dir": str(folder / "runs"),
        }
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="Sample data directory (default: written).")
    parser.add_argument("--decisions", type=int, default=7, help="Decisions to time.")
    args = parser.parse_args(argv)
    local.check_installed()
    latencies: list[float] = []
    act = graph.LLMPolicy.act

    def timed(self: Any, obs: Any) -> Any:
        started = time.perf_counter()
        decision = act(self, obs)
        if len(latencies) < args.decisions:
            latencies.append(time.perf_counter() - started)
        return decision

    with sample_dir(args.data) as data, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with local.LocalServer() as server:
            ready_s = time.perf_counter() - started
            graph.LLMPolicy.act = timed  # type: ignore[method-assign]
            try:
                config = _config(data, Path(tmp), server.base_url)
                result = run(config, write=False)
            finally:
                graph.LLMPolicy.act = act  # type: ignore[method-assign]
    calls = result.tables["llm_calls"].to_pandas()
    calls = calls[calls["cache"] != "hit"]
    seconds = calls["latency_ms"].to_numpy() / 1000
    tokens_per_s = (calls["completion_tokens"] / (calls["latency_ms"] / 1000)).tolist()
    decisions = result.tables["decisions"].to_pandas()
    usable = int((~decisions["abstain"]).sum())
    lines = [
        "### Local model: SmolLM2-135M-Instruct (Q4_1) via llama.cpp's server",
        "",
        f"{len(calls)} calls in {len(latencies)} decisions, every bar of 2016-01-04..2016-01-12 "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; server ready in "
        f"{ready_s:.1f} s).",
        "",
        "| measure | measured |",
        "|---|---|",
        f"| call latency p50 / p95 | {_pct(list(seconds), 0.5):.2f} s / "
        f"{_pct(list(seconds), 0.95):.2f} s |",
        f"| completion tokens per second, median over calls | "
        f"{statistics.median(tokens_per_s):.1f} |",
        f"| prompt tokens per call, median | {statistics.median(calls['prompt_tokens']):.0f} |",
        f"| one live decision (4 calls), median / max | {statistics.median(latencies):.2f} s / "
        f"{max(latencies):.2f} s |",
        f"| decisions with a usable answer | {usable} of {len(decisions)} |",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
