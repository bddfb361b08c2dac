"""Peak memory of a long LLM replay: N synthetic hourly bars x 4 calls a decision.

1. Write N hourly bars (a seeded random walk on the 24/7 calendar) as a dataset.
2. Record an LLM-only run over them into a cassette. The calls do not go over HTTP (N x 4
   loopback requests would take hours at N = 100,000; the HTTP path is what
   tests/faults/test_llm_faults.py exercises): ``LLMClient._live`` is replaced by a function
   that answers like the loopback server (same body, usage and cost), so the cassette and
   everything above it are the real code.
3. Replay it with ``backtest run`` (mode ``replay``) in a child process; report its peak RSS
   (``ru_maxrss`` of the child, via ``resource.getrusage``) and wall time. With
   ``--measure traced`` (or ``both``) a replay runs under ``tracemalloc`` and reports the
   peak of the memory Python and numpy allocated (``traced_peak_mb``). Unlike RSS it does
   not depend on what else the machine is doing, on allocator caching or on page sharing,
   so the growth per call measured from it repeats run to run (arrow's own buffers are
   not traced; RSS is the figure for them). Below ~1,500 bars the traced peak is a
   constant ~64 MB reached early in the run (loading, compiling the env kernel); the
   growth per call shows above it.

Usage: ``.venv/bin/python benchmarks/bench_replay_memory.py --bars 100000 [--json]``
``[--measure rss|traced|both]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))

from backtest import RunConfig, run  # noqa: E402
from backtest.data import BarMeta, write_bars  # noqa: E402
from backtest.llm import client as client_module  # noqa: E402
from backtest.llm.cassette import Recording  # noqa: E402
from backtest.llm.testing import count_completion_tokens, count_prompt_tokens  # noqa: E402

sys.path.insert(0, str(_HERE))
from bench_llm import REPLIES, ROUTING  # noqa: E402  (the same scripted analyst)

_PRICE_IN, _PRICE_OUT = 0.27, 1.10  # USD per million tokens, as the loopback server's "*"


def synthetic_bars(n: int, dest: Path, seed: int = 7) -> Path:
    """``n`` hourly bars of a seeded random walk, written as ``dest/SYN.parquet``."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0.0, 0.001, n))
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1 + spread),
            "low": np.minimum(open_, close) * (1 - spread),
            "close": close,
            "volume": rng.uniform(1e3, 1e4, n).round(),
        },
        index=pd.date_range("2010-01-01", periods=n, freq="1h", tz="UTC", name="timestamp").as_unit(
            "ns"
        ),
    )
    meta = BarMeta(symbol="SYN", frequency="1h", calendar="24/7", source="synthetic")
    return write_bars(frame, dest / "SYN.parquet", meta)


def _answer(messages: Any) -> str:
    system = messages[0]["content"]
    return json.dumps(next((r for k, r in REPLIES.items() if k in system), {}))


def _fake_live(self: Any, request: Any, key: str, canonical: dict[str, Any]) -> Recording:
    content = _answer(request.messages)
    prompt = count_prompt_tokens([dict(m) for m in request.messages])
    completion = count_completion_tokens(content)
    body = {
        "id": "gen-" + key[:20],
        "provider": "Synthetic",
        "model": request.model,
        "object": "chat.completion",
        "created": 1_700_000_000,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content, "refusal": None},
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cost": (prompt * _PRICE_IN + completion * _PRICE_OUT) / 1e6,
        },
    }
    return Recording(
        key=key,
        request=canonical,
        outcome="ok",
        response=body,
        latency_ms=1.0,
        meta={"profile": self.profile.name, "images": 0},
    )


def experiment(folder: Path, data: Path, mode: str) -> dict[str, Any]:
    """The experiment (as a dict) of an LLM-only run over ``data``."""
    return {
        "name": "replay-memory",
        "data": {"path": str(data), "max_gap": None},
        "env": {"window": 5},
        "benchmark": None,
        "strategies": [
            {
                "name": "llm",
                "kind": "llm",
                "params": {
                    "routing": str(ROUTING),
                    "mode": mode,
                    "cassette": str(folder / "cassette"),
                    "base_url": "http://127.0.0.1:9/v1",
                    "max_retries": 0,
                },
            }
        ],
        "output_dir": str(folder / "runs"),
    }


def record(folder: Path, data: Path) -> int:
    """Record the run's calls into ``folder/cassette``; return the number of calls."""
    original = client_module.LLMClient._live
    client_module.LLMClient._live = _fake_live  # type: ignore[method-assign]
    os.environ.setdefault("OPENROUTER_API_KEY", "synthetic-recording")
    import backtest.llm.cassette as cassette_module
    import strategies.llm.graph as graph

    def cassette(path: Any, mode: Any, **kwargs: Any) -> Any:
        return cassette_module.Cassette(path, mode, fsync=False, **kwargs)

    graph.Cassette = cassette  # type: ignore[assignment,misc]
    try:
        result = run(RunConfig.model_validate(experiment(folder, data, "live")), write=False)
    finally:
        client_module.LLMClient._live = original  # type: ignore[method-assign]
        graph.Cassette = cassette_module.Cassette  # type: ignore[misc]
    return len(result.llm_calls)


