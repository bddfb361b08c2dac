"""DRL-only policy: trains on the past only, caches, repeats, reports a confidence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest import RunConfig, run
from backtest.config import EnvConfig
from backtest.data import BarMeta, Bars, load_bars, write_bars
from backtest.env import TradingEnv
from backtest.errors import ConfigError
from strategies.drl import DRLPolicy, _data_sha256, train_agent

TINY = {
    "timesteps": 512,
    "episode_bars": 64,
    "eval_every": 256,
    "hyperparameters": {"n_steps": 128, "batch_size": 64},
}


def _config(path: Path, out: Path, models: Path, **params: object) -> RunConfig:
    return RunConfig.model_validate(
        {
            "data": {"path": str(path)},
            "splits": {"train_end": "2013-01-01", "validation_end": "2016-01-01"},
            "strategies": [
                {
                    "name": "ppo",
                    "kind": "drl",
                    "seeds": 1,
                    "params": {**TINY, "cache_dir": str(models), **params},
                }
            ],
            "benchmark": None,
            "output_dir": str(out),
            "seed": 5,
        }
    )


def test_trains_once_then_replays_from_the_cache_identically(
    samples_dir: Path, tmp_path: Path
) -> None:
    config = _config(samples_dir / "SP500.parquet", tmp_path / "runs", tmp_path / "models")
    first = run(config)
    models = list((tmp_path / "models").iterdir())
    assert len(models) == 1 and (models[0] / "best_model.zip").exists()
    stamp = (models[0] / "best_model.zip").stat().st_mtime_ns
    second = run(config)
    assert (models[0] / "best_model.zip").stat().st_mtime_ns == stamp  # not retrained
    assert (first.run_dir / "ledger.parquet").read_bytes() == (
        second.run_dir / "ledger.parquet"
    ).read_bytes()
    decisions = first.decisions
    assert decisions["confidence"].between(0, 1).all()
    assert set(decisions["action"]) <= {"BUY", "SELL", "CLOSE"}
    import json

    manifest = json.loads((models[0] / "manifest.json").read_text())
    # Trained and validated on bars before the first decision of the test split only.
    assert manifest["last_validation_bar"] < "2016-01-05"
    assert manifest["timesteps"] == 512 and manifest["algo"] == "PPO"


def test_changing_the_future_changes_no_earlier_decision(samples_dir: Path, tmp_path: Path) -> None:
    bars = load_bars(samples_dir / "SP500.parquet", adjust=False)
    frame = bars.frame.copy()
    cut = frame.index.get_loc(pd.Timestamp("2017-06-01", tz="UTC"))
    scale = np.ones(len(frame))
    scale[cut + 1 :] = np.linspace(0.7, 1.6, len(frame) - cut - 1)
    for column in ("open", "high", "low", "close", "adj_close"):
        frame[column] = frame[column].to_numpy() * scale
    meta = BarMeta(symbol="SP500", frequency="1d", calendar="XNYS")
    a = write_bars(bars.frame, tmp_path / "a" / "SP500.parquet", meta)
    b = write_bars(frame, tmp_path / "b" / "SP500.parquet", meta)
    models = tmp_path / "models"
    ra = run(_config(a, tmp_path / "ra", models), write=False)
    rb = run(_config(b, tmp_path / "rb", models), write=False)
    assert len(list(models.iterdir())) == 1  # same past, same training, one cached model
    cutoff = frame.index[cut]
    before_a = ra.decisions[ra.decisions.timestamp <= cutoff].reset_index(drop=True)
    before_b = rb.decisions[rb.decisions.timestamp <= cutoff].reset_index(drop=True)
    pd.testing.assert_frame_equal(before_a, before_b)


@pytest.mark.parametrize(("algo", "space"), [("DQN", "discrete"), ("A2C", "continuous")])
def test_other_algorithms_and_action_spaces(
    samples_dir: Path, tmp_path: Path, algo: str, space: str
) -> None:
    config = _config(
        samples_dir / "SP500.parquet",
        tmp_path / "runs",
        tmp_path / "models",
        algo=algo,
        hyperparameters={} if algo == "DQN" else {"n_steps": 64},
    )
    config = config.model_copy(
        update={"env": config.env.model_copy(update={"action_space": space})}
    )
    result = run(config, write=False)
    decisions = result.decisions
    assert decisions["confidence"].between(0, 1).all()
    if space == "continuous":
        assert decisions["target_position"].abs().max() <= 1.0
        assert set(decisions["action"]) == {"TARGET"}


def test_bad_settings_are_config_errors(samples_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not supported"):
        run(_config(samples_dir / "SP500.parquet", tmp_path, tmp_path, algo="SAC"), write=False)
    with pytest.raises(ConfigError, match="episode"):
        run(
            _config(samples_dir / "SP500.parquet", tmp_path, tmp_path, episode_bars=5000),
            write=False,
        )


class _FakeProgress:
    """Records what a rich Progress would be told."""

    def __init__(self) -> None:
        self.tasks: dict[int, dict[str, object]] = {}

    def add_task(self, description: str, total: float) -> int:
        self.tasks[len(self.tasks)] = {"description": description, "total": total}
        return len(self.tasks) - 1

    def update(self, task: int, **fields: object) -> None:
        self.tasks[task].update(fields)


def _train_bars(samples_dir: Path) -> Bars:
    return load_bars(samples_dir / "SP500.parquet", end="2012-12-31")


def test_kept_model_is_saved_with_the_statistics_it_was_selected_under(
    samples_dir: Path, tmp_path: Path
) -> None:
    bars = _train_bars(samples_dir)
    progress = _FakeProgress()
    agent = train_agent(
        bars,
        EnvConfig(),
        timesteps=1024,
        seed=2,
        episode_bars=64,
        eval_every=128,
        hyperparameters={"n_steps": 64, "batch_size": 32},
        cache_dir=tmp_path,
        progress=progress,
        label="train x",
    )
    assert progress.tasks == {0: {"description": "train x", "total": 1024, "completed": 1024}}
    manifest = agent.manifest
    assert manifest["data_sha256"] == _data_sha256(bars.frame)
    assert manifest["env"] == EnvConfig().model_dump(mode="json")
    assert {"stable-baselines3", "torch", "gymnasium", "numpy"} <= set(manifest["versions"])
    assert (manifest["seed"], manifest["timesteps"], manifest["algo"]) == (2, 1024, "PPO")
    assert manifest["hyperparameters"] == {"n_steps": 64, "batch_size": 32}
    # Replaying the validation episode with the saved model, its saved (frozen) statistics
    # and deterministic actions scores what the evaluation callback scored when it kept it.
    split = manifest["validation_bars"][0]
    env = TradingEnv(bars, EnvConfig(), start=split)
    obs, _ = env.reset(seed=0)
    total, done = 0.0, False
    while not done:
        action, _ = agent.model.predict(agent.normalise(obs), deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        done = terminated or truncated
    assert total == pytest.approx(manifest["best_validation_reward"], rel=1e-4, abs=1e-6)


def test_training_twice_with_one_seed_gives_identical_weights(
    samples_dir: Path, tmp_path: Path
) -> None:
    import torch

    bars = _train_bars(samples_dir)
    options = {
        "timesteps": 256,
        "seed": 4,
        "episode_bars": 64,
        "eval_every": 128,
        "hyperparameters": {"n_steps": 64, "batch_size": 32},
    }
    a = train_agent(bars, EnvConfig(), cache_dir=tmp_path / "a", **options)  # type: ignore[arg-type]
    b = train_agent(bars, EnvConfig(), cache_dir=tmp_path / "b", **options)  # type: ignore[arg-type]
    sa, sb = a.model.policy.state_dict(), b.model.policy.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert np.array_equal(a.obs_mean, b.obs_mean) and np.array_equal(a.obs_scale, b.obs_scale)


def test_the_cli_progress_shows_training(
    samples_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(samples_dir / "SP500.parquet", tmp_path / "runs", tmp_path / "models")
    run(config, progress=True, write=False)
    # Not on a terminal (captured): plain lines on stderr, the last one when it is done.
    err = capsys.readouterr().err
    assert "[progress] train ppo (PPO): done (512)" in err


_SMALL = {
    "timesteps": 256,
    "seed": 4,
    "episode_bars": 64,
    "eval_every": 128,
    "hyperparameters": {"n_steps": 32, "batch_size": 32},
}


def test_batched_and_dummy_vec_envs_train_identical_weights(
    samples_dir: Path, tmp_path: Path
) -> None:
    import torch

    bars = _train_bars(samples_dir)
    a = train_agent(bars, EnvConfig(), n_envs=3, cache_dir=tmp_path, **_SMALL)  # type: ignore[arg-type]
    b = train_agent(bars, EnvConfig(), n_envs=3, vec_env="dummy", cache_dir=tmp_path, **_SMALL)  # type: ignore[arg-type]
    assert (a.manifest["n_envs"], a.manifest["vec_env"]) == (3, "batched")
    assert (b.manifest["n_envs"], b.manifest["vec_env"]) == (3, "dummy")
    assert a.path != b.path  # each is cached under its own key
    sa, sb = a.model.policy.state_dict(), b.model.policy.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert np.array_equal(a.obs_mean, b.obs_mean) and np.array_equal(a.obs_scale, b.obs_scale)
    assert a.manifest["best_validation_reward"] == b.manifest["best_validation_reward"]


def test_the_model_cache_key_holds_the_training_code_and_n_envs(
    samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import strategies.drl_train as drl

    bars = _train_bars(samples_dir)
    settings = {"algo": "PPO", "n_envs": 1}
    key = drl._training_key(bars.frame, EnvConfig(), settings)
    assert key == drl._training_key(bars.frame, EnvConfig(), settings, drl._code_sha256())
    assert key != drl._training_key(bars.frame, EnvConfig(), settings, "0" * 64)
    assert key != drl._training_key(bars.frame, EnvConfig(), {**settings, "n_envs": 8})
    assert {"backtest.env", "backtest._env_nb", "backtest.vecenv", "strategies.drl"} <= set(
        drl._TRAINING_CODE
    )
    source = tmp_path / "env.py"
    source.write_text("reward = 1\n")
    before = drl._sources_sha256([source])
    source.write_text("reward = 2\n")
    assert drl._sources_sha256([source]) != before

    first = train_agent(bars, EnvConfig(), cache_dir=tmp_path / "models", **_SMALL)  # type: ignore[arg-type]
    assert first.manifest["code_sha256"] == drl._code_sha256()
    again = train_agent(bars, EnvConfig(), cache_dir=tmp_path / "models", **_SMALL)  # type: ignore[arg-type]
    assert again.path == first.path  # same code: reused
    monkeypatch.setattr(drl, "_code_sha256", lambda: "f" * 64)  # as if env.py had changed
    changed = train_agent(bars, EnvConfig(), cache_dir=tmp_path / "models", **_SMALL)  # type: ignore[arg-type]
    assert changed.path != first.path and changed.manifest["code_sha256"] == "f" * 64


def test_bad_n_envs_or_vec_env_are_config_errors() -> None:
    from strategies.drl import DRLPolicy

    with pytest.raises(ConfigError, match="n_envs"):
        DRLPolicy(n_envs=0)
    with pytest.raises(ConfigError, match="vec_env"):
        DRLPolicy(n_envs=2, vec_env="subproc")


def test_an_env_code_edit_changes_the_model_cache_key(
    samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import strategies.drl_train as drl

    # The real hashing path (find the modules' sources, hash their bytes), over a copy of
    # backtest/env.py standing in for the installed one, so that it can be edited.
    env_copy = tmp_path / "env_under_edit.py"
    shutil.copy(Path(drl.__file__).parents[1] / "backtest" / "env.py", env_copy)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(drl, "_TRAINING_CODE", (*drl._TRAINING_CODE, "env_under_edit"))
    bars = _train_bars(samples_dir)
    settings = {"algo": "PPO", "n_envs": 1}
    drl._code_sha256.cache_clear()
    before = drl._training_key(bars.frame, EnvConfig(), settings)
    env_copy.write_text(env_copy.read_text().replace("def step(", "def step(  ", 1))
    drl._code_sha256.cache_clear()
    after = drl._training_key(bars.frame, EnvConfig(), settings)
    drl._code_sha256.cache_clear()  # leave the real modules' hash for the other tests
    assert before != after


def test_the_manifest_keeps_the_training_and_validation_curves(
    samples_dir: Path, tmp_path: Path
) -> None:
    bars = _train_bars(samples_dir)
    agent = train_agent(bars, EnvConfig(), cache_dir=tmp_path / "models", **_SMALL)  # type: ignore[arg-type]
    train, validation = agent.manifest["train_curve"], agent.manifest["validation_curve"]
    steps = train["timesteps"]
    assert len(steps) == len(train["episode_return"]) >= 2  # 256 steps of 64-bar episodes
    assert steps == sorted(steps) and steps[-1] <= 256
    # Evaluated every 128 timesteps; the kept model is the best of those scores.
    assert validation["timesteps"] == [128, 256]
    assert max(validation["mean_reward"]) == agent.manifest["best_validation_reward"]
    # The episode returns are those Monitor reports: the log growth of equity per episode.
    assert all(-5 < r < 5 for r in train["episode_return"])
    # Loaded from the cache, the curves are still there (and the same).
    again = train_agent(bars, EnvConfig(), cache_dir=tmp_path / "models", **_SMALL)  # type: ignore[arg-type]
    assert again.manifest["train_curve"] == train


def test_tensorboard_log_needs_the_package(samples_dir: Path, tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    with pytest.raises(ConfigError, match="tensorboard_log"):
        train_agent(
            _train_bars(samples_dir),
            EnvConfig(),
            cache_dir=tmp_path / "models",
            tensorboard_log=str(tmp_path / "tb"),
            **_SMALL,  # type: ignore[arg-type]
        )


def test_train_env_overrides_shape_training_only(samples_dir: Path, tmp_path: Path) -> None:
    path = samples_dir / "SP500.parquet"
    plain = run(_config(path, tmp_path / "runs", tmp_path / "models"))
    shaped = run(
        _config(
            path,
            tmp_path / "runs",
            tmp_path / "models",
            train_env={"turnover_penalty": 0.01},
        )
    )
    manifests = [
        json.loads((folder / "manifest.json").read_text())
        for folder in (tmp_path / "models").iterdir()
    ]
    # Two models: the override reached training (and the cache key) ...
    assert sorted(m["env"]["turnover_penalty"] for m in manifests) == [0.0, 0.01]
    # ... while the policy trades with the run's environment (the penalty never reaches
    # the account anyway: both runs traded, each with its own model).
    policy = DRLPolicy(train_env={"turnover_penalty": 0.01})
    policy.bind(EnvConfig(window=10))
    assert policy.env_config == EnvConfig(window=10)
    assert len(plain.decisions) == len(shaped.decisions) > 0
    with pytest.raises(ConfigError, match=r"drl.train_env.*Fix"):
        run(_config(path, tmp_path, tmp_path, train_env={"turnover_penalt": 0.01}), write=False)
    with pytest.raises(ConfigError, match=r"drl.train_env.*Fix"):
        run(_config(path, tmp_path, tmp_path, train_env={"turnover_penalty": -1}), write=False)
