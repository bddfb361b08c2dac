"""Shared fixtures: the real sample data, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from backtest.samples import write_samples


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the four sample Parquet files and their manifest."""
    dest = tmp_path_factory.mktemp("samples")
    write_samples(dest)
    return dest
