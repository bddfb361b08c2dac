"""Fault matrix, item 5: several processes writing into one cassette and one model cache.

Four ``backtest run`` processes record LLM answers into one cassette at the same time (two
of them ask exactly the same calls); two ``backtest sweep`` processes train and share DRL
models in one cache directory. Nothing is corrupted or lost: the cassette verifies and
replays each of the four runs exactly with no request going out; the model cache holds one
complete model per training key and no staging leftovers, and both sweeps agree.
The bare-writer case (four processes, 240 calls) is
tests/backtest/llm/test_cassette.py::test_four_processes_record_into_one_cassette_without_loss.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from backtest import RunConfig, run
from backtest.llm.cassette import Cassette
from backtest.llm.testing import LLMTestServer
from tests.faults.conftest import BACKTEST, answer, cli, llm_params, write_experiment

pytestmark = pytest.mark.slow

RANGES = [
    ("2015-07-01", "2015-09-30"),
    ("2015-07-01", "2015-09-30"),  # the same calls as the first, at the same time
    ("2015-08-01", "2015-10-30"),
    ("2015-09-01", "2015-11-30"),
]


def test_four_runs_record_into_one_cassette(sp500: Path, tmp_path: Path) -> None:
    cassette = tmp_path / "cassette"
    env = {**os.environ, "OPENROUTER_API_KEY": "test-key-for-concurrency"}
    with LLMTestServer(models={"*": answer}, prices={"*": (0.27, 1.1)}, latency_ms=5) as server:
        experiments = []
        for i, (start, end) in enumerate(RANGES):
            params = llm_params(server, cassette)
            experiments.append(
                write_experiment(
                    tmp_path / f"exp{i}.toml",
                    sp500,
                    strategies=[{"name": "llm", "kind": "llm", "params": params}],
                    start=start,
                    end=end,
                )
            )
        procs = [
            subprocess.Popen(
                [BACKTEST, "run", str(e), "--no-progress", "--out", str(tmp_path / f"out{i}")],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i, e in enumerate(experiments)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
        # Chat requests only: each live run also reads the model list once, before its first call.
        received = len(server.requests)
        asked = sum(1 for r in server.requests if r.path.endswith("/chat/completions"))
        verify = cli("cassette", "verify", str(cassette), cwd=tmp_path)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        stored = Cassette(cassette, "none")
        assert len(list(cassette.glob("shard-*.tsv"))) == 4  # one shard per writer
        # Every answer is kept: requests = distinct recordings + the duplicates that the
        # two identical runs recorded at the same time (the first in shard order is used).
        assert len(stored) + stored.stats().duplicate_keys == asked
        # Each run replays exactly from the shared cassette, asking the server nothing.
        for i, (start, end) in enumerate(RANGES):
            recorded = next((tmp_path / f"out{i}").glob("*/ledger.parquet"))
            config = RunConfig.model_validate(
                {
                    "name": "faults",
                    "seed": 1,
                    "data": {"path": str(sp500), "start": start, "end": end},
                    "env": {"window": 5},
                    "strategies": [
                        {"name": "llm", "kind": "llm", "params": llm_params(None, cassette)}
                    ],
                    "output_dir": str(tmp_path / f"replay{i}"),
                }
            )
            replayed = run(config)
            assert replayed.run_dir.joinpath("ledger.parquet").read_bytes() == (
                recorded.read_bytes()
            )
        assert len(server.requests) == received  # the replays sent nothing


def _drl_sweep(tmp_path: Path, sp500: Path, models: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    params = {
        "timesteps": 256,
        "episode_bars": 64,
        "eval_every": 128,
        "hyperparameters": {"n_steps": 64, "batch_size": 32},
        "cache_dir": str(models),
    }
    write_experiment(
        folder / "base.toml",
        sp500,
        strategies=[{"name": "ppo", "kind": "drl", "seeds": 1, "params": params}],
        start="2013-01-01",
        end="2014-12-31",
        extra='[splits]\ntrain_end = "2014-06-30"\nvalidation_end = "2014-09-30"',
    )
    sweep = folder / "sweep.toml"
    sweep.write_text('base = "base.toml"\noutput_dir = "out"\n[grid]\nseed = [0, 1]\n')
    return sweep


def test_two_sweeps_share_one_model_cache(sp500: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    sweeps = [_drl_sweep(tmp_path, sp500, models, name) for name in ("a", "b")]
    procs = [
        subprocess.Popen(
            [BACKTEST, "sweep", str(s), "--workers", "1"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in sweeps
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    tables = [pd.read_parquet(s.parent / "out" / "sweep_runs.parquet") for s in sweeps]
    for table in tables:
        assert (table["status"] == "done").all(), table["error"].tolist()
    folders = sorted(p.name for p in models.iterdir())
    # One model per seed trained for the validation runs, and one per seed for the
    # selected configuration's test runs (the grid's two seeds are one configuration,
    # trained on the bars before the test split): 4, each once, though two sweeps asked
    # for each of them.
    assert len(folders) == 4 and not [f for f in folders if ".tmp-" in f], folders
    for folder in models.iterdir():
        assert {"manifest.json", "normalisation.npz", "best_model.zip"} <= {
            p.name for p in folder.iterdir()
        }
    columns = ["point", "strategy", "total_return", "sharpe", "trade_count", "final_equity_usd"]
    pd.testing.assert_frame_equal(tables[0][columns], tables[1][columns])


def test_a_merge_under_an_open_reader_is_a_clear_error(tmp_path: Path) -> None:
    """Known gap, made explicit: merging while a run uses the cassette."""
    from backtest.errors import CassetteError
    from backtest.llm.cassette import Recording

    for batch in range(2):
        with Cassette(tmp_path, "new_episodes") as writer:
            for i in range(3):
                key = f"{batch * 10 + i:064x}"
                writer.record(Recording(key=key, request={"i": i}, outcome="ok", response={}))
    reader = Cassette(tmp_path, "none")
    Cassette(tmp_path, "none").merge()
    with pytest.raises(CassetteError, match="merge only when no run is using it"):
        reader.get(f"{0:064x}")
    assert len(Cassette(tmp_path, "none")) == 6  # the merged cassette lost nothing


_SLOW_WRITER = """
import sys
from backtest.llm.cassette import Cassette, Recording
cassette = Cassette(sys.argv[1], "new_episodes")
def put(i):
    cassette.record(Recording(key=f"{1000 + i:064x}", request={"i": i}, outcome="ok", response={}))
