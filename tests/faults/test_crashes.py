"""Fault matrix, item 4: SIGKILL of ``backtest run`` while recording and of ``backtest sweep``.

After the kill, ``backtest cassette verify`` passes; every answer the server gave was
recorded except those in flight (at most two: narrative and data processing are asked
concurrently); no run directory is half-written; and running the same command again asks
the server only for what was not recorded and ends with results identical to an
uninterrupted run. The cassette's own SIGKILL test (a bare writer, no engine) is
tests/backtest/llm/test_cassette.py::test_sigkill_loses_at_most_the_call_in_flight; the
resumable sweep without LLMs is tests/backtest/test_sweep.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from backtest.llm.cassette import Cassette
from backtest.llm.testing import LLMTestServer
from tests.faults.conftest import BACKTEST, answer, cli, llm_params, write_experiment

pytestmark = pytest.mark.slow


def _recordings(cassette: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in cassette.glob("shard-*.tsv"))


def _kill_when(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the command finished before it could be killed"
        assert time.monotonic() < deadline, "the command made no progress"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the command and any worker it started
    proc.wait(timeout=30)


def _same_results(a: Path, b: Path) -> None:
    for name in ("ledger", "decisions"):
        assert (a / f"{name}.parquet").read_bytes() == (b / f"{name}.parquet").read_bytes()
    x = pq.read_table(a / "llm_calls.parquet").to_pandas()
    y = pq.read_table(b / "llm_calls.parquet").to_pandas()
    same = [c for c in x.columns if c not in ("cache", "spend_usd", "latency_ms")]
    pd.testing.assert_frame_equal(x[same], y[same])


def test_sigkill_of_a_recording_run(sp500: Path, tmp_path: Path) -> None:
    env = {"OPENROUTER_API_KEY": "test-key-for-crashes"}
    with LLMTestServer(models={"*": answer}, prices={"*": (0.27, 1.1)}, latency_ms=15) as server:

        def experiment(folder: str) -> Path:
            (tmp_path / folder).mkdir()
            params = llm_params(server, tmp_path / folder / "cassette")
            return write_experiment(
                tmp_path / folder / "exp.toml",
                sp500,
                strategies=[{"name": "llm", "kind": "llm", "params": params}],
                start="2015-07-01",
                end="2015-10-30",
            )

        # The uninterrupted run, for reference.
        reference = cli("run", str(experiment("ref")), "--no-progress", cwd=tmp_path, env=env)
        assert reference.returncode == 0, reference.stderr
        needed = len(server.requests)
        # The same run, killed once it has recorded a few dozen answers.
        crash = experiment("crash")
        cassette = tmp_path / "crash" / "cassette"
        before = len(server.requests)
        proc = subprocess.Popen(
            [BACKTEST, "run", str(crash), "--no-progress"],
            cwd=tmp_path,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _kill_when(proc, lambda: _recordings(cassette) >= 40)
        answered = len(server.requests) - before
        verify = cli("cassette", "verify", str(cassette), cwd=tmp_path)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        kept = len(Cassette(cassette, "none"))
        assert answered - 2 <= kept <= answered  # only the calls in flight are lost
        assert len(list((tmp_path / "runs").glob("*/summary.json"))) == 1  # the reference
        # Run it again: only what was not recorded is asked for, and the results match.
        before = len(server.requests)
        again = cli("run", str(crash), "--no-progress", cwd=tmp_path, env=env)
        assert again.returncode == 0, again.stderr
        assert len(server.requests) - before == needed - kept
    runs = {p.parent.name: p.parent for p in (tmp_path / "runs").glob("*/summary.json")}
    assert len(runs) == 2  # the reference and the rerun; the killed run left no directory
    assert not list((tmp_path / "runs").glob(".*.tmp-*"))
    first, second = runs.values()
    _same_results(first, second)


def _sweep(tmp_path: Path, server: LLMTestServer, sp500: Path, folder: str) -> Path:
    (tmp_path / folder).mkdir()
    params = llm_params(server, tmp_path / folder / "cassette")
    write_experiment(
        tmp_path / folder / "base.toml",
        sp500,
        strategies=[{"name": "llm", "kind": "llm", "params": params}],
        start="2015-08-01",
        end="2015-10-30",
        # Scored on September; the selected fee is then run on October.
        extra='[splits]\ntrain_end = "2015-09-01"\nvalidation_end = "2015-10-01"',
    )
    sweep = tmp_path / folder / "sweep.toml"
    sweep.write_text(
        'base = "base.toml"\noutput_dir = "out"\n[grid]\n"env.fee_bps" = [0.5, 1.0, 2.0, 4.0]\n'
    )
    return sweep


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigkill_of_a_sweep(sp500: Path, tmp_path: Path) -> None:
    env = {"OPENROUTER_API_KEY": "test-key-for-crashes"}
    with LLMTestServer(models={"*": answer}, prices={"*": (0.27, 1.1)}, latency_ms=10) as server:
        reference = cli(
            "sweep",
            str(_sweep(tmp_path, server, sp500, "ref")),
            "--workers",
            "2",
            cwd=tmp_path,
            env=env,
        )
        assert reference.returncode == 0, reference.stderr
        sweep = _sweep(tmp_path, server, sp500, "crash")
        out = tmp_path / "crash" / "out"
        proc = subprocess.Popen(
            [BACKTEST, "sweep", str(sweep), "--workers", "2"],
            cwd=tmp_path,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while not list(out.glob("*/summary.json")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # the sweep's own process, as the OOM killer would
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphans = subprocess.run(
            ["ps", "-o", "pid,ppid,args", "-s", str(proc.pid)], capture_output=True, text=True
        ).stdout
        if _alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        assert orphans.count("\n") <= 1, f"sweep workers outlived the sweep:\n{orphans}"
        done = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
        assert 1 <= len(done) < 5  # of 4 validation runs and 1 test run
        cassette = tmp_path / "crash" / "cassette"
        verify = cli("cassette", "verify", str(cassette), cwd=tmp_path)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        again = cli("sweep", str(sweep), "--workers", "2", cwd=tmp_path, env=env)
        assert again.returncode == 0, again.stderr
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    assert len(after) == 5 and all(after[k] == v for k, v in done.items())
    assert not list(out.glob(".*.tmp-*"))
    ref = pd.read_parquet(tmp_path / "ref" / "out" / "sweep_runs.parquet")
    got = pd.read_parquet(out / "sweep_runs.parquet")
    metrics = [c for c in ref.columns if c not in ("run_id", "status")]
    pd.testing.assert_frame_equal(
        ref[metrics].sort_values(["point", "strategy"]).reset_index(drop=True),
        got[metrics].sort_values(["point", "strategy"]).reset_index(drop=True),
    )
    assert (ref["status"] == "done").all()
