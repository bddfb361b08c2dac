"""Point-in-time text (news, documents): import, storage and the visibility rule.

An item has ``available_at`` (UTC, when it could first be read), ``headline`` and/or
``text``, and ``source``; a decision at time *t* sees it only if ``available_at <= t``
(:meth:`TextFeed.visible`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from backtest.data_schema import META_KEY, _normalise_name, _to_utc_index, _utc, file_sha256
from backtest.errors import ConfigError, DataFormatError, DataValidationError

__all__ = ["TEXT_COLUMNS", "TextFeed", "import_text", "load_text"]


_TEXT_KINDS = ("news", "documents")


TEXT_COLUMNS: tuple[str, ...] = ("available_at", "headline", "text", "source")


@dataclass(frozen=True, slots=True)
class TextFeed:
    """Point-in-time news or documents, sorted by ``available_at``.

    Attributes:
        frame: Columns ``available_at`` (UTC), ``headline``, ``text``, ``source`` and any
            extra columns of the source, sorted by ``available_at`` (stable).
        kind: ``"news"`` or ``"documents"``.
    """

    frame: pd.DataFrame
    kind: str = "news"
    _available_ns: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "_available_ns",
            pd.DatetimeIndex(self.frame["available_at"]).as_unit("ns").asi8.copy(),
        )

    def visible(self, decision_time: pd.Timestamp | int, limit: int | None = None) -> pd.DataFrame:
        """Items whose ``available_at`` is no later than ``decision_time`` (newest last).

        Args:
            decision_time: A UTC timestamp or int64 UTC nanoseconds.
            limit: Keep only the newest ``limit`` items.
        """
        t = (
            decision_time
            if isinstance(decision_time, int | np.integer)
            else _utc(decision_time).value
        )
        stop = int(np.searchsorted(self._available_ns, t, side="right"))
        begin = 0 if limit is None else max(0, stop - limit)
        return self.frame.iloc[begin:stop]


def import_text(
    path: str | Path,
    *,
    kind: Literal["news", "documents"],
    dest: str | Path = "data",
    tz: str | None = None,
) -> tuple[Path, TextFeed, int]:
    """Validate news or documents and write ``DEST/news.parquet`` or ``DEST/documents.parquet``.

    Items are sorted by ``available_at`` with a stable sort (their order in the source
    carries no meaning); the number of items that moved is returned so the caller can say so.

    Returns:
        The path written, the feed, and how many items changed position when sorted.
    """
    if kind not in _TEXT_KINDS:
        raise ConfigError(f"text kind {kind!r} is unknown. Fix: use 'news' or 'documents'.")
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise DataFormatError(f"{source}: no such file. Fix: check the path.")
    try:
        raw = (
            pq.read_table(path).to_pandas()
            if path.suffix.lower() == ".parquet"
            else pd.read_csv(path, dtype_backend="pyarrow")
        )
    except (
        pa.ArrowException,
        OSError,
        UnicodeDecodeError,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
    ) as exc:
        raise DataFormatError(
            f"{source}: cannot be read as a table ({exc}). "
            "Fix: re-export the file as CSV or Parquet."
        ) from exc
    raw.columns = [_normalise_name(c) for c in raw.columns]
    if len(raw) == 0:
        raise DataValidationError(
            source, "empty", f"the file holds no {kind}", "point at a file with at least one item"
        )
    if "available_at" not in raw.columns:
        raise DataValidationError(
            source,
            "missing_column",
            "no 'available_at' column",
            "add available_at: the time the text could first be read (not the event time)",
        )
    if "headline" not in raw.columns and "text" not in raw.columns:
        raise DataValidationError(
            source,
            "missing_column",
            "neither 'headline' nor 'text' found",
            "add a headline or text column",
        )
    for column in ("headline", "text", "source"):
        if column not in raw.columns:
            raw[column] = ""
        raw[column] = raw[column].astype("string").fillna("")
    empty = ((raw["headline"].str.strip() == "") & (raw["text"].str.strip() == "")).to_numpy()
    if empty.any():
        first = int(np.flatnonzero(empty)[0])
        raise DataValidationError(
            source,
            "empty_text",
            "an item has neither headline nor text",
            "remove it or fill it in",
            row=f"position {first}",
            count=int(empty.sum()),
        )
    available = _to_utc_index(raw["available_at"], source=source, tz=tz)
    raw["available_at"] = available
    order = np.argsort(available.asi8, kind="stable")
    moved = int((order != np.arange(len(order))).sum())
    frame = raw.iloc[order].reset_index(drop=True)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{kind}.parquet"
    tmp = out.with_name(out.name + ".tmp")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {
        META_KEY: json.dumps(
            {"kind": kind, "source": source, "source_sha256": file_sha256(path)}, sort_keys=True
        ).encode()
    }
    pq.write_table(
        table.replace_schema_metadata({**(table.schema.metadata or {}), **meta}),
        tmp,
        compression="zstd",
    )
    tmp.replace(out)
    return out, TextFeed(frame=frame, kind=kind), moved


def load_text(path: str | Path, *, kind: str = "news") -> TextFeed:
    """Load a ``news.parquet`` or ``documents.parquet`` written by :func:`import_text`."""
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(
            f"{path}: cannot be read as Parquet ({exc}). "
            f"Fix: re-import it with `backtest data import-{kind}`."
        ) from exc
    available = pd.DatetimeIndex(frame["available_at"])
    if available.tz is None or not available.is_monotonic_increasing:
        raise DataValidationError(
            str(path),
            "unsorted_timestamp",
            "available_at is not UTC and sorted",
            f"re-import it with `backtest data import-{kind}`",
        )
    return TextFeed(frame=frame, kind=kind)
