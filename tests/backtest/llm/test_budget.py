"""Budgets: the daily alert, the downgrade, the hard cap that is never exceeded."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backtest.errors import ConfigError
from backtest.llm.budget import Budget, BudgetConfig, format_usd


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


def test_each_threshold_is_logged_once_per_run_and_every_crossing_is_an_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = Budget(BudgetConfig(daily_usd=1.0, alert_usd=0.5, max_run_usd=3.7))
    with caplog.at_level(logging.WARNING, logger="backtest.llm.budget"):
        for day in ("2018-01-02", "2018-01-03", "2018-01-04", "2018-01-05"):
            for _ in range(6):  # $1.20 a day: alert, then a downgrade; the cap on day 4
                if budget.check(day, 0.2) != "stop":
                    budget.charge(day, 0.2)
    kinds = [e.kind for e in budget.events]
    assert kinds.count("alert") == 3 and kinds.count("downgrade") == 3
    assert kinds.count("stop") == 6
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3  # alert, downgrade, stop: once each
    assert sum("alert level" in m for m in messages) == 1
    assert sum("cheapest model" in m for m in messages) == 1
    assert sum("$3.70 cap" in m for m in messages) == 1
    assert "$0.60 spent" in messages[0]  # not $0.6, nor $0.6000000000000001


def test_caps_print_their_real_value(caplog: pytest.LogCaptureFixture) -> None:
    values = (0.005, 0.0001234, 10.0, 0.8, 1.005, 1234.5, 0.0, 0.1 + 0.2, 0.0125)
    assert [format_usd(v) for v in values] == [
        "$0.005",
        "$0.0001234",
        "$10.00",
        "$0.80",
        "$1.005",
        "$1,234.50",
        "$0.00",
        "$0.30",
        "$0.0125",
    ]
    budget = Budget(BudgetConfig(max_run_usd=0.005))
    with caplog.at_level(logging.WARNING, logger="backtest.llm.budget"):
        assert budget.check("2018-01-02", 0.0061) == "stop"
    assert "the $0.005 cap" in caplog.text and "$0.0061" in caplog.text
    assert "$0.00 cap" not in caplog.text
