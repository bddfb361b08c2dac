"""Walk-forward folds: the gap separates training from the test block; positions may carry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backtest import RunConfig, run
from backtest.data import load_bars, walk_forward_folds
from backtest.policy import Decision, MarketView, Observation


class Momentum:
    """Long when the close is above the close 5 bars back, else flat: no state at all."""

    trained_on: list[tuple[int, int]] = []  # noqa: RUF012 - (train_until stop, bars seen)

    def __init__(self, name: str = "momentum") -> None:
        self.name = name
        self._stop: int | None = None
        self._first = True

    def train_until(self, stop: int) -> None:
        self._stop = stop

    def reset(self, *, seed: int | None, market: MarketView) -> None:
        self._first = True

    def act(self, obs: Observation) -> Decision:
        close = obs.market.close
        if self._first and self._stop is not None:
            Momentum.trained_on.append((self._stop, len(obs.market)))
        self._first = False
        up = obs.t >= 5 and close[obs.t] > close[obs.t - 5]
        return Decision(target_position=1.0 if up else 0.0)


def _config(path: Path, out: Path, splits: dict[str, Any]) -> RunConfig:
    return RunConfig.model_validate(
        {
            "data": {"path": str(path), "start": "2012-01-01", "end": "2016-12-31"},
            "splits": splits,
            "env": {"margin_rate": 0.05, "cash_rate": 0.02, "stop_loss": 0.03},
            "strategies": [
                {"name": "m", "kind": "tests.backtest.test_walk_forward_folds:Momentum"}
            ],
            "benchmark": None,
            "output_dir": str(out),
        }
    )


@pytest.mark.parametrize(("gap", "train_size"), [(0, None), (7, None), (7, 300)])
def test_the_gap_ends_training_before_the_test_block(
    samples_dir: Path, tmp_path: Path, gap: int, train_size: int | None
) -> None:
    path = samples_dir / "SP500.parquet"
    Momentum.trained_on.clear()
    wf = {"n_folds": 3, "test_size": 100, "gap": gap, "train_size": train_size}
    run(_config(path, tmp_path, {"walk_forward": wf}), write=False)
    n = len(load_bars(path, start="2012-01-01", end="2016-12-31"))
    folds = walk_forward_folds(n, n_folds=3, test_size=100, gap=gap, train_size=train_size)
    assert len(Momentum.trained_on) == 3
    for fold, (stop, seen) in zip(folds, Momentum.trained_on, strict=True):
        lo = fold.train.start
        # Told to train on the train block only; shown history up to the first decision.
        assert stop == fold.train.stop - lo == fold.test.start - gap - lo
        assert seen == fold.test.start + 1 - lo


def test_carried_positions_make_the_folds_one_unbroken_account(
    samples_dir: Path, tmp_path: Path
) -> None:
    path = samples_dir / "SP500.parquet"
    wf = {"n_folds": 4, "test_size": 90}
    carried = run(
        _config(path, tmp_path / "a", {"walk_forward": {**wf, "carry_position": True}}),
        write=False,
    ).ledger
    flat = run(_config(path, tmp_path / "b", {"walk_forward": wf}), write=False).ledger
    # A peer oracle: one ordinary run over the same 360 bars. The policy has no state, so
    # carrying the account across folds must give exactly its ledger.
    whole = run(_config(path, tmp_path / "c", {"last_bars": 360}), write=False).ledger
    assert list(carried.timestamp) == list(whole.timestamp) == list(flat.timestamp)
    for column in ("equity_usd", "position_units", "cash_usd", "fees_usd"):
        assert np.array_equal(carried[column].to_numpy(), whole[column].to_numpy()), column
    # Without carrying, each later fold starts flat: the ledgers part at the fold starts.
    units = flat.position_units.to_numpy()
    assert all(units[k] == 0.0 for k in (90, 180, 270))
    assert any(whole.position_units.to_numpy()[k] != 0.0 for k in (90, 180, 270))
    assert not np.array_equal(flat.equity_usd.to_numpy(), whole.equity_usd.to_numpy())
