"""The bar schema's names and types, shared by import, validation, loading and text.

:class:`BarMeta` (what a bar file says about itself, stored in the Parquet schema metadata
under :data:`META_KEY`), :class:`Bars` (validated bars with their metadata), the column
names, and the parsing helpers every reader uses: timestamps to UTC, column names, symbols
as file names. The schema itself is documented in :mod:`backtest.data`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from backtest.errors import ConfigError, DataFormatError, DataValidationError

__all__ = [
    "BAR_COLUMNS",
    "COLUMN_SYNONYMS",
    "DEFAULT_MAX_GAP",
    "META_KEY",
    "OPTIONAL_COLUMNS",
    "BarMeta",
    "Bars",
    "column_suggestions",
    "file_sha256",
]


BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: tuple[str, ...] = ("adj_close",)
META_KEY = b"hybrid_backtest"
#: Default longest wall-clock span a run of missing expected bars may cover.
DEFAULT_MAX_GAP = pd.Timedelta(days=7)


def file_sha256(path: str | Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class BarMeta:
    """What a bar file says about itself.

    Attributes:
        symbol: Instrument symbol, e.g. ``"SP500"``.
        frequency: Canonical bar frequency (see :data:`backtest.calendars.FREQUENCIES`).
        calendar: Trading calendar name (``"XNYS"``, ``"FX"``, ``"24/7"``) or ``None``.
        source: Where the data came from (a package file, a user's path).
        source_sha256: sha256 of the source file's bytes.
        source_timezone: Time zone the source's naive timestamps were read in.
        notes: Free text carried into reports (e.g. "price index, no dividends").
        periods_per_year: Bars per year under the calendar, computed once at import
            (see :func:`backtest.metrics.periods_per_year`) so runs need not rebuild the
            calendar; None in files written before it was recorded.
    """

    symbol: str
    frequency: str
    calendar: str | None = None
    source: str = ""
    source_sha256: str = ""
    source_timezone: str = "UTC"
    notes: str = ""
    periods_per_year: float | None = None

    def to_json(self) -> bytes:
        """Serialise to the canonical JSON stored in the Parquet schema metadata."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, *, path: str) -> BarMeta:
        """Parse the metadata written by :meth:`to_json`."""
        try:
            data = json.loads(raw)
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise DataFormatError(
                f"{path}: the hybrid_backtest metadata in the Parquet schema is damaged ({exc}). "
                "Fix: re-import the source with `backtest data import`."
            ) from exc


@dataclass(frozen=True, slots=True)
class Bars:
    """Validated bars of one instrument, with their metadata.

    Attributes:
        frame: float64 columns indexed by a UTC ``timestamp`` index. When the source had
            ``adj_close`` and the bars were adjusted, an ``adj_factor`` column records the
            factor applied to each bar.
        meta: The file's metadata.
        path: The file or directory the bars were read from, if any.
    """

    frame: pd.DataFrame
    meta: BarMeta
    path: str = ""

    @property
    def symbol(self) -> str:
        """The instrument symbol."""
        return self.meta.symbol

    @property
    def frequency(self) -> str:
        """The canonical bar frequency."""
        return self.meta.frequency

    def __len__(self) -> int:
        return len(self.frame)


#: Column names other tools use for the bar columns (normalised: lower case, ``_`` for
#: spaces). They are suggested, never renamed silently.
COLUMN_SYNONYMS: dict[str, tuple[str, ...]] = {
    "open": ("px_open", "open_price", "opening_price", "o", "first"),
    "high": ("px_high", "high_price", "h", "max"),
    "low": ("px_low", "low_price", "l", "min"),
    "close": (
        "px_last",
        "last",
        "last_price",
        "close_price",
        "closing_price",
        "price",
        "px_close",
        "c",
        "settle",
        "settlement",
        "adj_close",
        "adjusted_close",
        "adj._close",
    ),
    "volume": ("px_volume", "vol", "volume_traded", "v", "qty", "quantity", "turnover_volume"),
}


def column_suggestions(present: list[str], missing: list[str]) -> list[str]:
    """For each missing bar column, the present column that looks like it (``px_last`` ->
    ``close``), as ``"px_last looks like close"``; synonyms first, then near spellings."""
    import difflib

    hints = []
    taken: set[str] = set()
    for column in missing:
        found = next(
            (c for c in present if c in COLUMN_SYNONYMS.get(column, ()) and c not in taken), None
        )
        if found is None:
            close = difflib.get_close_matches(column, [c for c in present if c not in taken], 1)
            found = close[0] if close else None
        if found is not None:
            taken.add(found)
            hints.append(f"{found} looks like {column}")
    return hints


def _normalise_name(name: object) -> str:
    return str(name).strip().lower().replace(" ", "_")


def _to_utc_index(raw: pd.Series | pd.Index, *, source: str, tz: str | None) -> pd.DatetimeIndex:
    """Parse timestamps into a UTC index; naive ones need ``tz`` unless they are plain dates."""
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw.dtype):
        index = pd.DatetimeIndex(raw)
    else:
        text = pd.Series(raw).astype("string")
        offsets = text.str.extract(r"([+-]\d{2}:?\d{2}|Z)$", expand=False)
        distinct = offsets.dropna().unique()
        if len(distinct) > 1 or (len(distinct) == 1 and offsets.isna().any()):
            bad = np.flatnonzero((offsets != offsets.dropna().iloc[0]).fillna(True).to_numpy())
            raise DataValidationError(
                source,
                "mixed_timezone",
                f"timestamps carry different UTC offsets ({', '.join(map(str, distinct[:4]))})",
                "write every timestamp in one zone, or convert them all to UTC first",
                row=str(text.iloc[bad[0]]),
                count=len(bad),
            )
        try:
            parsed = pd.to_datetime(text, utc=len(distinct) == 1, format="mixed")
        except (ValueError, TypeError, OverflowError) as exc:
            raise DataValidationError(
                source,
                "timestamp_type",
                f"cannot parse timestamps ({exc})",
                "write timestamps as ISO 8601, e.g. 2019-01-02 or 2019-01-02T14:30:00Z",
            ) from exc
        index = pd.DatetimeIndex(parsed)
    if index.hasnans:
        first = int(np.flatnonzero(np.asarray(index.isna()))[0])
        raise DataValidationError(
            source,
            "missing_timestamp",
            "a timestamp is missing or empty",
            "remove or fill the rows without a timestamp",
            row=f"position {first}",
        )
    if index.tz is None:
        plain_dates = bool((index.normalize() == index).all())
        if tz is None and not plain_dates:
            raise DataValidationError(
                source,
                "naive_timestamp",
                "timestamps have a time of day but no time zone",
                "pass --tz with the zone they were written in (e.g. --tz UTC or "
                "--tz America/New_York)",
            )
        # Plain dates are session labels: they mean the same day whatever the zone.
        index = index.tz_localize("UTC" if plain_dates else tz)
    return index.tz_convert("UTC").as_unit("ns")


def _safe_name(symbol: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in symbol)
    if not cleaned or cleaned.startswith("."):
        raise ConfigError(f"symbol {symbol!r} cannot name a file. Fix: use letters, digits, - _ .")
    return cleaned


def _utc(value: str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")).as_unit("ns")
