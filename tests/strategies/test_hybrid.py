"""Hybrid policy: the seed's combination rule, and a run that pays for its LLM calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backtest import RunConfig, run
from strategies.base import Decision
from strategies.hybrid import combine

REPO = Path(__file__).resolve().parents[2]


def _d(target: float | None, confidence: float, abstain: bool = False) -> Decision:
    return Decision(target_position=target, confidence=confidence, abstain=abstain)


def test_the_seeds_combination_rule() -> None:
    # Agreement with both confidences above 0.7: the LLM's side, at least half size.
    assert combine(_d(1.0, 0.8), _d(0.2, 0.9)) == ("BUY", 0.5, pytest.approx(0.85), "agreement")
    assert combine(_d(-1.0, 0.9), _d(-0.8, 0.8))[:2] == ("SELL", 0.8)
    # Otherwise the weighted signal: 0.5*0.9 + 0.5*0.6 = 0.75 > 0.3 -> BUY at 0.375.
    action, size, confidence, how = combine(_d(1.0, 0.9), _d(0.5, 0.6))
    assert (action, size) == ("BUY", pytest.approx(0.375))
    assert confidence == pytest.approx(0.75) and "weighted" in how
    # Disagreement cancels: 0.5*0.8 - 0.5*0.8 = 0 -> HOLD.
    assert combine(_d(1.0, 0.8), _d(-0.5, 0.8))[0] == "HOLD"
    # A lone, unsure DRL does not act: 0.5 * 0.5 = 0.25 < 0.3.
    assert combine(_d(1.0, 0.5), _d(None, 0.9))[0] == "HOLD"
    # An abstaining LLM counts with confidence 0.
    assert combine(_d(-1.0, 0.8), _d(1.0, 1.0, abstain=True))[:2] == ("SELL", pytest.approx(0.2))


def test_hybrid_run_shares_the_drl_model_and_pays_for_the_llm(
    samples_dir: Path, tmp_path: Path
) -> None:
    drl = {
        "timesteps": 256,
        "episode_bars": 64,
        "eval_every": 128,
        "seed": 3,
        "hyperparameters": {"n_steps": 64, "batch_size": 32},
        "cache_dir": str(tmp_path / "models"),
    }
    llm = {"mode": "offline", "routing": str(REPO / "experiments/routing/seed_stack.toml")}
    config = RunConfig.model_validate(
        {
            "data": {"path": str(samples_dir / "SP500.parquet"), "end": "2016-03-31"},
            "splits": {"train_end": "2015-06-01", "validation_end": "2016-01-01"},
            "strategies": [
                {"name": "drl", "kind": "drl", "seeds": 1, "params": drl},
                {
                    "name": "hybrid",
                    "kind": "hybrid",
                    "seeds": 1,
                    "params": {"drl": drl, "llm": llm},
                },
            ],
            "output_dir": str(tmp_path / "runs"),
        }
    )
    result = run(config, write=False)
    assert len(list((tmp_path / "models").iterdir())) == 1  # one model for both
    decisions = result.decisions[result.decisions.strategy == "hybrid"]
    assert decisions["reasoning"].str.startswith("hybrid").all()
    signals = json.loads(decisions["signals"].iloc[0])
    assert [s["agent"] for s in signals[:2]] == ["drl", "llm"]
    assert result.summary["strategies"]["hybrid"]["llm_calls"] == 4 * len(decisions)
    assert result.summary["strategies"]["drl"]["llm_calls"] == 0
