"""Budgets: the daily alert, the downgrade, the hard cap that is never exceeded."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backtest.errors import ConfigError
from backtest.llm.budget import Budget, BudgetConfig


def test_alert_then_downgrade_within_a_day_and_reset_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = Budget(BudgetConfig(daily_usd=1.0, alert_usd=0.8))
    with caplog.at_level(logging.WARNING, logger="backtest.llm.budget"):
        for _ in range(8):
            assert budget.check("2018-01-02", 0.1) == "ok"
            budget.charge("2018-01-02", 0.1)
    assert [e.kind for e in budget.events] == ["alert"]
    assert "alert level $0.80" in caplog.text
    assert budget.check("2018-01-02", 0.25) == "downgrade"
    assert budget.check("2018-01-02", 0.15) == "ok"
    assert budget.check("2018-01-03", 0.25) == "ok"  # a new day
    assert budget.day_usd == 0.0


@given(
    costs=st.lists(st.floats(0.0, 0.5), max_size=200),
    cap=st.floats(0.01, 5.0),
    slack=st.floats(1.0, 3.0),
)
def test_the_hard_cap_is_never_exceeded(costs: list[float], cap: float, slack: float) -> None:
    budget = Budget(BudgetConfig(daily_usd=100.0, alert_usd=50.0, max_run_usd=cap))
    for i, cost in enumerate(costs):
        estimate = cost * slack  # the worst case is never below the actual cost
        if budget.check(f"d{i // 10}", estimate) == "stop":
            continue
        budget.charge(f"d{i // 10}", cost)
    assert budget.run_usd <= cap + 1e-12


def test_config_rejects_impossible_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in (
        {"daily_usd": 0.0},
        {"daily_usd": -1.0},
        {"max_run_usd": 0.0},
        {"alert_usd": 20.0, "daily_usd": 10.0},
    ):
        with pytest.raises(ConfigError, match=r"llm\.budget"):
            BudgetConfig(**bad)  # type: ignore[arg-type]
    monkeypatch.setenv("DAILY_LLM_BUDGET", "25")
    monkeypatch.setenv("ALERT_THRESHOLD", "20")
    assert BudgetConfig.from_env() == BudgetConfig(daily_usd=25.0, alert_usd=20.0)
    monkeypatch.setenv("DAILY_LLM_BUDGET", "ten")
    with pytest.raises(ConfigError, match="DAILY_LLM_BUDGET"):
        BudgetConfig.from_env()
