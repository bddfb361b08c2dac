"""DRL-only policy: trains on the past only, caches, repeats, reports a confidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtest import RunConfig, run
from backtest.data import BarMeta, load_bars, write_bars
from backtest.errors import ConfigError

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
