"""Hybrid policy: the seed's combination rule, and a run that pays for its LLM calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest import RunConfig, run
from strategies.base import Decision, MarketView, Observation
from strategies.hybrid import HedgeWeights, HybridPolicy, combine

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


# ------------------------------------------------------------- learned weights, fallback


@given(
    gains=st.lists(st.tuples(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5)), min_size=1, max_size=200),
    rate=st.floats(0.0, 200.0),
    floor=st.floats(0.0, 0.49),
)
def test_hedge_weights_stay_bounded_and_sum_to_one(
    gains: list[tuple[float, float]], rate: float, floor: float
) -> None:
    hedge = HedgeWeights([0.5, 0.5], learning_rate=rate, min_weight=floor)
    for g in gains:
        w = hedge.update(g)
        assert w.sum() == pytest.approx(1.0)
        assert (w >= floor - 1e-12).all() and (w <= 1 - floor + 1e-12).all()


def test_hedge_weights_move_toward_the_better_source() -> None:
    hedge = HedgeWeights([0.5, 0.5], learning_rate=10.0, min_weight=0.05)
    previous = hedge.weights[0]
    for _ in range(300):
        w = hedge.update([0.002, -0.001])
        assert w[0] > previous or w[0] == pytest.approx(0.95)
        previous = w[0]
    assert previous == pytest.approx(0.95, abs=1e-3)
    # ...and the floor lets the other win its weight back when it starts winning.
    for _ in range(600):
        w = hedge.update([-0.002, 0.002])
    assert w[1] > 0.9
    hedge.reset()
    assert hedge.weights == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="min_weight"):
        HedgeWeights([0.5, 0.5], min_weight=0.5)


class _Fixed:
    """A side that always answers the same decision."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        pass

    def act(self, obs: Observation) -> Decision:
        return self.decision


def _view(close: np.ndarray) -> MarketView:
    n = close.size
    stamps = pd.date_range("2020-01-01", periods=n, freq="D", tz="UTC").as_unit("ns").asi8
    return MarketView(
        timestamps_ns=stamps,
        close_times_ns=stamps,
        open_=close,
        high=close,
        low=close,
        close=close,
        volume=np.ones(n),
        symbol="X",
        frequency="1d",
    )


def _hybrid(drl: Decision, llm: Decision, **params: object) -> HybridPolicy:
    routing = str(REPO / "experiments/routing/seed_stack.toml")
    policy = HybridPolicy("h", llm={"mode": "offline", "routing": routing}, **params)  # type: ignore[arg-type]
    policy.drl = _Fixed(drl)  # type: ignore[assignment]
    policy.llm = _Fixed(llm)  # type: ignore[assignment]
    return policy


def _trade(policy: HybridPolicy, close: np.ndarray) -> list[Decision]:
    view = _view(close)
    policy.reset(seed=0, market=view)
    out = []
    for t in range(close.size):
        view._seek(t)
        out.append(policy.act(Observation(t, np.zeros(3), 0.0, 1e5, view)))
    return out


def _weights(decisions: list[Decision]) -> list[tuple[float, float]]:
    return [(d.signals[0].features["weight"], d.signals[1].features["weight"]) for d in decisions]


def test_learned_weights_favour_the_side_the_market_proved_right() -> None:
    # DRL is always long, the LLM always short; the market rises: DRL's weight grows.
    close = 100 * np.cumprod(np.full(120, 1.004))
    policy = _hybrid(_d(1.0, 0.6), _d(-1.0, 0.6), weighting="hedge")
    weights = _weights(_trade(policy, close))
    assert weights[0] == (0.5, 0.5)  # nothing realised yet
    # At bar 1's close, the positions taken at bar 0's close have earned bar 1's return.
    assert weights[1][0] > 0.5 and weights[-1][0] > 0.9
    assert all(a + b == pytest.approx(1.0) for a, b in weights)
    # The fixed rule never moves.
    fixed = _weights(_trade(_hybrid(_d(1.0, 0.6), _d(-1.0, 0.6)), close))
    assert set(fixed) == {(0.5, 0.5)}


@settings(deadline=None, max_examples=25)
@given(
    cut=st.integers(1, 58),
    future=st.lists(st.floats(0.5, 2.0), min_size=60, max_size=60),
)
def test_learned_weights_do_not_look_ahead(cut: int, future: list[float]) -> None:
    rng = np.random.default_rng(cut)
    close = 100 * np.cumprod(1 + rng.normal(0, 0.01, 60))
    changed = close.copy()
    changed[cut + 1 :] *= np.asarray(future)[cut + 1 :]
    a = _weights(_trade(_hybrid(_d(1.0, 0.8), _d(-0.5, 0.6), weighting="hedge"), close))
    b = _weights(_trade(_hybrid(_d(1.0, 0.8), _d(-0.5, 0.6), weighting="hedge"), changed))
    assert a[: cut + 1] == b[: cut + 1]


def test_an_abstaining_llm_leaves_the_bar_to_the_drl_agent() -> None:
    abstain = Decision(
        target_position=None, abstain=True, action="ABSTAIN", reasoning="budget cap reached"
    )
    close = np.linspace(100, 101, 5)
    [*_, decision] = _trade(_hybrid(_d(-1.0, 0.55), abstain), close)
    assert decision.target_position == -1.0 and decision.confidence == 0.55
    assert "DRL fallback" in decision.action
    assert "DRL alone: the LLM abstained: budget cap reached" in decision.reasoning
    assert decision.signals[1].abstain
    # The seed's rule instead: the lone DRL signal 0.5 * 0.55 < 0.3 holds.
    [*_, combined] = _trade(_hybrid(_d(-1.0, 0.55), abstain, on_llm_abstain="combine"), close)
    assert combined.action == "HOLD" and combined.target_position is None
