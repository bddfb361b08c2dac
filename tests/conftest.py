"""Shared fixtures (the real sample data, written once per test session) and the hypothesis
profiles.

Hypothesis profiles:

``ci``   derandomised (the same examples on every run, so a green CI is green every time), no
         deadline (a loaded 2-core runner is slow in bursts), the reproduction blob printed
         for any failure. Chosen when the ``CI`` environment variable is set (``.ci/run`` runs
         with ``CI=true``).
``dev``  random examples, the default elsewhere, for finding new failures while developing;
         a failure found here is pinned with ``@example`` next to its test so that ``ci``
         keeps testing it.

``HYPOTHESIS_PROFILE=ci|dev`` overrides the choice. Tests that set ``max_examples`` with
their own ``@settings`` keep it; the profile supplies everything they leave unset.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from backtest.samples import write_samples

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the four sample Parquet files and their manifest."""
    dest = tmp_path_factory.mktemp("samples")
    write_samples(dest)
    return dest
