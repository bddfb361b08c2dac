"""LLM-only strategy: a full replay from a cassette, and one live decision's latency.

1. Record an LLM-only run of the S&P 500 sample's 2016-2018 test split (754 bars, 4 calls a
   bar, the chart role shown a rendered candlestick PNG) through the loopback test server,
   then time the same run replayed from the cassette (``run(write=False)`` from the call;
   imports and the recording excluded), counting the charts rendered during the replays.
2. Time single live decisions against the server with a fixed 200 ms latency per call.
3. Time one chart render (60 candles, 768x512 PNG) on the sample's bars.

Usage: ``.venv/bin/python benchmarks/bench_llm.py [--data DIR]``
"""

from __future__ import annotations

import argparse
import json
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

import strategies.llm.charts as charts  # noqa: E402
import strategies.llm.graph as graph  # noqa: E402
from backtest import RunConfig, run  # noqa: E402
from backtest.data import load_bars  # noqa: E402
from backtest.llm.testing import LLMTestServer  # noqa: E402

ROUTING = _HERE.parent / "experiments" / "routing" / "seed_stack.toml"
# Complete answers under the strict role schemas (every field, no other key): an incomplete
# one is an abstain, and the benchmarks would time the abstain path instead of a decision.
REPLIES = {
    "technical analyst": {
        "trend": "up",
        "support": None,
        "resistance": None,
        "patterns": ["higher lows"],
        "signal": 0.6,
        "confidence": 0.8,
        "reasoning": "up",
    },
    "expert market analyst": {
        "regime": "bull",
        "drivers": ["momentum"],
        "risks": ["reversal"],
        "signal": 0.7,
        "confidence": 0.7,
        "reasoning": "bull",
    },
    "order-flow": {
        "order_flow_imbalance": 0.2,
        "volume_spike": False,
        "signal": 0.2,
        "confidence": 0.5,
        "reasoning": "buying",
    },
    "orchestrator": {
        "action": "BUY",
        "size": 0.5,
        "signal": 0.5,
        "confidence": 0.75,
        "risk_level": "medium",
        "reasoning": "agree",
    },
}


def _answer(body: dict[str, Any]) -> str:
    system = body["messages"][0]["content"]
    return json.dumps(next((r for k, r in REPLIES.items() if k in system), {}))


def _config(
    data: Path, folder: Path, base_url: str, mode: str, end: str | None = None
) -> RunConfig:
    return RunConfig.model_validate(
        {
            "data": {"path": str(data / "SP500.parquet"), "end": end},
            "splits": {"train_end": "2013-01-01", "validation_end": "2016-01-01"},
            "strategies": [
                {
                    "name": "llm",
                    "kind": "llm",
                    "params": {
                        "routing": str(ROUTING),
                        "mode": mode,
                        "cassette": str(folder / "cassette"),
                        "base_url": base_url,
                    },
                }
            ],
            "benchmark": None,
            "output_dir": str(folder / "runs"),
        }
    )


def _render_ms(path: Path, repeats: int = 200) -> float:
    """Median time of one chart render, over windows of the sample's test split."""
    bars = load_bars(path, start="2016-01-01")
    frame = bars.frame
    times = []
    for k in range(repeats):
        window = frame.iloc[k : k + 60]
        context = {
            "symbol": bars.symbol,
            "frequency": bars.frequency,
            "timestamps": [t.isoformat() for t in window.index],
            **{c: window[c].tolist() for c in ("open", "high", "low", "close", "volume")},
        }
        started = time.perf_counter()
        charts.render_candles(context)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    original = graph.load_routing
    graph.load_routing = lambda p: original(p).model_copy(  # type: ignore[assignment]
        update={"profile": "openai_compatible"}
    )
    with sample_dir(args.data) as data, tempfile.TemporaryDirectory() as tmp:
        data_path = data / "SP500.parquet"
        folder = Path(tmp)
        with LLMTestServer(models={"*": _answer}) as server:
            renders: list[float] = []
            render = charts.render_candles

            def counted(context: Any, spec: Any = charts.ChartSpec()) -> bytes:
                renders.append(1.0)
                return render(context, spec)

            charts.render_candles = counted  # type: ignore[assignment]
            recorded = run(_config(data, folder, server.base_url, "live"), write=False)
            recorded_renders = len(renders)
            calls = len(recorded.llm_calls)
            renders.clear()
            replays, replays_cpu = [], []
            for _ in range(args.repeats):
                started, started_cpu = time.perf_counter(), time.process_time()
                replayed = run(_config(data, folder, server.base_url, "replay"), write=False)
                replays.append(time.perf_counter() - started)
                replays_cpu.append(time.process_time() - started_cpu)
            charts.render_candles = render  # type: ignore[assignment]
            replay_renders = len(renders)
            assert replayed.ledger.equals(recorded.ledger)
            assert replay_renders == 0, "a replay rendered a chart"
        # One decision = one call of LLMPolicy.act, timed around it (the run's set-up apart).
        latencies: list[float] = []
        act = graph.LLMPolicy.act

        def timed(self: Any, obs: Any) -> Any:
            started = time.perf_counter()
            decision = act(self, obs)
            latencies.append(time.perf_counter() - started)
            return decision

        graph.LLMPolicy.act = timed  # type: ignore[method-assign]
        with LLMTestServer(models={"*": _answer}, latency_ms=200) as slow:
            run(
                _config(data, folder / "slow", slow.base_url, "live", end="2016-01-15"), write=False
            )
        graph.LLMPolicy.act = act  # type: ignore[method-assign]
        render_ms = _render_ms(data_path)
    replay_s = statistics.median(replays)
    lines = [
        "### LLM-only strategy (seed_stack routing, loopback server)",
        "",
        "| measure | target | measured | status |",
        "|---|---|---|---|",
        f"| full replay from the cassette, 754 bars, {calls} calls | <= 1 s | "
        f"{replay_s:.2f} s wall, {statistics.median(replays_cpu):.2f} s CPU (median of "
        f"{args.repeats}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores) | "
        f"{'met' if replay_s <= 1 else 'missed'} |",
        f"| one live decision, 200 ms per call | <= 0.62 s | "
        f"{statistics.median(latencies):.3f} s (median of {len(latencies)} decisions) | "
        f"{'met' if statistics.median(latencies) <= 0.62 else 'missed'} |",
        f"| charts rendered: recording / all {args.repeats} replays | 754 / 0 | "
        f"{recorded_renders} / {replay_renders} | "
        f"{'met' if replay_renders == 0 else 'missed'} |",
        f"| one chart render (60 candles, 768x512 PNG) | - | {render_ms:.1f} ms "
        "(median of 200) | - |",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
