"""``backtest data``: bring market history and point-in-time text in as Parquet.

The commands validate and write through :mod:`backtest.data`; every user mistake is a
:class:`~backtest.errors.BacktestError` that :func:`backtest.cli.main` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from backtest.errors import BacktestError

__all__ = ["data_app"]

data_app = typer.Typer(
    help="Bring market history and point-in-time text in as Parquet.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
console = Console()


def _parse_max_gap(value: str) -> pd.Timedelta | None:
    if value.strip().lower() in ("none", "off", "0"):
        return None
    try:
        return pd.Timedelta(value)
    except ValueError as exc:
        raise BacktestError(
            f"--max-gap {value!r} is not a duration. Fix: use e.g. 7D, 36h, "
            "or 'none' to turn the gap rule off."
        ) from exc


@data_app.command("samples")
def _data_samples(
    dest: Annotated[Path, typer.Option(help="Directory to write the Parquet files into.")] = Path(
        "data"
    ),
    symbol: Annotated[
        list[str] | None,
        typer.Option(help="Only these samples (SP500, NASDAQ, GOOG, EURUSD); repeatable."),
    ] = None,
) -> None:
    """Write the real history bundled in the arch and backtesting packages as Parquet."""
    from backtest.samples import SAMPLES, write_samples

    known = {s.symbol for s in SAMPLES}
    unknown = [s for s in symbol or [] if s not in known]
    if unknown:
        raise BacktestError(
            f"--symbol {', '.join(unknown)}: no such sample. "
            f"Fix: choose from {', '.join(sorted(known))}."
        )
    manifest = write_samples(dest, tuple(symbol) if symbol else None)
    table = Table(title=f"Samples written to {dest}/ (provenance in {dest}/manifest.json)")
    for column in ("file", "rows", "first", "last", "freq", "calendar", "source"):
        table.add_column(column, overflow="fold")
    for entry in manifest["datasets"].values():
        if symbol and entry["symbol"] not in symbol:
            continue
        table.add_row(
            entry["file"],
            str(entry["rows"]),
            entry["first"][:10],
            entry["last"][:10],
            entry["frequency"],
            entry["calendar"],
            f"{entry['source_package']} {entry['source_version']}",
        )
    console.print(table)


@data_app.command("import")
def _data_import(
    file: Annotated[Path, typer.Argument(help="CSV (optionally .gz) or Parquet file of bars.")],
    symbol: Annotated[str, typer.Option(help="Instrument symbol; names the output file.")],
    tz: Annotated[
        str | None, typer.Option(help="Zone of naive timestamps, e.g. UTC or America/New_York.")
    ] = None,
    frequency: Annotated[
        str | None,
        typer.Option(
            help="Bar frequency (1min, 5min, 15min, 30min, 1h, 4h, 1d, 1w); inferred if omitted."
        ),
    ] = None,
    calendar: Annotated[
        str | None,
        typer.Option(help="Trading calendar: an exchange (XNYS, XNAS, XLON...), FX or 24/7."),
    ] = None,
    max_gap: Annotated[
        str,
        typer.Option(
            help="Longest span of missing expected bars allowed, e.g. 7D; 'none' to allow any."
        ),
    ] = "7D",
    ignore_column: Annotated[
        list[str] | None, typer.Option(help="A source column to leave out on purpose; repeatable.")
    ] = None,
    dest: Annotated[Path, typer.Option(help="Directory to write SYMBOL.parquet into.")] = Path(
        "data"
    ),
) -> None:
    """Validate a user's bar file and write it as canonical Parquet."""
    from backtest.data import import_bars

    out, bars = import_bars(
        file,
        symbol=symbol,
        dest=dest,
        tz=tz,
        frequency=frequency,
        calendar=calendar,
        max_gap=_parse_max_gap(max_gap),
        ignore_columns=ignore_column or (),
    )
    index = bars.frame.index
    console.print(
        f"Wrote {out}: {len(bars)} {bars.frequency} bars of {symbol}, "
        f"{index[0]} to {index[-1]} (timestamps read as {tz or 'UTC'})."
    )
    from backtest.calendars import find_gaps

    _calendar_hint(find_gaps(index, bars.frequency, calendar)[0], bars.frequency, calendar)


