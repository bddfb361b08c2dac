"""The hybrid's DRL side sees its own account (the shadow), and the combiner's crossings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest import RunConfig, run
from strategies.base import Decision, MarketView, Observation
from strategies.drl import DRLPolicy
from strategies.hybrid import ACT_THRESHOLD, AGREE_CONFIDENCE, HybridPolicy, combine
from strategies.llm.graph import LLMPolicy

REPO = Path(__file__).resolve().parents[2]

_DRL = {
    "timesteps": 256,
    "episode_bars": 64,
    "eval_every": 128,
    "seed": 3,
    "hyperparameters": {"n_steps": 64, "batch_size": 32},
}


def _config(samples_dir: Path, tmp_path: Path, **hybrid: Any) -> RunConfig:
    drl = {**_DRL, "cache_dir": str(tmp_path / "models")}
    llm = {"mode": "offline", "routing": str(REPO / "experiments/routing/seed_stack.toml")}
    return RunConfig.model_validate(
        {
            "data": {"path": str(samples_dir / "SP500.parquet"), "end": "2016-03-31"},
            "splits": {"train_end": "2015-06-01", "validation_end": "2016-01-01"},
            # Costs that make the account's path matter: a stop-loss and financing.
            "env": {"stop_loss": 0.02, "margin_rate": 0.05, "cash_rate": 0.01},
            "strategies": [
                {"name": "drl", "kind": "drl", "seeds": 1, "params": drl},
                {
                    "name": "hybrid",
                    "kind": "hybrid",
                    "seeds": 1,
                    "params": {"drl": drl, "llm": llm, "on_llm_abstain": "combine", **hybrid},
                },
            ],
            "controls": False,
            "benchmark": None,
            "output_dir": str(tmp_path / "runs"),
        }
    )


def _record_drl_observations(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[np.ndarray]]:
    seen: dict[str, list[np.ndarray]] = {}
    act = DRLPolicy.act

    def recording(self: DRLPolicy, obs: Observation) -> Decision:
        seen.setdefault(self.name, []).append(np.array(obs.features, copy=True))
        return act(self, obs)

    def abstain(self: LLMPolicy, obs: Observation) -> Decision:
        return Decision(target_position=None, abstain=True, action="ABSTAIN", reasoning="test")

    monkeypatch.setattr(DRLPolicy, "act", recording)
    monkeypatch.setattr(LLMPolicy, "act", abstain)
    return seen


def test_the_hybrids_drl_sees_exactly_what_drl_alone_sees(
    samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _record_drl_observations(monkeypatch)
    result = run(_config(samples_dir, tmp_path), write=False)
    alone, inside = seen["drl"], seen["hybrid.drl"]
    assert len(alone) == len(inside) > 50
    for t, (a, b) in enumerate(zip(alone, inside, strict=True)):
        assert a.dtype == b.dtype == np.float32
        assert np.array_equal(a, b), f"bar {t}: {a[-2:]} != {b[-2:]}"
    # ...while the hybrid's own account went elsewhere (it acts at half size or holds).
    ledger = result.ledger.pivot(index="timestamp", columns="strategy", values="exposure")
    assert (ledger["drl"] != ledger["hybrid"]).mean() > 0.5
    assert np.abs(np.stack(alone)[:, -2]).max() > 0  # the DRL did hold positions
    assert result.summary["strategies"]["drl"]["stops"] > 0  # and its stop-loss fired
    report = result.summary["strategies"]["hybrid"]["policy_report"]["combiner"]
    assert report["drl_account"] == "shadow"
    assert report["crossed"]["llm_abstained"] == report["bars"] == len(inside)


def test_the_old_account_shows_the_drl_the_hybrids_position(
    samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control of the test above: without the shadow the observations differ.
    seen = _record_drl_observations(monkeypatch)
    run(_config(samples_dir, tmp_path, drl_account="hybrid"), write=False)
    alone, inside = np.stack(seen["drl"]), np.stack(seen["hybrid.drl"])
    assert np.array_equal(alone[:, :-2], inside[:, :-2])  # the same market features
    assert not np.array_equal(alone[:, -2:], inside[:, -2:])


# ------------------------------------------------------------------ threshold crossings


class _Fixed:
    def __init__(self, decisions: list[Decision]) -> None:
        self.decisions = iter(decisions)

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        pass

    def act(self, obs: Observation) -> Decision:
        return next(self.decisions)


def _view(n: int) -> MarketView:
    close = np.linspace(100.0, 110.0, n)
    stamps = np.arange(n, dtype=np.int64) * 86_400_000_000_000 + 1_600_000_000_000_000_000
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


_side = st.tuples(
    st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0, None]),
    st.sampled_from([0.0, 0.3, 0.6, 0.7, 0.71, 0.9, 1.0]),
    st.booleans(),
)


@settings(deadline=None, max_examples=40)
@given(
    bars=st.lists(st.tuples(_side, _side), min_size=1, max_size=40),
    fallback=st.sampled_from(["drl", "combine"]),
)
def test_crossing_counts_match_the_combiners_rule(bars: list[Any], fallback: str) -> None:
    drl = [Decision(target_position=t, confidence=c) for (t, c, _), _ in bars]
    llm = [
        Decision(target_position=t, confidence=c, abstain=a, action="ABSTAIN" if a else "X")
        for _, (t, c, a) in bars
    ]
    routing = str(REPO / "experiments/routing/seed_stack.toml")
    policy = HybridPolicy(
        "h",
        llm={"mode": "offline", "routing": routing},
        on_llm_abstain=fallback,  # type: ignore[arg-type]
        drl_account="hybrid",
    )
    policy.drl, policy.llm = _Fixed(drl), _Fixed(llm)  # type: ignore[assignment]
    view = _view(len(bars))
    policy.reset(seed=0, market=view)
    for t in range(len(bars)):
        view._seek(t)
        policy.act(Observation(t, np.zeros(4, np.float32), 0.0, 1e5, view))
    report = policy.run_report()["combiner"]
    # A peer oracle: the counts recomputed from the seed's rule, bar by bar.
    expect = dict.fromkeys((*report["crossed"], *report["decided_by"]), 0)
    for d, m in zip(drl, llm, strict=True):
        sign = 0.0 if not d.target_position else np.sign(d.target_position)
        llm_sign = 0.0 if m.abstain or not m.target_position else np.sign(m.target_position)
        high_d = d.confidence > 0.7
        high_m = not m.abstain and m.confidence > 0.7
        expect["drl_confidence_above_agree"] += high_d
        expect["llm_confidence_above_agree"] += high_m
        expect["both_above_agree_and_same_direction"] += (
            high_d and high_m and sign != 0 and sign == llm_sign
        )
        expect["llm_abstained"] += m.abstain
        if m.abstain and fallback == "drl":
            expect["drl_fallback"] += 1
            continue
        action, _, _, how = combine(d, m)
        if how == "agreement":
            expect["agreement"] += 1
            continue
        expect[f"weighted_{action.lower()}"] += 1
        conf = 0.0 if m.abstain else m.confidence
        expect["weighted_beyond_act"] += (
            abs(0.5 * sign * d.confidence + 0.5 * llm_sign * conf) > 0.3
        )
    assert {**report["crossed"], **report["decided_by"]} == expect
    assert report["bars"] == len(bars) == sum(report["decided_by"].values())
    assert report["thresholds"] == {"agree_confidence": AGREE_CONFIDENCE, "act": ACT_THRESHOLD}
    assert all(
        report["fraction"][k] == pytest.approx(v / len(bars))
        for k, v in {**report["crossed"], **report["decided_by"]}.items()
    )


# ------------------------------------------------------------ the shadow, against the env


@settings(deadline=None, max_examples=60)
@given(
    seed=st.integers(0, 2**31 - 1),
    targets=st.lists(st.sampled_from([None, -1.0, -0.5, 0.0, 0.3, 1.0, 1.5]), min_size=5),
    env=st.sampled_from(
        [
            {},
            {"stop_loss": 0.01, "take_profit": 0.02, "fixed_fee_usd": 5.0, "cash_rate": 0.03},
            {"margin_rate": 0.08, "borrow_rate": 0.03, "cash_rate": 0.02, "rebalance_band": 0.1},
            {"max_participation": 0.5, "fee_bps": 10.0},
        ]
    ),
    risk=st.sampled_from([{}, {"max_leverage": 1.0, "allow_short": False}]),
    start=st.integers(0, 20),
)
def test_the_shadow_keeps_the_envs_account_bar_for_bar(
    seed: int, targets: list[float | None], env: dict[str, Any], risk: dict[str, Any], start: int
) -> None:
    import pandas as pd

    from backtest.config import EnvConfig, RiskConfig
    from backtest.data import BarMeta, Bars
    from backtest.env import TradingEnv
    from backtest.features import Features
    from strategies.shadow import ShadowAccount

    # A peer oracle: the env itself, stepped with the same targets over the same bars.
    n = start + len(targets) + 1
    rng = np.random.default_rng(seed)
    close = 100 * np.cumprod(1 + rng.normal(0, 0.02, n))
    open_ = close * (1 + rng.normal(0, 0.005, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    volume = rng.uniform(100, 1000, n)
    stamps = pd.date_range("2020-01-01", periods=n, freq="B", tz="UTC")
    frame = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=stamps.rename("timestamp"),
    )
    config = EnvConfig(**env, risk=RiskConfig(**risk))
    features = Features(values=np.zeros((n, 1), np.float32), names=("x",), first_valid=0)
    oracle = TradingEnv(
        Bars(frame=frame, meta=BarMeta(symbol="X", frequency="1d")),
        config.model_copy(update={"window": 1}),
        start=start,
        features=features,
    )
    oracle.reset()
    view = MarketView(
        timestamps_ns=stamps.as_unit("ns").asi8,
        close_times_ns=stamps.as_unit("ns").asi8,
        open_=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        symbol="X",
        frequency="1d",
    )
    shadow = ShadowAccount(config)
    for k, target in enumerate(targets):
        view._seek(start + k)
        obs = shadow.observation(view, np.zeros(3, np.float32))
        assert obs[-2] == np.float32(oracle.exposure) and obs[-1] == np.float32(oracle.unrealised())
        assert shadow.equity == oracle.equity
        shadow.follow(target)
        if oracle.advance(target):
            break
