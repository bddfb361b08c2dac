"""Where the benchmarks find the sample data."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_samples(dest: Path) -> Path:
    """Write the sample Parquet files into ``dest`` with ``backtest data samples``."""
    exe = shutil.which("backtest", path=str(Path(sys.executable).parent)) or "backtest"
    subprocess.run([exe, "data", "samples", "--dest", str(dest)], check=True, capture_output=True)
    return dest


@contextlib.contextmanager
def sample_dir(data: str | Path | None) -> Iterator[Path]:
    """``data`` itself, or a temporary directory filled by :func:`write_samples`."""
    if data is not None:
        yield Path(data)
        return
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        yield write_samples(Path(tmp))
