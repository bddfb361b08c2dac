"""The verdict in a run: controls added and faithful to their hybrid, summary.verdict,
several assets pooled, the CLI leading with it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from backtest import RunConfig, run
from backtest.cli import app

REPO = Path(__file__).resolve().parents[2]
ROUTING = str(REPO / "experiments/routing/seed_stack.toml")


def _drl(tmp_path: Path) -> dict[str, object]:
    return {
        "timesteps": 256,
        "episode_bars": 64,
        "eval_every": 128,
        "hyperparameters": {"n_steps": 64, "batch_size": 32},
        "cache_dir": str(tmp_path / "models"),
    }


def _hybrid_config(samples_dir: Path, tmp_path: Path, **overrides: object) -> RunConfig:
    drl = _drl(tmp_path)
    llm = {"mode": "offline", "routing": ROUTING, "every_n_bars": 3}
    raw: dict[str, object] = {
        "data": {"path": str(samples_dir / "SP500.parquet"), "end": "2016-06-30"},
        "splits": {"train_end": "2015-06-01", "validation_end": "2016-01-01"},
        "strategies": [
            {"name": "drl", "kind": "drl", "seeds": 2, "params": drl},
            {"name": "hybrid", "kind": "hybrid", "seeds": 2, "params": {"drl": drl, "llm": llm}},
        ],
        "output_dir": str(tmp_path / "runs"),
        "verdict": {"reps": 200},
    }
    raw.update(overrides)
    return RunConfig.model_validate(raw)


def _llm_signals(decisions: pd.DataFrame, name: str) -> list[tuple[float, bool]]:
    rows = decisions[decisions.strategy == name]["signals"]
    out = []
    for raw in rows:
        llm = next(s for s in json.loads(raw) if s["agent"] == "llm")
        out.append((llm["features"]["age_bars"], bool(llm.get("abstain", False))))
    return out


@pytest.fixture(scope="module")
def hybrid_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("verdict-run")


@pytest.fixture(scope="module")
def hybrid_run(samples_dir: Path, hybrid_tmp: Path):  # type: ignore[no-untyped-def]
    return run(_hybrid_config(samples_dir, hybrid_tmp), write=False)


def test_the_same_run_gives_the_same_controls_and_verdict(  # type: ignore[no-untyped-def]
    hybrid_run, samples_dir: Path, hybrid_tmp: Path
) -> None:
    again = run(_hybrid_config(samples_dir, hybrid_tmp), write=False)  # models cached
    assert again.ledger.equals(hybrid_run.ledger)  # pandas: NaN equals NaN
    assert json.dumps(again.summary["verdict"]) == json.dumps(hybrid_run.summary["verdict"])


def test_controls_run_beside_each_hybrid_member_and_cost_nothing(hybrid_run) -> None:  # type: ignore[no-untyped-def]
    strategies = hybrid_run.summary["strategies"]
    for k in (0, 1):
        for control in ("llm0", "random_llm"):
            name = f"hybrid~{control}@{k}"
            assert name in strategies, sorted(strategies)
            assert strategies[name]["llm_calls"] == 0 and strategies[name]["llm_cost_usd"] == 0
            # Same bars asked (age 0) and held, same abstains, as its hybrid member.
            assert _llm_signals(hybrid_run.decisions, name) == _llm_signals(
                hybrid_run.decisions, f"hybrid@{k}"
            )
    assert strategies["hybrid@0"]["llm_calls"] > 0
    # Risk beside return: mean |exposure| and time in market for every strategy.
    for stats in strategies.values():
        assert 0.0 <= stats["exposure"] <= 1.0 + 1e-9
        assert 0.0 <= stats["time_in_market"] <= 1.0
    assert set(hybrid_run.summary["seed_groups"]) >= {"hybrid~llm0", "hybrid~random_llm"}


def test_the_summary_carries_the_verdict(hybrid_run) -> None:  # type: ignore[no-untyped-def]
    verdict = hybrid_run.summary["verdict"]
    questions = {(e["question"], e["metric"]) for e in verdict}
    for question in (
        "hybrid_vs_drl_net",
        "llm_vs_llm0",
        "llm_vs_random_llm",
        "hybrid_vs_matched_passive",
    ):
        assert (question, "sharpe") in questions
    for entry in verdict:
        assert entry["label"] == "underpowered"  # 2 seeds < 10
        assert entry["n_assets"] == 1 and entry["asset"] == "pooled"
        assert entry["n_seeds"] <= 2
    context = hybrid_run.summary["verdict_context"]
    assert context["drl"] == "drl" and "256 timesteps" in context["drl_budget"]
    json.dumps(verdict, allow_nan=False)


def test_controls_can_be_turned_off(samples_dir: Path, tmp_path: Path) -> None:
    config = _hybrid_config(
        samples_dir,
        tmp_path,
        controls=False,
        strategies=[
            {
                "name": "hybrid",
                "kind": "hybrid",
                "seeds": 1,
                "params": {
                    "drl": _drl(tmp_path),
                    "llm": {"mode": "offline", "routing": ROUTING, "every_n_bars": 5},
                },
            }
        ],
    )
    result = run(config, write=False)
    assert not any("~" in name for name in result.summary["strategies"])
    assert {e["question"] for e in result.summary["verdict"]} == {
        "hybrid_vs_matched_passive",
        "hybrid_vs_voltarget_passive",
    }


def test_a_strategy_name_may_not_use_the_control_marker(samples_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'~', which marks the controls"):
        _hybrid_config(samples_dir, tmp_path, strategies=[{"name": "a~b", "kind": "buy_and_hold"}])


def _assets_experiment(samples_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "assets.toml"
    path.write_text(
        f"""
