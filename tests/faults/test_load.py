"""Fault matrix, item 8: a long LLM replay completes with bounded memory.

``benchmarks/bench_replay_memory.py`` records an LLM-only run over N synthetic hourly bars
(4 calls a decision) and replays it with ``backtest run`` in a child process, reporting the
child's peak RSS. The full size (100,000 bars, 400,000 calls) is a benchmark; its figure is
in docs/reliability.md. Here two small sizes bound the growth per call: before the cassette
stopped holding every line and every parsed recording, a replay grew by about 14.7 KB of RSS
per call; the bound below is 6 KB (measured now: about 2.8 KB, the ledger's own records).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.faults.conftest import REPO

pytestmark = pytest.mark.slow

SMALL, LARGE = 800, 3000
MAX_KB_PER_CALL = 6.0
MAX_PEAK_MB = 600.0


def _measure(bars: int) -> dict[str, float]:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_replay_memory.py"),
            "--bars",
            str(bars),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_replay_memory_grows_by_a_bounded_amount_per_call() -> None:
    small, large = _measure(SMALL), _measure(LARGE)
    for figures in (small, large):
        assert figures["llm_calls"] == figures["recorded_calls"] == 4 * figures["decisions"]
    per_call_kb = (
        (large["peak_rss_mb"] - small["peak_rss_mb"])
        * 1024
        / (large["llm_calls"] - small["llm_calls"])
    )
    assert per_call_kb <= MAX_KB_PER_CALL, (small, large)
    assert large["peak_rss_mb"] <= MAX_PEAK_MB, large
