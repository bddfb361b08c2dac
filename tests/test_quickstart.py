"""The quickstart experiment end to end, as a user runs it: the CLI, the run directory,
the report and the summary; as shipped (SmolLM2's answers replayed from the committed
cassette, strictly: a single miss fails), and with a hosted routing and a key (real SDK
calls to the loopback server standing in for OpenRouter, recorded, then replayed for $0).

Training budgets are cut to a few hundred steps with ``--set``; everything else is the
shipped ``experiments/quickstart.toml``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from backtest.llm.testing import LLMTestServer
from tests.strategies.test_llm import answer

REPO = Path(__file__).resolve().parents[1]
BACKTEST = str(Path(sys.executable).with_name("backtest"))
TINY = "{ n_steps = 8 }"  # A2C's (the quickstart trains A2C)


def _quickstart(
    tmp_path: Path,
    samples_dir: Path,
    *extra: str,
    env: dict[str, str],
    flags: tuple[str, ...] = (),
) -> str:
    drl = [
        "timesteps=256",
        "eval_every=128",
        "episode_bars=64",
        f"hyperparameters={TINY}",
        f'cache_dir="{tmp_path / "models"}"',
    ]
    sets = [f'data.path="{samples_dir / "SP500.parquet"}"', f'output_dir="{tmp_path / "runs"}"']
    sets += [f"strategies[3].params.{d}" for d in drl]
    sets += [f"strategies[5].params.drl.{d}" for d in drl]
    args = [BACKTEST, "run", str(REPO / "experiments" / "quickstart.toml"), "--no-progress"]
    for item in [*sets, *extra]:
        args += ["--set", item]
    args += flags
    clean = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    done = subprocess.run(
        args, cwd=REPO, capture_output=True, text=True, timeout=900, env={**clean, **env}
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _run_dir(tmp_path: Path) -> Path:
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    return run_dir


def test_quickstart_replays_smollm2_from_the_committed_cassette(
    tmp_path: Path, samples_dir: Path
) -> None:
    # Strict replay of a copy: every answer must be in the committed cassette, whatever the
    # tiny DRL here learned (the prompts do not show the DRL's position), and nothing is
    # written to the repository.
    shipped = REPO / "cassettes" / "quickstart"
    before = {p.name: p.read_bytes() for p in shipped.iterdir()}
    assert before, "cassettes/quickstart is missing: make quickstart-live records it"
    cassette = tmp_path / "cassette"
    shutil.copytree(shipped, cassette)
    out = _quickstart(
        tmp_path,
        samples_dir,
        f'llm.cassette="{cassette}"',
        'llm.record_mode="none"',
        env={},
    )
    assert {p.name: p.read_bytes() for p in shipped.iterdir()} == before
    run_dir = _run_dir(tmp_path)
    for name in (
        "manifest.json",
        "summary.json",
        "ledger.parquet",
        "decisions.parquet",
        "llm_calls.parquet",
        "report.html",
    ):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = {
        "buy_and_hold",
        "sma_10_30",
        "random",
        "drl_a2c@0",
        "drl_a2c@1",
        "llm_only",
        "hybrid@0",
        "hybrid@1",
        # The controls that isolate the LLM, added to every hybrid (docs/verdict.md).
        "hybrid~llm0@0",
        "hybrid~llm0@1",
        "hybrid~random_llm@0",
        "hybrid~random_llm@1",
    }
    assert set(summary["strategies"]) == expected
    assert summary["start"].startswith("2016-01-04") and summary["bars"] == 754
    (comparison,) = summary["comparisons"]
    assert (comparison["a"], comparison["b"], comparison["n_seeds"]) == ("drl_a2c", "hybrid", 2)
    assert set(summary["seed_groups"]) == {
        "drl_a2c",
        "hybrid",
        "hybrid~llm0",
        "hybrid~random_llm",
    }
    # The verdict leads the terminal, labelled underpowered at 2 seeds.
    assert out.index("Verdict") < out.index("sma_10_30")
    assert "Underpowered (2 seeds < 10): hybrid" in " ".join(out.split())
    assert summary["verdict_context"]["drl_budget"].startswith("A2C, ")  # what it compared
    calls = pd.read_parquet(run_dir / "llm_calls.parquet")
    # 754 bars, every 20th: 38 decisions of 4 roles, for llm_only and both hybrid members.
    assert len(calls) == 3 * 38 * 4
    assert set(calls["cache"]) == {"hit"} and calls["cost_usd"].sum() == 0
    assert set(calls["model_requested"]) == {"smollm2-135m-instruct"}
    # The terminal and the report both name the model and say it was replayed.
    flat = " ".join(out.split())
    assert "SmolLM2-135M-Instruct (Q4_1) (local" in flat and "replayed (152 answers" in flat
    assert "offline analyst" not in out and "Report:" in out
    report = (run_dir / "report.html").read_text("utf-8")
    assert "SmolLM2-135M-Instruct (Q4_1)" in report and "replayed (152 answers" in report
    assert "came from the offline analyst" not in report
    assert "hybrid \u2212 drl_a2c" in report  # the comparison's heading
    for name in expected:
        assert name in report


def test_quickstart_with_a_key_records_then_replays_for_free(
    tmp_path: Path, samples_dir: Path
) -> None:
    cassette = tmp_path / "cassette"
    with LLMTestServer(models={"*": answer}, prices={"*": (0.27, 1.10)}) as server:
        live = [
            'llm.routing="experiments/routing/seed_stack.toml"',  # hosted models
            "splits.last_bars=60",
            "llm.every_n_bars=5",
            f'llm.base_url="{server.base_url}"',
            f'llm.cassette="{cassette}"',
        ]
        env = {"OPENROUTER_API_KEY": "fake-quickstart-test-key"}
        first = _quickstart(tmp_path, samples_dir, *live, env=env)
        requests = len(server.requests)
        live_dir = _run_dir(tmp_path)
        spend = (live_dir / "llm_calls.parquet").read_bytes()
        # The same inputs: the run is reused, not redone, and the CLI says so.
        again = _quickstart(tmp_path, samples_dir, *live, env=env)
        assert "reused run" in again and "--force to redo" in again
        # A forced redo replays what the live run recorded, in a directory of its own.
        forced = _quickstart(tmp_path, samples_dir, *live, env=env, flags=("--force",))
        assert "LLM cost estimate:" in forced and "reached a live LLM provider" in forced
        assert len(server.requests) == requests  # the reruns asked nothing
    assert requests > 0
    # The live run's record of what it spent survived every rerun, byte for byte.
    assert (live_dir / "llm_calls.parquet").read_bytes() == spend
    live_calls = pd.read_parquet(live_dir / "llm_calls.parquet")
    # (the two hybrid members ask some questions alike: the second asking is a hit)
    assert "recorded" in set(live_calls["cache"]) and live_calls["spend_usd"].sum() > 0
    assert json.loads((live_dir / "manifest.json").read_text())["reached_live"] is True
    run_dir = live_dir.with_name(f"{live_dir.name}.2")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")) == [
        live_dir.name,
        run_dir.name,
    ]
    # The estimate is printed before the run starts, and it bounds what was spent.
    assert first.index("LLM cost estimate:") < first.index("Run ")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["bars"] == 60 and summary["end"].startswith("2018-12-31")
    calls = live_calls
    # 60 bars, every 5th, 4 roles, for llm_only and both hybrid members.
    assert len(calls) == 3 * 12 * 4
    cost = calls["cost_usd"].sum()
    assert cost > 0
    estimate = json.loads((run_dir / "manifest.json").read_text())["llm_cost_estimate"]
    assert estimate["calls"] == len(calls) and estimate["usd"] >= cost
    assert "offline analyst" not in first
    # The rerun replays: $0 spent, the recorded cost still charged, identical ledgers.
    replayed = pd.read_parquet(run_dir / "llm_calls.parquet")
    assert set(replayed["cache"]) == {"hit"} and replayed["spend_usd"].sum() == 0
    assert replayed["cost_usd"].sum() == pytest.approx(cost)
    for key_file in cassette.rglob("*"):
        if key_file.is_file():
            assert b"quickstart-test-key" not in key_file.read_bytes()
