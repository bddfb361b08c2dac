"""Fault matrix, item 1: bad data never reaches the engine.

Each file is written behind the importer's back (as a user's pipeline or a bad copy would)
and given to ``backtest run``: the CLI exits 1 with the rule broken and the fix, prints no
traceback and writes no run directory. The row rules themselves (NaN, non-positive prices,
high below the body, negative volume, duplicate and unsorted timestamps...) are covered one
by one in tests/backtest/test_data.py; here every file-level fault goes through the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from backtest.data import load_bars
from backtest.errors import DataFormatError, DataValidationError
from tests.faults.conftest import assert_refused, cli, write_experiment


def _frame(src: Path) -> tuple[pd.DataFrame, dict[bytes, bytes]]:
    table = pq.read_table(src)
    return table.to_pandas().set_index("timestamp"), dict(table.schema.metadata)


def _write(frame: pd.DataFrame, meta: dict[bytes, bytes], path: Path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=True)
    pq.write_table(table.replace_schema_metadata(meta), path)


def _truncated(src: Path, out: Path) -> None:
    data = src.read_bytes()
    out.write_bytes(data[: len(data) // 2])


def _prices_as_text(src: Path, out: Path) -> None:
    # Text that parses as exactly the same numbers: only the stored type is wrong.
    frame, meta = _frame(src)
    frame["close"] = frame["close"].map(repr)
    _write(frame, meta, out)


def _volume_as_bool(src: Path, out: Path) -> None:
    frame, meta = _frame(src)
    frame["volume"] = frame["volume"] > 0
    _write(frame, meta, out)


def _naive_index(src: Path, out: Path) -> None:
    frame, meta = _frame(src)
    frame.index = frame.index.tz_localize(None)
    _write(frame, meta, out)


def _mixed_offsets(src: Path, out: Path) -> None:
    # A timestamp column that mixes UTC offsets can only be stored as text in Parquet.
    frame, meta = _frame(src)
    stamps = [
        (ts.tz_convert("Asia/Tokyo") if i % 2 else ts).isoformat()
        for i, ts in enumerate(frame.index)
    ]
    frame.index = pd.Index(stamps, name="timestamp")
    _write(frame, meta, out)


def _two_symbols_interleaved(src: Path, out: Path) -> None:
    frame, meta = _frame(src)
    other = frame.copy()
    other[["open", "high", "low", "close"]] *= 2.0
    both = pd.concat([frame.assign(symbol="SPX"), other.assign(symbol="NDX")])
    _write(both.sort_index(kind="stable"), meta, out)


def _two_symbols_one_after_another(src: Path, out: Path) -> None:
    # No timestamp repeats: only the symbol column tells the two instruments apart.
    frame, meta = _frame(src)
    first = frame.loc[:"2012-12-31"].assign(symbol="SPX")
    second = (frame.loc["2013-01-01":] * 2.0).assign(symbol="NDX")
    _write(pd.concat([first, second]), meta, out)


def _gap_of_weeks(src: Path, out: Path) -> None:
    frame, meta = _frame(src)
    _write(frame.drop(frame.loc["2015-11-01":"2015-12-10"].index), meta, out)


CASES: dict[str, tuple[Callable[[Path, Path], None], type[Exception], str, tuple[str, ...]]] = {
    "truncated": (_truncated, DataFormatError, "", ("cannot be read as Parquet", "truncated")),
    "prices_as_text": (_prices_as_text, DataValidationError, "column_type", ("'close'",)),
    "volume_as_bool": (_volume_as_bool, DataValidationError, "column_type", ("'volume'",)),
    "naive_index": (_naive_index, DataValidationError, "naive_timestamp", ("--tz",)),
    "mixed_offsets": (_mixed_offsets, DataValidationError, "timestamp_type", ("mixed",)),
    "two_symbols_interleaved": (
        _two_symbols_interleaved,
        DataValidationError,
        "multiple_symbols",
        ("SPX", "NDX"),
    ),
    "two_symbols_one_after_another": (
        _two_symbols_one_after_another,
        DataValidationError,
        "multiple_symbols",
        ("--symbol",),
    ),
    "gap_of_weeks": (_gap_of_weeks, DataValidationError, "gap", ("2015-10-30", "--max-gap")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_file_is_refused_before_the_engine_starts(
    case: str, sp500: Path, tmp_path: Path
) -> None:
    make, error, rule, needles = CASES[case]
    bad = tmp_path / f"{case}.parquet"
    make(sp500, bad)
    # The library raises the specific error...
    with pytest.raises(error) as info:
        load_bars(bad)
    if rule:
        assert isinstance(info.value, DataValidationError) and info.value.rule == rule
    # ...and the CLI turns it into one message, exit 1, no traceback, no run directory.
    experiment = write_experiment(
        tmp_path / "exp.toml", bad, strategies=[{"name": "sma", "kind": "sma"}]
    )
    out = tmp_path / "runs"
    result = cli("run", str(experiment), "--out", str(out), "--no-progress", cwd=tmp_path)
    assert_refused(result, out, str(bad), *([f"[rule: {rule}]"] if rule else []), *needles)


def test_the_unchanged_file_runs(sp500: Path, tmp_path: Path) -> None:
    """The control: the same experiment over the good file completes."""
    experiment = write_experiment(
        tmp_path / "exp.toml", sp500, strategies=[{"name": "sma", "kind": "sma"}]
    )
    result = cli(
        "run", str(experiment), "--out", str(tmp_path / "runs"), "--no-progress", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "runs").glob("*/summary.json"))) == 1
