"""Controls of a hybrid: the same combiner, call schedule, abstains and seed; no LLM info."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies.base import AgentSignal, Decision, MarketView, Observation
from strategies.controls import ControlLLM, LLMRecord
from strategies.hybrid import HybridPolicy
from tests.strategies.test_hybrid import _Fixed, _view

REPO = Path(__file__).resolve().parents[2]
ROUTING = str(REPO / "experiments/routing/seed_stack.toml")


class _ScriptedLLM:
    """An LLM side asked every ``every`` bars, answering from a script; holds in between
    and exposes ``held``/``held_age`` like LLMPolicy."""

    def __init__(self, answers: list[Decision], every: int) -> None:
        self.answers, self.every = answers, every
        self.held: Decision | None = None
        self.held_age = 0

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        self.held, self.held_age = None, 0

    def act(self, obs: Observation) -> Decision:
        if self.held is not None and self.held_age + 1 < self.every:
            self.held_age += 1
            return Decision(target_position=None, confidence=0.0, action="HOLD")
        self.held = self.answers[obs.t % len(self.answers)]
        self.held_age = 0
        return self.held


def _trade(policy: HybridPolicy, n: int, seed: int = 0) -> list[Decision]:
    view = _view(100.0 + np.cumsum(np.random.default_rng(3).normal(0, 1, n)))
    policy.reset(seed=seed, market=view)
    out = []
    for t in range(n):
        view._seek(t)
        out.append(policy.act(Observation(t, np.zeros(3), 0.0, 1e5, view)))
    return out


def _hybrid(
    drl: Decision, llm: object, control: str | None = None, **params: object
) -> HybridPolicy:
    policy = HybridPolicy(
        "h",
        llm={"mode": "offline", "routing": ROUTING},
        control=control,  # type: ignore[arg-type]
        **params,  # type: ignore[arg-type]
    )
    policy.drl = _Fixed(drl)  # type: ignore[assignment]
    if control is None:
        policy.llm = llm
    return policy


def _answer(target: float | None, confidence: float, abstain: bool = False) -> Decision:
    action = "ABSTAIN" if abstain else ("HOLD" if not target else ("BUY" if target > 0 else "SELL"))
    return Decision(target_position=target, confidence=confidence, abstain=abstain, action=action)


ANSWERS = [
    _answer(1.0, 0.9),
    _answer(-0.5, 0.8),
    _answer(None, 0.0, abstain=True),
    _answer(0.25, 0.6),
    _answer(None, 0.4),
]


def _llm_signal(decision: Decision) -> AgentSignal:
    return next(s for s in decision.signals if s.agent_name == "llm")


def _run_with_controls(
    drl: Decision, answers: list[Decision], every: int, n: int = 60, seed: int = 0
) -> dict[str, list[Decision]]:
    hybrid = _hybrid(drl, _ScriptedLLM(answers, every))
    decisions = {"hybrid": _trade(hybrid, n, seed)}
    record = LLMRecord.from_decisions(range(n), decisions["hybrid"])
    for kind in ("llm0", "random_llm"):
        control = _hybrid(drl, None, control=kind)
        control.use_llm_record(record)
        decisions[kind] = _trade(control, n, seed)
    return decisions


@given(every=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_controls_keep_the_call_schedule_abstains_and_seed(every: int, seed: int) -> None:
    runs = _run_with_controls(_answer(1.0, 0.65), ANSWERS, every, seed=seed)
    hybrid = [_llm_signal(d) for d in runs["hybrid"]]
    for kind in ("llm0", "random_llm"):
        control = [_llm_signal(d) for d in runs[kind]]
        # Same bars called (age 0), same holds between them, same abstains.
        assert [s.features["age_bars"] for s in control] == [
            s.features["age_bars"] for s in hybrid
        ], kind
        assert [s.abstain for s in control] == [s.abstain for s in hybrid], kind
        # A control calls no model and costs nothing.
        assert all(d.llm_calls == () for d in runs[kind])
    # The same seed draws the same random answers; the draws come from the LLM's own.
    again = _run_with_controls(_answer(1.0, 0.65), ANSWERS, every, seed=seed)
    assert [d.target_position for d in again["random_llm"]] == [
        d.target_position for d in runs["random_llm"]
    ]
    given_answers = {
        (s.signal, s.confidence, s.features["size"])
        for s in hybrid
        if s.features["age_bars"] == 0 and not s.abstain
    }
    drawn = {
        (s.signal, s.confidence, s.features["size"])
        for s in (_llm_signal(d) for d in runs["random_llm"])
        if s.features["age_bars"] == 0 and not s.abstain
    }
    assert drawn <= given_answers


def test_random_llm_draws_depend_on_the_seed_and_match_the_marginal() -> None:
    answers = [_answer(1.0, 0.9), _answer(-1.0, 0.9)]
    draws = {}
    for seed in (1, 2):
        runs = _run_with_controls(_answer(None, 0.0), answers, every=1, n=400, seed=seed)
        draws[seed] = [_llm_signal(d).signal for d in runs["random_llm"]]
    assert draws[1] != draws[2]
    # The hybrid's LLM said BUY and SELL alternately: half each; the draws agree.
    assert np.mean(np.array(draws[1]) > 0) == pytest.approx(0.5, abs=0.08)


def test_llm0_equals_the_hybrid_when_the_llm_abstains_everywhere() -> None:
    abstain = [_answer(None, 0.0, abstain=True)]
    for on_abstain in ("drl", "combine"):
        hybrid = _hybrid(_answer(-1.0, 0.8), _ScriptedLLM(abstain, 3), on_llm_abstain=on_abstain)
        decisions = _trade(hybrid, 30)
        control = _hybrid(_answer(-1.0, 0.8), None, control="llm0", on_llm_abstain=on_abstain)
        control.use_llm_record(LLMRecord.from_decisions(range(30), decisions))
        controlled = _trade(control, 30)
        assert [(d.target_position, d.confidence, d.action) for d in controlled] == [
            (d.target_position, d.confidence, d.action) for d in decisions
        ], on_abstain


def test_llm0_removes_what_the_llm_adds() -> None:
    # DRL alone holds (0.5 * 0.5 < 0.3); a confident LLM pushes the hybrid to buy.
    runs = _run_with_controls(_answer(1.0, 0.5), [_answer(1.0, 0.95)], every=1, n=10)
    assert all(d.action == "BUY" for d in runs["hybrid"])
    assert all(d.action == "HOLD" and d.target_position is None for d in runs["llm0"])
    assert all(_llm_signal(d).features["weight"] == 0.0 for d in runs["llm0"])


def test_a_control_needs_its_hybrids_record() -> None:
    control = _hybrid(_answer(1.0, 0.5), None, control="llm0")
    with pytest.raises(RuntimeError, match="has no LLM record"):
        _trade(control, 3)
    control.use_llm_record(
        LLMRecord.from_decisions(
            [0], [_trade(_hybrid(_answer(1.0, 0.5), _ScriptedLLM(ANSWERS, 1)), 1)[0]]
        )
    )
    with pytest.raises(RuntimeError, match="never decided on"):
        _trade(control, 3)
    with pytest.raises(TypeError, match="not a control"):
        _hybrid(_answer(1.0, 0.5), _ScriptedLLM(ANSWERS, 1)).use_llm_record(LLMRecord({}))
    with pytest.raises(ValueError, match="control must be one of"):
        ControlLLM("shuffle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no 'llm' signal"):
        LLMRecord.from_decisions([0], [_answer(1.0, 0.5)])


def test_record_abstain_rate() -> None:
    runs = _run_with_controls(_answer(1.0, 0.65), ANSWERS, every=1, n=50)
    record = LLMRecord.from_decisions(range(50), runs["hybrid"])
    assert record.abstain_rate() == pytest.approx(10 / 50)  # one answer in five abstains
    assert len(record.answers()) == 40
