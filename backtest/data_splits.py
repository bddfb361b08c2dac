"""Train / validation / test splits and walk-forward folds over one bar index.

Both are positional slices cut at timestamps (:func:`split_by_date`,
:func:`walk_forward_folds`); no bar is copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from backtest.data_schema import _utc
from backtest.errors import ConfigError

__all__ = ["Fold", "Split", "split_by_date", "walk_forward_folds"]


@dataclass(frozen=True, slots=True)
class Split:
    """Train / validation / test as positional slices into one bar index."""

    train: slice
    validation: slice
    test: slice

    def sizes(self) -> tuple[int, int, int]:
        """Number of bars in each part."""
        return tuple(s.stop - s.start for s in (self.train, self.validation, self.test))  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Fold:
    """One walk-forward fold: fit on ``train``, evaluate on ``test`` (positional slices)."""

    train: slice
    test: slice


def split_by_date(
    index: pd.DatetimeIndex,
    *,
    train_end: str | pd.Timestamp,
    validation_end: str | pd.Timestamp,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> Split:
    """Split bars at two dates: train ``[start, train_end)``, validation
    ``[train_end, validation_end)``, test ``[validation_end, end]``.

    Raises:
        ConfigError: The dates are out of order or leave a part empty.
    """
    ns = index.as_unit("ns").asi8
    lo = 0 if start is None else int(np.searchsorted(ns, _utc(start).value, side="left"))
    hi = len(ns) if end is None else int(np.searchsorted(ns, _utc(end).value, side="right"))
    a = int(np.searchsorted(ns, _utc(train_end).value, side="left"))
    b = int(np.searchsorted(ns, _utc(validation_end).value, side="left"))
    if _utc(train_end) >= _utc(validation_end):
        raise ConfigError(
            f"splits.train_end ({train_end}) must be before splits.validation_end "
            f"({validation_end}). Fix: swap or correct the dates."
        )
    a, b = min(max(a, lo), hi), min(max(b, lo), hi)
    split = Split(train=slice(lo, a), validation=slice(a, b), test=slice(b, hi))
    for name, size in zip(("train", "validation", "test"), split.sizes(), strict=True):
        if size <= 0:
            raise ConfigError(
                f"splits: the {name} part is empty (data runs {index[0]} to {index[-1]}; "
                f"train_end={train_end}, validation_end={validation_end}). "
                "Fix: choose dates inside the data's range."
            )
    return split


def walk_forward_folds(
    n_bars: int,
    *,
    n_folds: int,
    test_size: int,
    train_size: int | None = None,
    gap: int = 0,
) -> list[Fold]:
    """Walk-forward folds that end at the last bar, each test block after its train block.

    Args:
        n_bars: Number of bars available.
        n_folds: Number of folds.
        test_size: Bars in each test block; test blocks are consecutive and disjoint.
        train_size: Bars in each train block (rolling window); ``None`` for an expanding
            window that starts at bar 0.
        gap: Bars left out between each train block and its test block (purging).

    Raises:
        ConfigError: The folds do not fit in ``n_bars``.
    """
    if n_folds < 1 or test_size < 1 or gap < 0 or (train_size is not None and train_size < 1):
        raise ConfigError(
            "walk_forward: n_folds and test_size must be >= 1, gap >= 0 and "
            "train_size >= 1. Fix: correct the splits.walk_forward values."
        )
    first_test = n_bars - n_folds * test_size
    min_train = train_size if train_size is not None else 1
    if first_test - gap < min_train:
        raise ConfigError(
            f"walk_forward: {n_folds} folds of {test_size} test bars (+{gap} gap, "
            f"{train_size or 'at least 1'} train bars) need more than the {n_bars} bars "
            "available. Fix: use fewer or smaller folds."
        )
    folds = []
    for k in range(n_folds):
        test_start = first_test + k * test_size
        train_stop = test_start - gap
        train_start = 0 if train_size is None else train_stop - train_size
        folds.append(
            Fold(
                train=slice(train_start, train_stop), test=slice(test_start, test_start + test_size)
            )
        )
    return folds