def _calendar_hint(gaps: list[Any], frequency: str, calendar: str | None) -> None:
    """Say so when the gaps of a daily file without a calendar are its weekends."""
    from backtest.calendars import weekend_gaps

    if calendar is not None or frequency != "1d" or not gaps:
        return
    weekends = weekend_gaps(gaps)
    if weekends:
        console.print(
            f"Note: {weekends} of the {len(gaps)} gap(s) are weekends. Without a trading "
            "calendar every day is expected; import with --calendar XNYS (or the exchange "
            "the instrument trades on: XNAS, XLON...; FX for currencies) so that weekends and "
            "holidays are not counted as gaps."
        )


def _text_import(kind: str, file: Path, tz: str | None, dest: Path) -> None:
    from backtest.data import import_text

    out, feed, moved = import_text(file, kind=kind, dest=dest, tz=tz)  # type: ignore[arg-type]
    console.print(
        f"Wrote {out}: {len(feed.frame)} {kind} items, available "
        f"{feed.frame['available_at'].iloc[0]} to {feed.frame['available_at'].iloc[-1]}."
    )
    if moved:
        console.print(
            f"{moved} item(s) were not in available_at order in {file}; they were "
            "written sorted by available_at (stable)."
        )


@data_app.command("import-news")
def _data_import_news(
    file: Annotated[
        Path, typer.Argument(help="CSV or Parquet with available_at, headline/text, source.")
    ],
    tz: Annotated[str | None, typer.Option(help="Zone of naive available_at values.")] = None,
    dest: Annotated[Path, typer.Option(help="Directory of the bars the news belongs to.")] = Path(
        "data"
    ),
) -> None:
    """Import point-in-time news into DEST/news.parquet."""
    _text_import("news", file, tz, dest)


@data_app.command("import-documents")
def _data_import_documents(
    file: Annotated[
        Path, typer.Argument(help="CSV or Parquet with available_at, headline/text, source.")
    ],
    tz: Annotated[str | None, typer.Option(help="Zone of naive available_at values.")] = None,
    dest: Annotated[
        Path, typer.Option(help="Directory of the bars the documents belong to.")
    ] = Path("data"),
) -> None:
    """Import point-in-time documents (filings, reports) into DEST/documents.parquet."""
    _text_import("documents", file, tz, dest)


@data_app.command("info")
def _data_info(
    path: Annotated[Path, typer.Argument(help="A bar Parquet file or a dataset directory.")],
    symbol: Annotated[str | None, typer.Option(help="Symbol inside a directory.")] = None,
) -> None:
    """Print rows, time range, frequency, calendar and gaps of a bar dataset."""
    from backtest.data import describe

    info = describe(path, symbol=symbol)
    table = Table(title=f"{info.meta.symbol} ({info.path})", show_header=False)
    table.add_column("field")
    table.add_column("value")
    rows = [
        ("rows", str(info.rows)),
        ("range", f"{info.first} to {info.last}"),
        ("frequency", info.meta.frequency),
        ("calendar", info.meta.calendar or "none (every bar of a regular grid is expected)"),
        ("adj_close", "yes: prices adjusted at load" if info.adjusted else "no"),
        ("source", info.meta.source),
        ("source sha256", info.meta.source_sha256),
        ("notes", info.meta.notes or "-"),
        (
            "gaps",
            f"{len(info.gaps)} run(s), {sum(g.missing_bars for g in info.gaps)} expected "
            "bar(s) missing",
        ),
        ("off-calendar bars", str(info.off_calendar_bars)),
    ]
    for name, value in rows:
        table.add_row(name, escape(value))
    console.print(table)
    if info.gaps:
        longest = sorted(info.gaps, key=lambda g: g.span, reverse=True)[:5]
        gap_table = Table(title="Longest gaps")
        for column in ("after", "before", "missing bars", "span"):
            gap_table.add_column(column)
        for gap in longest:
            gap_table.add_row(str(gap.after), str(gap.before), str(gap.missing_bars), str(gap.span))
        console.print(gap_table)
        _calendar_hint(info.gaps, info.meta.frequency, info.meta.calendar)