name = "two-assets"
output_dir = "{tmp_path / "runs"}"
[verdict]
reps = 200
[data]
path = ["{samples_dir / "SP500.parquet"}", "{samples_dir / "NASDAQ.parquet"}"]
[splits]
train_end = "2015-01-01"
validation_end = "2016-01-01"
[[strategies]]
name = "llm_only"
kind = "llm"
params = {{ mode = "offline", routing = "{ROUTING}", every_n_bars = 10 }}
"""
    )
    return path


def test_several_assets_are_run_one_by_one_and_pooled(samples_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["run", str(_assets_experiment(samples_dir, tmp_path)), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    # The verdict comes first, before any table, in words.
    first = result.output.index("Verdict")
    assert first < result.output.index("SP500 20")
    assert "Underpowered (1 seed < 10): llm_only" in result.output.replace("\n", " ")
    assert "2 assets" in result.output
    pooled = [p for p in (tmp_path / "runs").iterdir() if (p / "summary.json").is_file()]
    summaries = {p.name: json.loads((p / "summary.json").read_text()) for p in pooled}
    [(pooled_id, summary)] = [(k, s) for k, s in summaries.items() if "assets" in s]
    assert set(summary["assets"]) == {"SP500", "NASDAQ"}
    for info in summary["assets"].values():
        assert info["run_id"] in summaries  # each asset is an ordinary run directory
    rows = [e for e in summary["verdict"] if e["question"] == "llm_only_vs_buy_and_hold"]
    assert {e["asset"] for e in rows} == {"pooled", "SP500", "NASDAQ"}
    assert all(e["n_assets"] == (2 if e["asset"] == "pooled" else 1) for e in rows)
    manifest = json.loads((tmp_path / "runs" / pooled_id / "manifest.json").read_text())
    # Each asset's warnings, said of that asset (the offline analyst answered on both).
    assert {w.split(":")[0] for w in manifest["warnings"]} == {"SP500", "NASDAQ"}
    # The pooled id follows the asset runs: the same experiment lands in the same place.
    from backtest.config import load_experiment

    assert run(load_experiment(_assets_experiment(samples_dir, tmp_path)), write=False).run_id == (
        pooled_id
    )
    report = (tmp_path / "runs" / pooled_id / "report.html").read_text()
    assert 'table class="verdict"' in report and "SP500" in report
    assert report.index('id="verdict"') < report.index('id="assets"')


def test_an_asset_listed_twice_is_refused(samples_dir: Path, tmp_path: Path) -> None:
    path = samples_dir / "SP500.parquet"
    with pytest.raises(ValueError, match="lists a data file twice"):
        _hybrid_config(samples_dir, tmp_path, data={"path": [str(path), str(path)]})
