"""Hide which market and which period a prompt is about, so a model cannot recall the outcome.

A model trained on text about October 2008 knows what followed a 9 % fall in the S&P 500 that
month; shown the same bars under another name, at another level and in another century, it
has to read the chart. :class:`Anonymizer` rewrites the structured market context every
prompt and chart is built from:

- dates: every bar time, the decision time and the time of each news item and document move
  by ``shift_days`` (default 23,191 days = 3,313 weeks, about 63.5 years: weekdays are kept,
  the year, month and day of month are not);
- symbol: the real symbol becomes ``symbol`` (default ``ASSET``) everywhere, news and
  document text included (whole words, case-insensitive);
- prices: open, high, low and close are multiplied by one factor fixed at the first decision
  so that its close reads 100; volume by another so that the mean volume of that decision's
  lookback reads 1,000,000. Both stay fixed for the rest of the run, so returns, ranges and
  relative volume are unchanged and every prompt of a run is consistent with the others.

Decisions map back unchanged (BUY / SELL / HOLD and a size in fractions of equity do not
depend on the price level); price levels a model answers with (support, resistance) are
divided by the factor before they enter the ledger. Free text is not rewritten beyond the
symbol: dates, index levels or company names written inside a headline still show.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["DEFAULT_SHIFT_DAYS", "Anonymizer"]

#: 3,313 weeks: a whole number of weeks keeps weekdays; ~63.5 years moves month and season.
DEFAULT_SHIFT_DAYS = 23_191
_NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Anonymizer:
    """A fixed date shift, symbol alias and price and volume factors.

    Attributes:
        shift_days: Days added to every time shown.
        symbol: The name shown instead of the real symbol.
        price_scale: Factor on open, high, low and close (None until :meth:`fitted`).
        volume_scale: Factor on volume (None until :meth:`fitted`).
    """

    shift_days: int = DEFAULT_SHIFT_DAYS
    symbol: str = "ASSET"
    price_scale: float | None = None
    volume_scale: float | None = None

    def __post_init__(self) -> None:
        if not self.symbol.strip():
            raise ValueError("anonymize_symbol must not be empty")
        for name in ("price_scale", "volume_scale"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    @property
    def shift_ns(self) -> int:
        """The date shift in nanoseconds."""
        return self.shift_days * _NS_PER_DAY

    @property
    def is_fitted(self) -> bool:
        """Whether both factors are fixed."""
        return self.price_scale is not None and self.volume_scale is not None

    def fitted(self, close: np.ndarray, volume: np.ndarray) -> Anonymizer:
        """Fix the factors from the first decision's bars (its last close reads 100).

        Args:
            close: Closes up to the first decision (the last one is used).
            volume: Volumes of that decision's lookback (their mean is used).

        Returns:
            A copy with ``price_scale`` and ``volume_scale`` set (factors already set stay).
        """
        price_scale = self.price_scale
        if price_scale is None:
            last = float(close[-1]) if len(close) else math.nan
            price_scale = 100.0 / last if math.isfinite(last) and last > 0 else 1.0
        volume_scale = self.volume_scale
        if volume_scale is None:
            finite = volume[np.isfinite(volume)] if len(volume) else volume
            mean = float(finite.mean()) if len(finite) else math.nan
            volume_scale = 1e6 / mean if math.isfinite(mean) and mean > 0 else 1.0
        return replace(self, price_scale=price_scale, volume_scale=volume_scale)

    def rename(self, text: str, real_symbol: str) -> str:
        """``text`` with the real symbol (a whole word, any case) replaced by the alias."""
        if not real_symbol:
            return text
        pattern = re.compile(rf"(?<![\w^]){re.escape(real_symbol)}(?!\w)", re.IGNORECASE)
        return pattern.sub(self.symbol, text)

    def restore_price(self, value: float) -> float:
        """A price level read in the anonymised units, in the real ones."""
        return value / (self.price_scale or 1.0)
