"""``backtest compare``: does strategy B beat A in a run directory?

The paired stationary bootstrap itself is :func:`backtest.compare.compare_run_dir`; this
module only prints its result. :mod:`backtest.cli` registers :func:`compare_command`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["compare_command"]

console = Console()


def compare_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (runs/<run_id>).")],
    a: Annotated[str, typer.Option("--a", help="Baseline strategy or seed group, e.g. drl.")],
    b: Annotated[str, typer.Option("--b", help="Challenger strategy or seed group, e.g. hybrid.")],
    reps: Annotated[int, typer.Option(min=100, help="Bootstrap replicates.")] = 2_000,
    block_size: Annotated[
        int | None,
        typer.Option(min=1, help="Mean block length (default: Politis-White on the data)."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the comparison as JSON instead of a table.")
    ] = False,
) -> None:
    """Does B beat A? Sharpe and mean-return differences, gross and net of LLM cost."""
    import json

    from backtest.compare import compare_run_dir

    result = compare_run_dir(run_dir, a, b, reps=reps, block_size=block_size)
    if json_out:
        console.print_json(json.dumps(result))
        return
    level = f"{result['confidence']:.0%}"
    table = Table(
        title=f"{escape(b)} minus {escape(a)}: {result['n_seeds']} paired seed(s), "
        f"{result['reps']} stationary-bootstrap replicates, mean block {result['block_size']} "
        "bars; mean return in basis points per bar"
    )
    for column in ("", "estimate", f"{level} CI", "p", "per seed"):
        table.add_column(column, justify="left" if not column else "right", no_wrap=True)
    for key, label, scale, fmt in (
        ("sharpe_diff", "Sharpe", 1.0, "+.2f"),
        ("mean_return_diff", "return bp", 1e4, "+.2f"),
    ):
        for basis in ("gross", "net"):
            d = result[basis][key]
            table.add_row(
                f"{label} {basis}",
                format(d["estimate"] * scale, fmt),
                f"{format(d['ci_low'] * scale, fmt)}..{format(d['ci_high'] * scale, fmt)}",
                f"{d['p_value']:.3f}",
                f"sd {d['seed_std'] * scale:.2f}",
            )
    console.print(table)
    console.print(
        "gross: as if the LLM answers were free; net: after every LLM dollar. "
        f"LLM cost of {escape(b)}: ${result['llm_cost_usd']:,.2f} (mean over seeds)."
    )
    capital = result["break_even_capital_usd"]
    if capital is None:
        console.print(
            f"Break-even capital: never; {escape(b)} earns no more than {escape(a)} before LLM "
            "cost, so no account size pays for its LLM calls."
        )
    elif capital == 0:
        console.print(
            f"Break-even capital: $0; {escape(b)} spends no more on LLMs than {escape(a)}."
        )
    else:
        console.print(
            f"Break-even capital: ${capital:,.0f} (the account size at which {escape(b)}'s "
            "excess return pays for its extra LLM cost)."
        )
