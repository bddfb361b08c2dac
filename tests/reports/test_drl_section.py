"""The report's look inside the DRL strategies: training curves and the combiner's crossings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backtest import RunConfig, run
from backtest.policy_report import combiner_lines, combiner_rows, training_runs
from reports.run import run_report_html
from reports.training import drl_section

REPO = Path(__file__).resolve().parents[2]


def _combiner(bars: int, agreement: int, hold: int, drl_high: int) -> dict[str, Any]:
    return {
        "thresholds": {"agree_confidence": 0.7, "act": 0.3},
        "bars": bars,
        "crossed": {
            "drl_confidence_above_agree": drl_high,
            "llm_confidence_above_agree": bars,
            "both_above_agree_and_same_direction": agreement,
            "weighted_beyond_act": bars - agreement - hold,
            "llm_abstained": 0,
        },
        "decided_by": {
            "agreement": agreement,
            "weighted_buy": bars - agreement - hold,
            "weighted_sell": 0,
            "weighted_hold": hold,
            "drl_fallback": 0,
        },
    }


def test_fold_counts_are_summed_before_the_shares() -> None:
    curve = {"timesteps": [64, 128], "episode_return": [0.01, -0.02]}
    summary = {
        "strategies": {
            "hybrid@0": {"policy_report": {"combiner": _combiner(100, 5, 90, 6)}},
            "hybrid~llm0@0": {"policy_report": {"combiner": _combiner(100, 0, 100, 6)}},
            "wf": {
                "policy_report": {
                    "folds": [
                        {"combiner": _combiner(10, 1, 9, 1), "training": {"train_curve": curve}},
                        None,
                        {"combiner": _combiner(30, 3, 7, 2), "training": {"train_curve": curve}},
                    ]
                }
            },
            "drl@1": {"policy_report": {"training": {"train_curve": curve}}},
            "sma": {},
        }
    }
    rows = {r["strategy"]: r for r in combiner_rows(summary)}
    assert set(rows) == {"hybrid@0", "wf"}  # controls left out
    assert rows["wf"]["bars"] == 40 and rows["wf"]["decided_by"]["agreement"] == 4
    assert rows["wf"]["share"]["weighted_hold"] == pytest.approx(16 / 40)
    assert rows["hybrid@0"]["share"]["drl_confidence_above_agree"] == pytest.approx(0.06)
    [line, _] = combiner_lines(summary)
    assert line.startswith("hybrid@0 combiner over 100 bars: DRL conf > 0.7 6.0%")
    assert "agreement 5.0%" in line and "weighted HOLD 90.0%" in line
    assert "weighted SELL" not in line  # branches that never decided are not listed
    runs = training_runs(summary)
    assert [r["label"] for r in runs["wf"]] == ["wf fold 0", "wf fold 1"]
    assert [r["label"] for r in runs["drl"]] == ["drl@1"]
    plots, context = drl_section(summary)
    assert [k for k, _ in plots] == context["training_keys"] == ["training-0", "training-1"]
    assert context["training_shared"] == []
    assert context["combiner_headers"][0] == "DRL conf > 0.7"
    plots, context = drl_section({"strategies": {"sma": {}}})  # a run without DRL
    assert plots == [] and context["training_keys"] == [] and context["combiner"] == []


def test_a_hybrid_runs_report_shows_its_curves_and_crossings(
    samples_dir: Path, tmp_path: Path
) -> None:
    drl = {
        "timesteps": 256,
        "episode_bars": 64,
        "eval_every": 128,
        "hyperparameters": {"n_steps": 64, "batch_size": 32},
        "cache_dir": str(tmp_path / "models"),
    }
    llm = {"mode": "offline", "routing": str(REPO / "experiments/routing/seed_stack.toml")}
    config = RunConfig.model_validate(
        {
            "data": {"path": str(samples_dir / "SP500.parquet"), "end": "2016-03-31"},
            "splits": {"train_end": "2015-06-01", "validation_end": "2016-01-01"},
            "strategies": [
                {"name": "drl", "kind": "drl", "seeds": 2, "params": drl},
                {
                    "name": "hybrid",
                    "kind": "hybrid",
                    "seeds": 2,
                    "params": {"drl": drl, "llm": llm},
                },
            ],
            "controls": False,
            "verdict": {"reps": 100},
            "output_dir": str(tmp_path / "runs"),
        }
    )
    result = run(config)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    training = summary["strategies"]["drl@1"]["policy_report"]["training"]
    assert training["validation_curve"]["timesteps"] == [128, 256]
    combiner = summary["strategies"]["hybrid@0"]["policy_report"]["combiner"]
    decisions = summary["strategies"]["hybrid@0"]["decisions"]
    assert sum(combiner["decided_by"].values()) == combiner["bars"] == decisions > 50
    html = run_report_html(result.run_dir)
    assert 'id="combiner"' in html and "hybrid@1" in html
    # One chart: hybrid@k uses drl@k's cached model, so its curves are drl's (said so).
    assert 'data-fig="training-0"' in html and 'data-fig="training-1"' not in html
    assert "drl: training episodes and validation score" in html
    assert "hybrid uses the models charted for drl" in html