_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
    "sys.stderr.buffer.write(r.stderr)\n"
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
    " time.perf_counter() - t)\n"
)


# The CLI under tracemalloc, started after the CLI's imports: the peak is of what the run
# itself allocates (modules it imports on demand included, a constant across sizes).
_TRACE = (
    "import resource, sys, tracemalloc\n"
    "from backtest.cli import main\n"
    "tracemalloc.start()\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "    code = 0\n"
    "except SystemExit as exit_:\n"
    "    code = exit_.code or 0\n"
    "peak = tracemalloc.get_traced_memory()[1]\n"
    "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "print('TRACED', code, peak, rss)\n"
)


def replay_traced(folder: Path, data: Path) -> tuple[float, float]:
    """Replay under ``tracemalloc`` in a child process; return its traced peak and its
    peak RSS (tracemalloc's own bookkeeping included), in MB."""
    toml = folder / "replay-traced.toml"
    config = experiment(folder, data, "replay")
    config["output_dir"] = str(folder / "runs-traced")
    toml.write_text(_to_toml(config))
    out = subprocess.run(
        [sys.executable, "-c", _TRACE, "run", str(toml), "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OPENROUTER_API_KEY": ""},
    )
    line = next((x for x in reversed(out.stdout.splitlines()) if x.startswith("TRACED ")), "")
    if not line or line.split()[1] != "0":
        raise SystemExit(f"traced replay failed: {out.stderr[-2000:]}")
    _, _, peak, rss = line.split()
    return int(peak) / 2**20, int(rss) / 1024


def replay(folder: Path, data: Path) -> tuple[float, float]:
    """Replay with ``backtest run`` in a child process; return (peak RSS MB, seconds)."""
    config = experiment(folder, data, "replay")
    toml = folder / "replay.toml"
    toml.write_text(_to_toml(config))
    exe = str(Path(sys.executable).with_name("backtest"))
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, exe, "run", str(toml), "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OPENROUTER_API_KEY": ""},
    )
    status, kilobytes, seconds = out.stdout.split()
    if status != "0":
        raise SystemExit(f"replay failed: {out.stderr[-2000:]}")
    return int(kilobytes) / 1024, float(seconds)


def _to_toml(config: dict[str, Any]) -> str:
    params = config["strategies"][0]["params"]
    inline = ", ".join(f"{k} = {json.dumps(v)}" for k, v in params.items())
    return (
        f'name = "{config["name"]}"\nbenchmark = "llm"\noutput_dir = '
        f"{json.dumps(config['output_dir'])}\n[data]\npath = {json.dumps(config['data']['path'])}\n"
        'max_gap = "36500D"\n[env]\nwindow = 5\n[[strategies]]\nname = "llm"\nkind = "llm"\n'
        f"params = {{{inline}}}\n"
    )


def measure(bars: int, folder: Path, rss: bool = True, traced: bool = False) -> dict[str, Any]:
    """Build, record and replay ``bars`` bars in ``folder``; the figures as a dict.

    ``rss`` replays once and reports ``peak_rss_mb`` and ``replay_s``; ``traced`` replays
    under ``tracemalloc`` and reports ``traced_peak_mb``.
    """
    data = synthetic_bars(bars, folder)
    started = time.perf_counter()
    calls = record(folder, data)
    record_s = time.perf_counter() - started
    shards = list((folder / "cassette").glob("shard-*.tsv"))
    figures: dict[str, Any] = {}
    if rss:
        peak_mb, replay_s = replay(folder, data)
        figures |= {"replay_s": round(replay_s, 1), "peak_rss_mb": round(peak_mb, 1)}
    if traced:
        traced_mb, traced_rss_mb = replay_traced(folder, data)
        figures |= {
            "traced_peak_mb": round(traced_mb, 4),
            "traced_run_peak_rss_mb": round(traced_rss_mb, 1),
        }
    summary_path = next((folder / ("runs" if rss else "runs-traced")).glob("*/summary.json"))
    stats = json.loads(summary_path.read_text())["strategies"]["llm"]
    return {
        "bars": bars,
        "decisions": stats["decisions"],
        "llm_calls": stats["llm_calls"],
        "recorded_calls": calls,
        "cassette_mb": round(sum(p.stat().st_size for p in shards) / 2**20, 1),
        "record_s": round(record_s, 1),
        **figures,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--measure",
        choices=("rss", "traced", "both"),
        default="rss",
        help="peak RSS of a plain replay, the tracemalloc peak of a traced one, or both",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        figures = measure(
            args.bars,
            Path(tmp),
            rss=args.measure in ("rss", "both"),
            traced=args.measure in ("traced", "both"),
        )
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
    return figures


if __name__ == "__main__":
    main()
