"""Terminal tables that fit the terminal (80 columns included) without breaking a word.

Rich folds a cell's text anywhere when a column is narrower than its longest word, which is
how ``hybrid~random_llm@0`` became ``hybrid~rando`` / ``m_llm@0`` at 80 columns. Tables built
here instead:

- use a light box (a rule under the header, no side borders) and one space between columns;
- give every text column a minimum width of its longest word, so text wraps at spaces only;
- keep numbers on one line;
- when that still does not fit, drop the optional columns the caller marked, last first,
  and say which were left out (they are in ``summary.json``); only then, as a last resort,
  the widest text column is cut with an ellipsis (never folded mid-word).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

__all__ = ["Column", "fitted_table"]


@dataclass(frozen=True)
class Column:
    """One column: its header, whether it holds numbers, and whether it may be dropped."""

    header: str
    numeric: bool = False
    optional: bool = False


def _longest_word(texts: Sequence[str]) -> int:
    return max((len(word) for text in texts for word in text.split()), default=0)


def fitted_table(
    title: str | None,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    console: Console,
) -> tuple[Table, list[str]]:
    """A table of ``rows`` (already formatted, markup escaped) that fits ``console``.

    Returns:
        The table and the headers of the columns dropped to make it fit.
    """
    keep = list(range(len(columns)))
    dropped: list[str] = []
    optional = [i for i, c in enumerate(columns) if c.optional]

    def build(squeeze: bool) -> Table:
        table = Table(
            title=title,
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            padding=(0, 1),
            collapse_padding=True,
            title_justify="left",
        )
        for i in keep:
            column = columns[i]
            texts = [column.header, *(row[i] for row in rows)]
            if column.numeric:
                table.add_column(column.header, justify="right", no_wrap=True)
            elif squeeze:
                table.add_column(column.header, overflow="ellipsis", no_wrap=True)
            else:
                table.add_column(column.header, min_width=_longest_word(texts), overflow="ellipsis")
        for row in rows:
            table.add_row(*(row[i] for i in keep))
        return table

    def fits(table: Table) -> bool:
        # Measured without the terminal's limit (rich clamps a measurement to it).
        wide = console.options.update(max_width=100_000)
        return Measurement.get(console, wide, table).minimum <= console.width

    table = build(squeeze=False)
    while not fits(table) and optional:
        gone = optional.pop()
        keep.remove(gone)
        dropped.insert(0, columns[gone].header)
        table = build(squeeze=False)
    if not fits(table):
        table = build(squeeze=True)
    return table, dropped
