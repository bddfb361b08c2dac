"""Market bars and point-in-time text: schema, validation, import, loading and splits.

The canonical bar schema, as stored in Parquet and as held in memory:

============== ======================= ==============================================
column         type                    rule
============== ======================= ==============================================
``timestamp``  timestamp[ns, UTC]      strictly increasing, unique; the bar's open
                                       (intraday) or its session date (daily)
``open``       float64                 finite, > 0
``high``       float64                 finite, >= max(open, close)
``low``        float64                 finite, <= min(open, close), > 0
``close``      float64                 finite, > 0
``volume``     float64                 finite, >= 0
``adj_close``  float64 (optional)      finite, > 0; close adjusted for splits and
                                       dividends
============== ======================= ==============================================

In memory the timestamp is the frame's index. The Parquet file's schema metadata
(key ``hybrid_backtest``) holds the symbol, bar frequency, trading calendar, source and
the sha256 of the source file.

Corporate actions, one rule: when ``adj_close`` is present, :func:`load_bars` multiplies
open, high, low and close by ``adj_factor = adj_close / close`` and divides volume by it
(so dollar volume is unchanged). Features, fills and the buy-and-hold benchmark then all
see the same total-return series: a split never looks like a crash and dividends are not
lost. The S&P 500 and NASDAQ samples are price indices: they stand in for a fund that
tracks the index, and they contain no dividends.

Point-in-time text (news, documents) has ``available_at`` (UTC, when the text could first
be read), ``headline`` and/or ``text``, and ``source``. A decision at time *t* sees an item
only if ``available_at <= t`` (:meth:`TextFeed.visible`).

Nothing is silently dropped or reordered: bad data raises
:class:`~backtest.errors.DataValidationError` naming the file, the first offending row,
the rule and the fix.

The module is the public face of the data layer; the code lives in the modules named after
each concept: :mod:`backtest.data_schema` (names and types), :mod:`backtest.data_validate`
(the rules), :mod:`backtest.data_import` (reading a source, writing Parquet),
:mod:`backtest.data_load` (loading and describing Parquet), :mod:`backtest.data_text`
(point-in-time text) and :mod:`backtest.data_splits` (splits and walk-forward folds). Every
name keeps importing from here.
"""

from __future__ import annotations

from backtest.calendars import Gap, find_gaps, infer_frequency, parse_frequency  # noqa: F401
from backtest.data_import import (  # noqa: F401 (re-exported: tests and users import them from here)
    _TIMESTAMP_NAMES,
    _bars_table,
    import_bars,
    read_bars_file,
    write_bars,
)
from backtest.data_load import (  # noqa: F401 (re-exported: tests and users import them from here)
    DataInfo,
    _check_one_symbol,
    _check_stored_types,
    _parquet_files,
    adjust_for_corporate_actions,
    describe,
    load_bars,
)
from backtest.data_schema import (  # noqa: F401 (re-exported: tests and users import them from here)
    BAR_COLUMNS,
    DEFAULT_MAX_GAP,
    META_KEY,
    OPTIONAL_COLUMNS,
    BarMeta,
    Bars,
    _normalise_name,
    _safe_name,
    _to_utc_index,
    _utc,
    file_sha256,
)
from backtest.data_splits import (
    Fold,
    Split,
    split_by_date,
    walk_forward_folds,
)
from backtest.data_text import (  # noqa: F401 (re-exported: tests and users import them from here)
    _TEXT_KINDS,
    TEXT_COLUMNS,
    TextFeed,
    import_text,
    load_text,
)
from backtest.data_validate import (  # noqa: F401 (re-exported: tests and users import them from here)
    _first_row,
    validate_bars,
)

__all__ = [
    "BAR_COLUMNS",
    "DEFAULT_MAX_GAP",
    "BarMeta",
    "Bars",
    "DataInfo",
    "Fold",
    "Split",
    "TextFeed",
    "adjust_for_corporate_actions",
    "describe",
    "file_sha256",
    "import_bars",
    "import_text",
    "load_bars",
    "load_text",
    "read_bars_file",
    "split_by_date",
    "validate_bars",
    "walk_forward_folds",
    "write_bars",
]