put(0)
print("ready", flush=True)
sys.stdin.readline()
put(1)
cassette.close()
"""


def test_merge_leaves_a_live_writers_shard_alone(tmp_path: Path) -> None:
    """``backtest cassette merge`` while a run records: the run's later records survive."""
    import sys

    finished = (
        "import sys\nfrom backtest.llm.cassette import Cassette, Recording\n"
        "with Cassette(sys.argv[1], 'new_episodes') as c:\n"
        "    c.record(Recording(key=f'{1:064x}', request={}, outcome='ok', response={}))\n"
    )
    subprocess.run([sys.executable, "-c", finished, str(tmp_path)], check=True)
    writer = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdin is not None
    assert writer.stdout.readline().strip() == "ready"
    merged = cli("cassette", "merge", str(tmp_path), cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    writer.stdin.write("go\n")
    writer.stdin.flush()
    assert writer.wait(timeout=60) == 0
    cassette = Cassette(tmp_path, "none")
    assert len(cassette) == 3 and cassette.verify() == []
    assert len(list(tmp_path.glob("shard-*.tsv"))) == 2  # merged + the live writer's


def test_a_closed_shard_of_a_living_process_is_merged(tmp_path: Path) -> None:
    """A sweep worker (a Ray worker lives on between tasks) that closed its cassette:
    its shard is complete, so a merge compacts it; only an open shard is left alone."""
    import sys

    script = (
        "import sys\nfrom backtest.llm.cassette import Cassette, Recording\n"
        "c = Cassette(sys.argv[1], 'new_episodes')\n"
        "c.record(Recording(key=f'{7:064x}', request={}, outcome='ok', response={}))\n"
        "print('open', flush=True)\n"
        "sys.stdin.readline()\n"
        "c.close()\n"
        "print('closed', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None and worker.stdin is not None
    try:
        assert worker.stdout.readline().strip() == "open"
        Cassette(tmp_path, "none").merge()
        assert len(list(tmp_path.glob("shard-*.tsv"))) == 2  # still open: left alone
        worker.stdin.write("\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "closed"
        Cassette(tmp_path, "none").merge()  # the process lives on; its shard is closed
        assert [p.name for p in tmp_path.glob("shard-*.tsv")] == ["shard-merged.tsv"]
        assert len(Cassette(tmp_path, "none")) == 1
    finally:
        worker.stdin.write("\n")
        worker.stdin.flush()
        worker.wait(timeout=60)
