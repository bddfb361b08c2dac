"""Meta-RL orchestrator: its training env charges consulted LLM bars; runs repeat and cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from backtest import RunConfig, run
from backtest.config import EnvConfig
from backtest.data import load_bars
from backtest.env import TradingEnv
from backtest.errors import ConfigError
from strategies.meta_rl import MetaEnv, MetaRLPolicy, SideSignals

REPO = Path(__file__).resolve().parents[2]


def _signals(start: int, n: int, seed: int, cost: float) -> SideSignals:
    rng = np.random.default_rng(seed)
    out = SideSignals(start, n)
    out.target[:] = rng.choice([-1.0, 0.0, 1.0], n)
    out.confidence[:] = rng.uniform(0, 1, n)
    out.cost_usd[:] = cost
    return out


def test_meta_env_charges_the_llm_only_on_consulted_bars(samples_dir: Path) -> None:
    bars = load_bars(samples_dir / "SP500.parquet", end="2012-12-31")
    start, n = 2000, 300
    drl, llm = _signals(start, n, 1, 0.0), _signals(start, n, 2, 25.0)
    env = MetaEnv(bars, EnvConfig(), drl, llm)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs[-1] == 1.0 and obs[-3] == llm.target[0]  # the first bar is consulted
    totals = {}
    for consult in (0, 1):
        env.reset(seed=0)
        equity0 = env.inner.equity
        rewards, done = [], False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(np.array([2, consult]))
            rewards.append(reward)
            done = terminated or truncated
            if not consult:
                assert obs[-1] == 0.0 and obs[-3] == 0.0 and obs[-2] == 0.0
        totals[consult] = (sum(rewards), env.inner.equity, equity0)
    # Both hold the same long position; the consulting one paid $25 on each later bar.
    (r0, e0, start0), (r1, e1, _) = totals[0], totals[1]
    assert r0 == pytest.approx(math.log(e0 / start0))
    assert r1 == pytest.approx(math.log(e1 / start0))
    assert r1 < r0
    # The same account, kept by hand: long, and $25 out of cash after every step.
    oracle = TradingEnv(bars, EnvConfig(), start=start, end=start + n)
    oracle.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = oracle.step_target(1.0)
        oracle.charge(25.0)
        done = terminated or truncated
    assert e1 == pytest.approx(oracle.equity, rel=1e-12)
    fixed = MetaEnv(bars, EnvConfig(), drl, llm, cost_per_consult_usd=5.0)
    fixed.reset(seed=0)
    before = fixed.inner.equity
    fixed.step(np.array([1, 1]))  # flat: only the consult costs
    assert fixed.inner.equity == pytest.approx(before - 5.0)


def _config(samples_dir: Path, tmp_path: Path) -> RunConfig:
    drl = {
        "timesteps": 256,
        "episode_bars": 64,
        "eval_every": 128,
        "hyperparameters": {"n_steps": 64, "batch_size": 32},
        "cache_dir": str(tmp_path / "models"),
    }
    llm = {"mode": "offline", "routing": str(REPO / "experiments/routing/seed_stack.toml")}
    meta = {
        "drl": drl,
        "llm": llm,
        "timesteps": 256,
        "episode_bars": 32,
        "hyperparameters": {"n_steps": 64, "batch_size": 32},
        "training_llm_cost_usd": 0.01,
        "cache_dir": str(tmp_path / "models"),
    }
    return RunConfig.model_validate(
        {
            "data": {"path": str(samples_dir / "SP500.parquet"), "end": "2016-03-31"},
            "splits": {"train_end": "2015-06-01", "validation_end": "2016-01-01"},
            "strategies": [{"name": "meta", "kind": "meta_rl", "seeds": 1, "params": meta}],
            "benchmark": None,
            "output_dir": str(tmp_path / "runs"),
        }
    )


def test_meta_rl_run_trains_once_repeats_and_pays_only_when_consulting(
    samples_dir: Path, tmp_path: Path
) -> None:
    config = _config(samples_dir, tmp_path)
    first = run(config)
    metas = sorted(p.name for p in (tmp_path / "models").iterdir() if p.name.startswith("meta-"))
    assert len(metas) == 1
    second = run(config)
    assert (
        sorted(p.name for p in (tmp_path / "models").iterdir() if p.name.startswith("meta-"))
        == metas
    )
    assert (first.run_dir / "ledger.parquet").read_bytes() == (
        second.run_dir / "ledger.parquet"
    ).read_bytes()
    decisions = first.decisions
    assert decisions["confidence"].between(0, 1).all()
    assert set(decisions["action"]) <= {"BUY", "SELL", "CLOSE"}
    consulted = decisions["reasoning"].str.startswith("meta-RL: LLM consulted")
    assert (decisions.loc[consulted, "llm_calls"] == 4).all()
    assert (decisions.loc[~consulted, "llm_calls"] == 0).all()
    import json

    manifest = json.loads((tmp_path / "models" / metas[0] / "manifest.json").read_text())
    # Three disjoint slices of the history, oldest first: the DRL agent's train and
    # validation (checkpoint selection) splits, then the meta slice, ending at the first
    # decision (its close is the last one seen; the test's first return comes after it).
    layout = manifest["layout"]
    (a, b), (c, d), (e, f) = layout["drl_train"], layout["drl_validation"], layout["meta"]
    first_decision = len(load_bars(samples_dir / "SP500.parquet", end="2015-12-31"))
    assert 0 == a < b == c < d == e < f == first_decision + 1
    assert f - e == round(f * 0.2)  # meta_fraction's default
    assert manifest["train_bars"][0] >= e and manifest["train_bars"][1] == f
    drl_manifest = next(
        json.loads((p / "manifest.json").read_text())
        for p in (tmp_path / "models").iterdir()
        if not p.name.startswith("meta-")
    )
    assert drl_manifest["validation_bars"] == [c, d]
    assert manifest["settings"]["training_llm"] == "offline"
    report = first.summary["strategies"]["meta"]["policy_report"]
    assert report["meta"]["layout"] == layout and report["training"]["validation_bars"] == [c, d]


def test_meta_rl_settings_are_checked() -> None:
    routing = str(REPO / "experiments/routing/seed_stack.toml")
    with pytest.raises(ConfigError, match="meta_fraction"):
        MetaRLPolicy(meta_fraction=0.95, llm={"routing": routing})
    with pytest.raises(ConfigError, match="meta_fraction"):
        MetaRLPolicy(llm={"routing": routing}).layout(40)  # 8 bars to the meta slice
    assert MetaRLPolicy(meta_fraction=0.25, llm={"routing": routing}).layout(400) == {
        "drl": (0, 300),
        "meta": (300, 400),
    }
    with pytest.raises(ConfigError, match="DQN cannot"):
        MetaRLPolicy(algo="DQN", llm={"routing": routing})
    policy = MetaRLPolicy(llm={"routing": routing})
    with pytest.raises(ConfigError, match="discrete"):
        policy.bind(EnvConfig(action_space="continuous"))
