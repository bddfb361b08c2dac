"""The verdict's questions over ledgers: roles, pairing by seed, passives, assets."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from backtest.questions import Roles, asset_series, run_verdict

CAPITAL = 100_000.0


def _ledger(strategies: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> pa.Table:
    """A ledger from per-strategy (returns, llm cost per bar, exposure)."""
    rows: dict[str, list] = {"strategy": [], "equity_usd": [], "llm_cost_usd": [], "exposure": []}
    for name, (returns, cost, exposure) in strategies.items():
        equity = CAPITAL * np.cumprod(1 + returns)
        rows["strategy"] += [name] * returns.size
        rows["equity_usd"] += list(equity)
        rows["llm_cost_usd"] += list(cost)
        rows["exposure"] += list(exposure)
    return pa.table(rows)


def _world(rng: np.random.Generator, seeds: int, n: int = 250, edge: float = 0.0) -> pa.Table:
    market = rng.normal(0.0004, 0.01, n)
    zero = np.zeros(n)
    out = {"buy_and_hold": (market, zero, np.ones(n))}
    for k in range(seeds):
        drl = 0.5 * market + rng.normal(0, 0.004, n)
        exposure = np.full(n, 0.4)
        hybrid = 0.4 * market + rng.normal(edge, 0.004, n)
        out[f"drl@{k}"] = (drl, zero, np.full(n, 0.5))
        out[f"hybrid@{k}"] = (hybrid, np.full(n, 10.0), exposure)
        out[f"hybrid~llm0@{k}"] = (0.4 * market + rng.normal(0, 0.004, n), zero, exposure)
        out[f"hybrid~random_llm@{k}"] = (0.4 * market + rng.normal(0, 0.004, n), zero, exposure)
    out["llm"] = (0.3 * market + rng.normal(0, 0.003, n), np.full(n, 0.02), np.full(n, 0.3))
    return _ledger(out)


ROLES = Roles(hybrids=("hybrid",), drl="drl", llms=("llm",), benchmark="buy_and_hold")


def test_every_question_is_asked_and_json_safe() -> None:
    series = asset_series(
        _world(np.random.default_rng(1), 3), asset="SYN", initial_capital_usd=CAPITAL
    )
    entries = run_verdict([series], ROLES, periods_per_year=252.0, seed=0, reps=200)
    asked = {(e["question"], e["metric"]) for e in entries}
    for question in (
        "hybrid_vs_drl_net",
        "hybrid_vs_drl_gross",
        "llm_vs_llm0",
        "llm_vs_random_llm",
        "hybrid_vs_matched_passive",
        "hybrid_vs_voltarget_passive",
        "llm_only_vs_buy_and_hold",
        "llm_only_vs_matched_passive",
    ):
        for metric in ("sharpe", "annual_return", "max_drawdown"):
            assert (question, metric) in asked
    json.dumps(entries, allow_nan=False)
    for entry in entries:
        for key in (
            "question",
            "a",
            "b",
            "metric",
            "estimate",
            "ci",
            "p_value",
            "n_seeds",
            "n_assets",
            "block_length",
            "method",
            "label",
            "sentence",
        ):
            assert key in entry, key
        # Three seeds is below the default ten: said in words.
        assert entry["label"] == "underpowered"
        assert entry["sentence"].startswith("Underpowered")
    passive = next(e for e in entries if e["question"] == "hybrid_vs_matched_passive")
    assert passive["b"] == "buy_and_hold~matched:hybrid"
    # One llm member is paired with the one benchmark: one seed.
    llm = next(e for e in entries if e["question"] == "llm_only_vs_buy_and_hold")
    assert llm["n_seeds"] == 1


def test_cost_separates_before_and_after() -> None:
    series = asset_series(
        _world(np.random.default_rng(2), 10), asset="SYN", initial_capital_usd=CAPITAL
    )
    entries = run_verdict(
        [series], ROLES, periods_per_year=252.0, seed=0, reps=200, metrics=("annual_return",)
    )
    net = next(e for e in entries if e["question"] == "hybrid_vs_drl_net")
    gross = next(e for e in entries if e["question"] == "hybrid_vs_drl_gross")
    # $10 of LLM a bar on $100k is 1e-4 a bar: ~2.5 pp a year between gross and net.
    assert gross["estimate"] - net["estimate"] == pytest.approx(0.025, abs=0.004)
    assert net["basis"] == "after cost" and gross["basis"] == "before cost"


def test_a_planted_edge_is_found_and_pooled_over_assets() -> None:
    rng = np.random.default_rng(3)
    ledgers = [_world(rng, 10, edge=0.002) for _ in range(2)]
    assets = [
        asset_series(ledger, asset=name, initial_capital_usd=CAPITAL)
        for ledger, name in zip(ledgers, ("A", "B"), strict=True)
    ]
    entries = run_verdict(
        assets, ROLES, periods_per_year=252.0, seed=0, reps=300, metrics=("sharpe",)
    )
    rows = [e for e in entries if e["question"] == "llm_vs_llm0"]
    assert [e["asset"] for e in rows] == ["pooled", "A", "B"]
    pooled = rows[0]
    assert pooled["n_assets"] == 2 and pooled["n_seeds"] == 10
    assert pooled["label"] == "significant" and pooled["estimate"] > 0
    assert pooled["sentence"].startswith("Significant: hybrid beats hybrid~llm0")


def test_same_inputs_same_verdict() -> None:
    ledger = _world(np.random.default_rng(4), 3)
    series = asset_series(ledger, asset="SYN", initial_capital_usd=CAPITAL)
    one = run_verdict([series], ROLES, periods_per_year=252.0, seed=7, reps=200)
    two = run_verdict([series], ROLES, periods_per_year=252.0, seed=7, reps=200)
    assert json.dumps(one) == json.dumps(two)
    assert not math.isnan(one[0]["estimate"])
