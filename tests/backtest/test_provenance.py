"""Faithful run ids and immutable runs: every input changes the id, the same inputs reuse the
run, and a run that reached a live provider is never overwritten."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backtest.config import RunConfig
from backtest.engine import LLM_CALL_SCHEMA, run, run_id_for, run_inputs
from backtest.errors import BacktestError

REPO = Path(__file__).resolve().parents[2]


def _config(samples_dir: Path, out: Path, strategies: list[dict[str, object]]) -> RunConfig:
    return RunConfig.model_validate(
        {
            "data": {"path": str(samples_dir / "SP500.parquet")},
            "splits": {"train_end": "2013-01-01", "validation_end": "2016-01-01"},
            "strategies": strategies,
            "output_dir": str(out),
        }
    )


def _llm(tmp_path: Path, **params: object) -> list[dict[str, object]]:
    routing = tmp_path / "routing.toml"
    if not routing.exists():
        routing.write_text((REPO / "experiments/routing/seed_stack.toml").read_text())
    llm = {"routing": str(routing), "cassette": str(tmp_path / "cassette"), **params}
    return [{"name": "llm", "kind": "llm", "params": llm}]


def test_the_same_inputs_give_the_same_id(samples_dir: Path, tmp_path: Path) -> None:
    config = _config(samples_dir, tmp_path / "out", _llm(tmp_path))
    assert run_id_for(config) == run_id_for(config)
    again = _config(samples_dir, tmp_path / "elsewhere", _llm(tmp_path))
    assert run_id_for(again) == run_id_for(config)  # where output goes is not an input


def test_setting_a_key_gives_a_new_id_and_never_its_value(
    samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    config = _config(samples_dir, tmp_path / "out", _llm(tmp_path))
    offline = run_id_for(config)
    assert run_inputs(config)["strategies.llm.source"] == "offline"
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test-one")
    live = run_id_for(config)
    inputs = run_inputs(config)
    assert live != offline and inputs["strategies.llm.source"] == "live"
    assert inputs["strategies.llm.profile"] == "openrouter"
    assert inputs["strategies.llm.api_key_env"] == "OPENROUTER_API_KEY"
    assert "qwen" in inputs["strategies.llm.models"] and inputs["strategies.llm.base_url"]
    assert not any("sk-or-test" in v for v in inputs.values())
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test-two")
    assert run_id_for(config) == live  # the key's value is not an input
    # Another base URL (a local server) is another source of answers.
    local = _config(samples_dir, tmp_path / "out", _llm(tmp_path, base_url="http://127.0.0.1:9/v1"))
    assert run_id_for(local) != live


def test_the_cassette_fingerprint_is_in_the_id(
    samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    config = _config(samples_dir, tmp_path / "out", _llm(tmp_path))
    offline = run_id_for(config)
    cassette = tmp_path / "cassette"
    cassette.mkdir()
    (cassette / "shard-a.tsv").write_text("k1\t00000000\t{}\n")
    replay = run_id_for(config)
    assert replay != offline and run_inputs(config)["strategies.llm.source"] == "replay"
    # A recording added (a torn line is no recording yet): a new id.
    with open(cassette / "shard-b.tsv", "w") as fh:
        fh.write("k2\t00000000\t{}\nk3\t000")
    grown = run_id_for(config)
    assert grown != replay
    # The same recordings compacted into one shard: the same answers, the same id.
    (cassette / "shard-a.tsv").unlink()
    (cassette / "shard-b.tsv").unlink()
    (cassette / "shard-merged.tsv").write_text("k2\t00000000\t{}\nk1\t00000000\t{}\n")
    assert run_id_for(config) == grown
    (cassette / "shard-merged.tsv").write_text('k2\t00000000\t{}\nk1\t00000000\t{"x":1}\n')
    assert run_id_for(config) != grown  # a recording changed
    # A live run that records as it goes is named by its cassette's absolute path, not its
    # contents: the recordings it and a sweep's other runs add would otherwise hide it from
    # its own rerun, and a killed live sweep could not resume.
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test")
    live = run_id_for(config)
    (cassette / "shard-c.tsv").write_text("k4\t00000000\t{}\n")
    assert run_id_for(config) == live
    recording = f"recording (new_episodes) into {cassette.resolve()}"
    assert run_inputs(config)["strategies.llm.cassette"] == recording
    # Two cassettes of the same name in two folders: two runs, not one.
    other = tmp_path / "elsewhere" / cassette.name
    other.mkdir(parents=True)
    moved = _config(samples_dir, tmp_path / "out", _llm(tmp_path, cassette=str(other)))
    assert run_id_for(moved) != live
    replay_only = _config(samples_dir, tmp_path / "out", _llm(tmp_path, record_mode="none"))
    before = run_id_for(replay_only)
    (cassette / "shard-c.tsv").write_text("k5\t00000000\t{}\n")
    assert run_id_for(replay_only) != before


def test_editing_strategy_code_or_a_prompt_gives_a_new_id(
    samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import backtest.engine.code as code

    # A user's strategy module, by its source.
    package = tmp_path / "user"
    package.mkdir()
    module = package / "my_strategy.py"
    module.write_text(
        "from strategies.baselines import BuyAndHold\n\nclass Mine(BuyAndHold):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(package))
    config = _config(samples_dir, tmp_path / "out", [{"name": "m", "kind": "my_strategy:Mine"}])
    before = run_id_for(config)
    assert "code.my_strategy" in run_inputs(config)
    module.write_text(module.read_text() + "# tuned\n")
    assert run_id_for(config) != before

    # The project's own code: every file of strategies/ (a copy stands in for the tree;
    # the prompts are strategies/llm/prompts.py).
    copy = tmp_path / "strategies"
    shutil.copytree(REPO / "strategies", copy, ignore=shutil.ignore_patterns("__pycache__"))
    real = code._package_dir
    monkeypatch.setattr(
        code, "_package_dir", lambda name: copy if name == "strategies" else real(name)
    )
    llm = _config(samples_dir, tmp_path / "out", _llm(tmp_path))
    first = run_id_for(llm)
    prompts = copy / "llm" / "prompts.py"
    prompts.write_text(prompts.read_text() + "\n# a prompt edited\n")
    second = run_id_for(llm)
    env_code = copy / "drl.py"
    env_code.write_text(env_code.read_text() + "\n# training code edited\n")
    assert len({first, second, run_id_for(llm)}) == 3


def test_news_beside_the_data_is_an_input(samples_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(samples_dir / "SP500.parquet", data / "SP500.parquet")
    config = _config(samples_dir, tmp_path / "out", [{"name": "b", "kind": "buy_and_hold"}])
    config = config.model_copy(
        update={"data": config.data.model_copy(update={"path": str(data / "SP500.parquet")})}
    )
    before = run_id_for(config)
    (data / "news.parquet").write_bytes(b"v1")
    with_news = run_id_for(config)
    (data / "news.parquet").write_bytes(b"v2")
    assert len({before, with_news, run_id_for(config)}) == 3


def _fake_live(run_dir: Path) -> bytes:
    """Make a run look as if it had reached a live provider: one paid call recorded."""
    row = {name: [None] for name in LLM_CALL_SCHEMA.names}
    row.update(
        strategy=["b"],
        role=["meta_orchestrator"],
        model_requested=["deepseek/deepseek-chat"],
        cost_usd=[0.0123],
        spend_usd=[0.0123],
        cache=["recorded"],
    )
    pq.write_table(pa.Table.from_pydict(row, schema=LLM_CALL_SCHEMA), run_dir / "llm_calls.parquet")
    return (run_dir / "llm_calls.parquet").read_bytes()


def test_complete_runs_are_reused_and_live_runs_never_overwritten(
    samples_dir: Path, tmp_path: Path
) -> None:
    from backtest.engine.write import _write_run_dir

    config = _config(samples_dir, tmp_path / "out", [{"name": "b", "kind": "buy_and_hold"}])
    first = run(config)
    assert not first.reused
    stamp = (first.run_dir / "summary.json").stat().st_mtime_ns
    again = run(config)
    assert again.reused and again.run_dir == first.run_dir and again.run_id == first.run_id
    assert (first.run_dir / "summary.json").stat().st_mtime_ns == stamp  # not rewritten
    assert again.summary == first.summary and again.ledger.equals(first.ledger)
    redone = run(config, force=True)  # an offline run may be redone in place
    assert not redone.reused and redone.run_dir == first.run_dir

    spend = _fake_live(first.run_dir)
    for force in (False, True, True):
        result = run(config, force=force)
        assert (first.run_dir / "llm_calls.parquet").read_bytes() == spend
    assert result.run_dir.name == f"{first.run_id}.3"  # each redo in a directory of its own
    assert (first.run_dir.parent / f"{first.run_id}.2" / "summary.json").is_file()
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["run_id"] == first.run_id and manifest["reached_live"] is False
    # The writer itself refuses to replace a live run, whoever calls it.
    with pytest.raises(BacktestError, match=r"reached a live LLM provider.*never overwritten"):
        _write_run_dir(first.run_dir, result.tables, result.summary, result.manifest)
    assert (first.run_dir / "llm_calls.parquet").read_bytes() == spend


def test_the_cli_says_when_it_reuses_a_run(samples_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    backtest = str(Path(sys.executable).with_name("backtest"))
    experiment = tmp_path / "e.toml"
    experiment.write_text(
        f'[data]\npath = "{samples_dir / "SP500.parquet"}"\n'
        '[[strategies]]\nname = "b"\nkind = "buy_and_hold"\n'
    )
    args = [backtest, "run", str(experiment), "--out", str(tmp_path / "runs"), "--no-report"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    (run_dir,) = (tmp_path / "runs").iterdir()
    text = " ".join(again.stdout.split())
    assert f"reused run {run_dir.name} from {run_dir}, --force to redo" in text
    forced = subprocess.run(
        [*args, "--force"], capture_output=True, text=True, timeout=120, check=False
    )
    assert "reused" not in forced.stdout and f"Run {run_dir.name} written" in forced.stdout
