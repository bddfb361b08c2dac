"""Bars: sample import, validation rules, round-trips, loading, adjustment, splits, text."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtest import data as bd
from backtest.data import (
    BarMeta,
    file_sha256,
    import_bars,
    import_text,
    load_bars,
    load_text,
    read_bars_file,
    split_by_date,
    validate_bars,
    walk_forward_folds,
    write_bars,
)
from backtest.errors import (
    ConfigError,
    DataFormatError,
    DataValidationError,
    SourceMissingError,
)
from backtest.samples import SAMPLES, write_samples
from tests.backtest.strategies_data import bar_frames

EXPECTED_ROWS = {"SP500": 5031, "NASDAQ": 5031, "GOOG": 2148, "EURUSD": 5000}
FAST = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# ----------------------------------------------------------------------------- samples


def test_samples_match_known_row_counts_and_manifest(samples_dir: Path) -> None:
    manifest = json.loads((samples_dir / "manifest.json").read_text())
    assert set(manifest["datasets"]) == set(EXPECTED_ROWS)
    for symbol, rows in EXPECTED_ROWS.items():
        entry = manifest["datasets"][symbol]
        path = samples_dir / entry["file"]
        bars = load_bars(path)
        assert len(bars) == rows == entry["rows"]
        assert bars.symbol == symbol
        assert entry["sha256"] == file_sha256(path)
        assert entry["first"] == bars.frame.index[0].isoformat()
        assert entry["last"] == bars.frame.index[-1].isoformat()
        assert entry["source_package"] in ("arch", "backtesting")
        assert entry["source_version"]
        assert len(entry["source_sha256"]) == 64
        assert bars.frame.index.tz is not None and str(bars.frame.index.tz) == "UTC"
        assert bars.frame.index.is_monotonic_increasing and bars.frame.index.is_unique
    sp = load_bars(samples_dir / "SP500.parquet").frame
    assert sp.index[0] == pd.Timestamp("1999-01-04", tz="UTC")
    assert sp.index[-1] == pd.Timestamp("2018-12-31", tz="UTC")
    # First S&P 500 bar, as in the source file.
    assert sp["close"].iloc[0] == pytest.approx(1228.099976, rel=1e-12)
    eur = load_bars(samples_dir / "EURUSD.parquet")
    assert eur.frequency == "1h" and eur.meta.calendar == "FX"


def test_samples_are_byte_identical_when_written_twice(samples_dir: Path, tmp_path: Path) -> None:
    write_samples(tmp_path)
    for sample in SAMPLES:
        name = f"{sample.symbol}.parquet"
        assert (tmp_path / name).read_bytes() == (samples_dir / name).read_bytes()
    assert (tmp_path / "manifest.json").read_bytes() == (samples_dir / "manifest.json").read_bytes()


def test_samples_have_no_gaps_against_their_exchange_calendars(samples_dir: Path) -> None:
    for symbol in ("SP500", "NASDAQ", "GOOG"):
        info = bd.describe(samples_dir / f"{symbol}.parquet")
        assert info.gaps == [] and info.off_calendar_bars == 0, symbol
    eur = bd.describe(samples_dir / "EURUSD.parquet")
    # The two Christmas / New Year closures, 24 hourly bars each.
    assert [g.missing_bars for g in eur.gaps] == [24, 24]


def test_missing_source_package_names_the_pip_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "arch" else real(name, *a)
    )
    with pytest.raises(SourceMissingError, match=r"pip install 'arch'"):
        write_samples(tmp_path, ("SP500",))
    assert not (tmp_path / "SP500.parquet").exists()


# ---------------------------------------------------------------------- validation rules


def _rule(frame: pd.DataFrame, **kwargs: object) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        validate_bars(frame, source="bars.csv", **kwargs)  # type: ignore[arg-type]
    assert "bars.csv" in str(info.value) and "Fix:" in str(info.value)
    return info.value


def _set(column: str, value: float) -> Callable[[pd.DataFrame, int], pd.DataFrame]:
    def mutate(frame: pd.DataFrame, i: int) -> pd.DataFrame:
        frame = frame.copy()
        frame.iloc[i, frame.columns.get_loc(column)] = value
        return frame

    return mutate


def _high_below(frame: pd.DataFrame, i: int) -> pd.DataFrame:
    frame = frame.copy()
    top = max(frame["open"].iloc[i], frame["close"].iloc[i])
    frame.iloc[i, frame.columns.get_loc("high")] = top * 0.99
    frame.iloc[i, frame.columns.get_loc("low")] = min(frame["low"].iloc[i], top * 0.5)
    return frame


def _low_above(frame: pd.DataFrame, i: int) -> pd.DataFrame:
    frame = frame.copy()
    bottom = min(frame["open"].iloc[i], frame["close"].iloc[i])
    frame.iloc[i, frame.columns.get_loc("low")] = bottom * 1.01
    frame.iloc[i, frame.columns.get_loc("high")] = max(frame["high"].iloc[i], bottom * 2)
    return frame


ROW_RULES: dict[str, Callable[[pd.DataFrame, int], pd.DataFrame]] = {
    "not_finite_nan": _set("close", float("nan")),
    "not_finite_inf": _set("volume", float("inf")),
    "non_positive_price": _set("low", -1.0),
    "negative_volume": _set("volume", -5.0),
    "high_below_body": _high_below,
    "low_above_body": _low_above,
}


@pytest.mark.parametrize("case", sorted(ROW_RULES))
@FAST
@given(frame=bar_frames(), position=st.floats(0, 1))
def test_each_row_rule_names_the_first_broken_row(
    case: str, frame: pd.DataFrame, position: float
) -> None:
    i = int(position * (len(frame) - 1))
    broken = ROW_RULES[case](frame, i)
    err = _rule(broken, frequency="1d")
    assert err.rule == case.removesuffix("_nan").removesuffix("_inf")
    assert err.row == frame.index[i]
    assert str(frame.index[i]) in str(err)


@FAST
@given(frame=bar_frames(min_size=3), position=st.floats(0, 1))
def test_duplicate_timestamp_is_rejected(frame: pd.DataFrame, position: float) -> None:
    i = 1 + int(position * (len(frame) - 2))
    index = frame.index.to_numpy().copy()
    index[i] = index[i - 1]
    err = _rule(frame.set_axis(pd.DatetimeIndex(index, name="timestamp")))
    assert err.rule == "duplicate_timestamp" and err.row == frame.index[i - 1]


@FAST
@given(frame=bar_frames(min_size=3), position=st.floats(0, 1))
def test_unsorted_timestamps_are_rejected_not_reordered(
    frame: pd.DataFrame, position: float
) -> None:
    i = 1 + int(position * (len(frame) - 2))
    order = np.arange(len(frame))
    order[i - 1], order[i] = order[i], order[i - 1]
    swapped = frame.iloc[order]
    err = _rule(swapped)
    assert err.rule == "unsorted_timestamp" and err.row == frame.index[i - 1]


@FAST
@given(frame=bar_frames(min_size=14), position=st.floats(0, 1), missing=st.integers(7, 30))
def test_gap_longer_than_max_gap_is_rejected(
    frame: pd.DataFrame, position: float, missing: int
) -> None:
    i = int(position * (len(frame) - 3))
    keep = np.ones(len(frame) + missing, dtype=bool)
    long_index = pd.date_range(
        frame.index[0], periods=len(frame) + missing, freq="1D", tz="UTC", name="timestamp"
    ).as_unit("ns")
    keep[i + 1 : i + 1 + missing] = False  # `missing` days vanish after row i
    gapped = frame.set_axis(long_index[keep])
    err = _rule(gapped, frequency="1d", calendar=None)
    assert err.rule == "gap" and err.row == long_index[i]
    # The same data passes when the user allows longer gaps, or turns the rule off.
    validate_bars(gapped, source="x", frequency="1d", max_gap=pd.Timedelta(days=missing + 2))
    validate_bars(gapped, source="x", frequency="1d", max_gap=None)


def test_frame_level_rules() -> None:
    frame = _small_frame()
    assert _rule(frame.iloc[:0]).rule == "empty"
    assert _rule(frame.drop(columns=["volume"])).rule == "missing_column"
    assert _rule(frame.tz_localize(None)).rule == "naive_timestamp"
    assert _rule(frame.reset_index(drop=True)).rule == "timestamp_type"
    text = frame.assign(close=frame["close"].astype(str))
    assert _rule(text).rule == "column_type"
    assert _rule(frame.assign(volume=True)).rule == "column_type"
    with_nat = frame.set_axis(
        pd.DatetimeIndex([frame.index[0], pd.NaT, frame.index[2]], name="timestamp")
    )
    assert _rule(with_nat).rule == "missing_timestamp"


def test_unknown_frequency_suggests_the_closest() -> None:
    with pytest.raises(DataValidationError, match=r"Did you mean '1min'\?") as info:
        bd.parse_frequency("1mn")
    assert info.value.rule == "unknown_frequency"
    assert bd.parse_frequency("daily") == "1d" and bd.parse_frequency("1H") == "1h"
    irregular = pd.DatetimeIndex(["2020-01-01", "2020-01-01 00:07", "2020-01-01 00:14"], tz="UTC")
    with pytest.raises(DataValidationError) as info:
        bd.infer_frequency(irregular, source="x.csv")
    assert info.value.rule == "unknown_frequency"


def _small_frame() -> pd.DataFrame:
    index = pd.date_range("2020-01-01", periods=3, freq="1D", tz="UTC", name="timestamp").as_unit(
        "ns"
    )
    return pd.DataFrame(
        {
            "open": [10.0, 11, 12],
            "high": [11.0, 12, 13],
            "low": [9.0, 10, 11],
            "close": [10.5, 11.5, 12.5],
            "volume": [100.0, 200, 300],
        },
        index=index,
    )


# --------------------------------------------------------------------- reading, import


def _write_csv(frame: pd.DataFrame, path: Path, **renames: str) -> Path:
    out = frame.reset_index().rename(columns=renames)
    out.to_csv(path, index=False)
    return path


@FAST
@given(frame=bar_frames())
def test_csv_import_round_trips_exactly(
    tmp_path_factory: pytest.TempPathFactory, frame: pd.DataFrame
) -> None:
    tmp = tmp_path_factory.mktemp("rt")
    src = tmp / "in.csv"
    frame.reset_index().rename(columns={"timestamp": "Date", "close": "Close"}).to_csv(
        src, index=False, float_format="%.17g"
    )
    out, _ = import_bars(src, symbol="TEST", dest=tmp, frequency="1d")
    loaded = load_bars(out)
    pd.testing.assert_frame_equal(loaded.frame, frame, check_freq=False)
    assert loaded.meta.source_sha256 == file_sha256(src)
    # Parquet in, Parquet out: identical bytes the second time.
    out2, _ = import_bars(out, symbol="TEST", dest=tmp / "again", frequency="1d")
    pd.testing.assert_frame_equal(load_bars(out2).frame, frame, check_freq=False)


def test_naive_intraday_timestamps_need_a_zone(tmp_path: Path) -> None:
    index = pd.date_range("2021-03-01 09:30", periods=5, freq="5min", name="timestamp")
    frame = _small_frame().iloc[[0, 1, 2, 0, 1]].set_axis(index)
    src = _write_csv(frame, tmp_path / "m.csv")
    with pytest.raises(DataValidationError, match="--tz") as info:
        import_bars(src, symbol="M", dest=tmp_path)
    assert info.value.rule == "naive_timestamp"
    _, bars = import_bars(src, symbol="M", dest=tmp_path, tz="America/New_York")
    assert bars.frame.index[0] == pd.Timestamp("2021-03-01 14:30", tz="UTC")
    assert bars.frequency == "5min"


def test_mixed_timezones_are_rejected(tmp_path: Path) -> None:
    src = tmp_path / "mixed.csv"
    src.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2021-03-01T10:00:00+00:00,1,2,0.5,1.5,1\n"
        "2021-03-01T11:00:00+01:00,1,2,0.5,1.5,1\n"
    )
    with pytest.raises(DataValidationError) as info:
        read_bars_file(src)
    assert info.value.rule == "mixed_timezone"


def test_symbol_column_must_be_selected(tmp_path: Path) -> None:
    frame = _small_frame()
    two = pd.concat([frame.assign(symbol="AAA"), frame.assign(symbol="BBB")])
    src = tmp_path / "two.csv"
    two.reset_index().to_csv(src, index=False)
    with pytest.raises(DataValidationError) as info:
        import_bars(src, symbol="ALL", dest=tmp_path)
    assert info.value.rule == "symbol_not_found"
    with pytest.raises(DataValidationError) as info:
        read_bars_file(src)
    assert info.value.rule == "multiple_symbols"
    _, bars = import_bars(src, symbol="BBB", dest=tmp_path, frequency="1d")
    pd.testing.assert_frame_equal(bars.frame, frame, check_freq=False)


def test_unknown_columns_are_an_error_unless_ignored(tmp_path: Path) -> None:
    src = _write_csv(_small_frame().assign(vwap=1.0), tmp_path / "x.csv")
    with pytest.raises(DataValidationError, match="--ignore-column") as info:
        import_bars(src, symbol="X", dest=tmp_path)
    assert info.value.rule == "unknown_column"
    _, bars = import_bars(src, symbol="X", dest=tmp_path, ignore_columns=["VWAP"])
    assert "vwap" not in bars.frame.columns


def test_unreadable_files_are_format_errors(tmp_path: Path, samples_dir: Path) -> None:
    good = (samples_dir / "GOOG.parquet").read_bytes()
    truncated = tmp_path / "GOOG.parquet"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFormatError, match=r"GOOG\.parquet.*truncated"):
        load_bars(truncated)
    with pytest.raises(DataFormatError, match="no such file"):
        read_bars_file(tmp_path / "nope.csv")
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    with pytest.raises(DataFormatError, match="unsupported file type"):
        read_bars_file(tmp_path / "x.xlsx")
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.Table.from_pandas(_small_frame().reset_index()), plain)
    with pytest.raises(DataFormatError, match="backtest data import"):
        load_bars(plain)


def test_load_refuses_bad_bars_written_behind_its_back(tmp_path: Path) -> None:
    frame = _small_frame()
    frame.iloc[1, frame.columns.get_loc("high")] = 1.0
    meta = BarMeta(symbol="BAD", frequency="1d")
    pq.write_table(bd._bars_table(frame, meta), tmp_path / "BAD.parquet")
    with pytest.raises(DataValidationError) as info:
        load_bars(tmp_path / "BAD.parquet")
    assert info.value.rule == "high_below_body"


def test_write_is_atomic_and_validates_first(tmp_path: Path) -> None:
    frame = _small_frame()
    target = tmp_path / "OK.parquet"
    write_bars(frame, target, BarMeta(symbol="OK", frequency="1d"))
    before = target.read_bytes()
    broken = frame.copy()
    broken.iloc[0, 0] = float("nan")
    with pytest.raises(DataValidationError):
        write_bars(broken, target, BarMeta(symbol="OK", frequency="1d"))
    assert target.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


# ----------------------------------------------------------------------- loading slices


def test_directory_dataset_pushes_time_range_down(tmp_path: Path, samples_dir: Path) -> None:
    full = load_bars(samples_dir / "SP500.parquet", adjust=False)
    table = pq.read_table(samples_dir / "SP500.parquet")
    years = pa.compute.year(table["timestamp"])
    part = tmp_path / "SP500"
    for year in sorted(set(years.to_pylist()), reverse=True):  # written out of order on purpose
        chunk = table.filter(pa.compute.equal(years, year))
        out = part / f"year={year}" / "part-0.parquet"
        out.parent.mkdir(parents=True)
        pq.write_table(chunk, out)
    sliced = load_bars(tmp_path, symbol="SP500", start="2008-06-01", end="2009-06-30", adjust=False)
    expected = full.frame.loc["2008-06-01":"2009-06-30"]
    pd.testing.assert_frame_equal(sliced.frame, expected)
    assert sliced.meta == full.meta
    whole = load_bars(part, adjust=False)
    pd.testing.assert_frame_equal(whole.frame, full.frame)


# ------------------------------------------------------------------- corporate actions


def test_adjustment_removes_a_split_and_keeps_dollar_volume(tmp_path: Path) -> None:
    index = pd.date_range("2020-01-01", periods=4, freq="1D", tz="UTC", name="timestamp").as_unit(
        "ns"
    )
    # A 2:1 split before day 3: the raw close halves, adj_close is continuous.
    frame = pd.DataFrame(
        {
            "open": [100.0, 101, 51, 52],
            "high": [102.0, 103, 52, 53],
            "low": [99.0, 100, 50, 51],
            "close": [101.0, 102, 51.5, 52.5],
            "volume": [10.0, 10, 20, 20],
            "adj_close": [50.5, 51, 51.5, 52.5],
        },
        index=index,
    )
    out = write_bars(frame, tmp_path / "S.parquet", BarMeta(symbol="S", frequency="1d"))
    adjusted = load_bars(out).frame
    assert "adj_close" not in adjusted.columns
    np.testing.assert_allclose(adjusted["close"], frame["adj_close"], rtol=1e-15)
    np.testing.assert_allclose(adjusted["open"], [50.0, 50.5, 51, 52], rtol=1e-15)
    np.testing.assert_allclose(
        adjusted["volume"] * adjusted["close"], frame["volume"] * frame["close"], rtol=1e-12
    )
    assert (adjusted["high"] >= adjusted[["open", "close"]].max(axis=1)).all()
    raw = load_bars(out, adjust=False).frame
    pd.testing.assert_frame_equal(raw, frame, check_freq=False)


# ------------------------------------------------------------------------------ splits


def test_split_by_date_on_the_sp500(samples_dir: Path) -> None:
    index = load_bars(samples_dir / "SP500.parquet").frame.index
    split = split_by_date(index, train_end="2013-01-01", validation_end="2016-01-01")
    assert index[split.train.stop - 1] < pd.Timestamp("2013-01-01", tz="UTC")
    assert index[split.validation.start] >= pd.Timestamp("2013-01-01", tz="UTC")
    assert index[split.test.start] >= pd.Timestamp("2016-01-01", tz="UTC")
    assert sum(split.sizes()) == len(index)
    with pytest.raises(ConfigError, match="train_end"):
        split_by_date(index, train_end="2016-01-01", validation_end="2013-01-01")
    with pytest.raises(ConfigError, match="test part is empty"):
        split_by_date(index, train_end="2013-01-01", validation_end="2030-01-01")


@settings(max_examples=200, deadline=None)
@given(
    n_bars=st.integers(10, 2000),
    n_folds=st.integers(1, 8),
    test_size=st.integers(1, 200),
    train_size=st.one_of(st.none(), st.integers(1, 500)),
    gap=st.integers(0, 10),
)
def test_walk_forward_folds_never_train_on_the_future(
    n_bars: int, n_folds: int, test_size: int, train_size: int | None, gap: int
) -> None:
    try:
        folds = walk_forward_folds(
            n_bars, n_folds=n_folds, test_size=test_size, train_size=train_size, gap=gap
        )
    except ConfigError:
        assert n_bars - n_folds * test_size - gap < (train_size or 1)
        return
    assert len(folds) == n_folds
    assert folds[-1].test.stop == n_bars
    for k, fold in enumerate(folds):
        assert 0 <= fold.train.start < fold.train.stop <= fold.test.start - gap
        assert fold.test.stop - fold.test.start == test_size
        if train_size is not None:
            assert fold.train.stop - fold.train.start == train_size
        if k:
            assert fold.test.start == folds[k - 1].test.stop


# -------------------------------------------------------------------------------- text


def test_news_import_sorts_stably_and_respects_available_at(tmp_path: Path) -> None:
    src = tmp_path / "news.csv"
    src.write_text(
        "available_at,headline,source\n"
        "2020-01-02T15:00:00Z,second,wire\n"
        "2020-01-01T15:00:00Z,first,wire\n"
        "2020-01-02T15:00:00Z,third,wire\n"
        "2020-01-03T21:00:01Z,after close,wire\n"
    )
    out, feed, moved = import_text(src, kind="news", dest=tmp_path)
    assert moved == 2
    assert list(feed.frame["headline"]) == ["first", "second", "third", "after close"]
    loaded = load_text(out)
    close_jan3 = pd.Timestamp("2020-01-03T21:00:00Z")
    assert list(loaded.visible(close_jan3)["headline"]) == ["first", "second", "third"]
    assert list(loaded.visible(close_jan3, limit=1)["headline"]) == ["third"]
    assert loaded.visible(pd.Timestamp("2019-12-31T00:00:00Z")).empty
    assert len(loaded.visible(close_jan3 + pd.Timedelta(seconds=1))) == 4


@settings(max_examples=60, deadline=None)
@given(
    times=st.lists(st.integers(0, 10_000), min_size=1, max_size=50), probe=st.integers(-10, 10_010)
)
def test_visible_text_is_exactly_what_was_available(times: list[int], probe: int) -> None:
    stamps = pd.to_datetime(sorted(times), unit="s", utc=True)
    feed = bd.TextFeed(
        frame=pd.DataFrame({"available_at": stamps, "headline": "h", "text": "", "source": "s"})
    )
    seen = feed.visible(pd.Timestamp(probe, unit="s", tz="UTC"))
    assert len(seen) == sum(t <= probe for t in times)
    assert (seen["available_at"] <= pd.Timestamp(probe, unit="s", tz="UTC")).all()


def test_text_rules(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("published,headline\n2020-01-01,x\n")
    with pytest.raises(DataValidationError, match="available_at") as info:
        import_text(bad, kind="news", dest=tmp_path)
    assert info.value.rule == "missing_column"
    empty = tmp_path / "empty.csv"
    empty.write_text("available_at,headline,text\n2020-01-01T00:00:00Z,,\n")
    with pytest.raises(DataValidationError) as info:
        import_text(empty, kind="documents", dest=tmp_path)
    assert info.value.rule == "empty_text"
    naive = tmp_path / "naive.csv"
    naive.write_text("available_at,headline\n2020-01-01 13:00,x\n")
    with pytest.raises(DataValidationError) as info:
        import_text(naive, kind="news", dest=tmp_path)
    assert info.value.rule == "naive_timestamp"
    _, feed, _ = import_text(naive, kind="news", dest=tmp_path, tz="America/New_York")
    assert feed.frame["available_at"].iloc[0] == pd.Timestamp("2020-01-01 18:00", tz="UTC")


def test_sample_data_dir_can_be_copied_and_still_loads(tmp_path: Path, samples_dir: Path) -> None:
    shutil.copy(samples_dir / "GOOG.parquet", tmp_path / "GOOG.parquet")
    assert len(load_bars(tmp_path, symbol="GOOG")) == EXPECTED_ROWS["GOOG"]
