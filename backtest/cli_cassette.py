"""``backtest cassette``: inspect and maintain LLM cassettes (stats, verify, merge, prune,
export) through :class:`backtest.llm.cassette.Cassette`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["cassette_app"]

cassette_app = typer.Typer(
    help="Inspect and maintain LLM cassettes.", no_args_is_help=True, rich_markup_mode=None
)
console = Console()


def _open_cassette(path: Path) -> Any:
    from backtest.errors import CassetteError
    from backtest.llm.cassette import Cassette

    if not path.exists():
        raise CassetteError(f"{path}: no such cassette. Fix: check the path (a directory).")
    return Cassette(path, "none")


@cassette_app.command("stats")
def _cassette_stats(path: Annotated[Path, typer.Argument(help="Cassette directory.")]) -> None:
    """Count recordings, errors and models; flag models served as mixed snapshots."""
    stats = _open_cassette(path).stats()
    from backtest.cli_tables import Column, fitted_table

    rows = [
        [
            escape(model),
            str(count),
            escape(", ".join(sorted(stats.models_served.get(model, set()))) or "-"),
        ]
        for model, count in stats.models_requested.items()
    ]
    title = (
        f"{path}: {stats.recordings} recordings in {stats.shards} shard(s), "
        f"{stats.errors} recorded errors"
    )
    columns = [Column("model requested"), Column("recordings", numeric=True), Column("served as")]
    table, _ = fitted_table(title, columns, rows, console)
    console.print(table)
    for model, snapshots in stats.mixed_snapshots.items():
        console.print(
            f"[yellow]warning:[/yellow] {escape(model)} was served by "
            f"{len(snapshots)} different snapshots: {escape(', '.join(sorted(snapshots)))}"
            "; replays are exact, but the recordings mix model versions."
        )
    if stats.duplicate_keys:
        console.print(
            f"{stats.duplicate_keys} duplicate key(s); `backtest cassette merge` compacts them."
        )


@cassette_app.command("verify")
def _cassette_verify(path: Annotated[Path, typer.Argument(help="Cassette directory.")]) -> None:
    """Check every recording's checksum and JSON; exit 1 on the first damaged one."""
    cassette = _open_cassette(path)
    notes = cassette.verify()
    for note in notes:
        console.print(f"note: {escape(note)}")
    console.print(f"{path}: {len(cassette)} recordings verified.")


@cassette_app.command("merge")
def _cassette_merge(path: Annotated[Path, typer.Argument(help="Cassette directory.")]) -> None:
    """Compact all shards into one, sorted by key, duplicates dropped."""
    target, dropped = _open_cassette(path).merge()
    console.print(f"Merged into {target} ({dropped} duplicate key(s) dropped).")


@cassette_app.command("prune")
def _cassette_prune(
    path: Annotated[Path, typer.Argument(help="Cassette directory.")],
    failures: Annotated[
        bool,
        typer.Option("--failures", help="Remove recorded failures (refused, timeout, 429, 5xx)."),
    ] = False,
) -> None:
    """Rewrite a cassette without what it should not replay (atomically, into one shard)."""
    from backtest.errors import ConfigError

    if not failures:
        raise ConfigError(
            "backtest cassette prune: say what to prune. Fix: pass --failures (recorded "
            "failed calls; the next new_episodes run calls them again)."
        )
    target, removed, dropped = _open_cassette(path).prune_failures()
    console.print(
        f"Removed {removed} failure recording(s) and {dropped} duplicate line(s); the "
        f"cassette is now {target}."
    )


@cassette_app.command("export")
def _cassette_export(
    path: Annotated[Path, typer.Argument(help="Cassette directory.")],
    out: Annotated[Path, typer.Option(help="JSON-lines file to write.")] = Path("cassette.jsonl"),
) -> None:
    """Write every recording as sorted JSON lines, for review and diff."""
    count = _open_cassette(path).export(out)
    console.print(f"Wrote {count} recordings to {out}.")
