"""The ``backtest`` command line.

Every user mistake surfaces as a :class:`~backtest.errors.BacktestError`; :func:`main`
prints its message (what, where, the rule and the fix) on stderr and exits with status 1,
without a traceback. Usage errors (unknown option, missing argument) exit with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from backtest.cli_llm import llm_app
from backtest.errors import BacktestError

__all__ = ["REPORT_WRITER", "app", "main"]

app = typer.Typer(
    name="backtest",
    help="Backtest DRL-only, LLM-only and hybrid trading policies on real history, "
    "with LLM dollars counted beside P&L.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(
    help="Bring market history and point-in-time text in as Parquet.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
cassette_app = typer.Typer(help="Inspect and maintain LLM cassettes.", no_args_is_help=True)
app.add_typer(cassette_app, name="cassette")
app.add_typer(llm_app, name="llm")

console = Console()
err_console = Console(stderr=True)


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
    table = Table(
        title=f"{path}: {stats.recordings} recordings in {stats.shards} shard(s), "
        f"{stats.errors} recorded errors"
    )
    table.add_column("model requested", overflow="fold")
    table.add_column("recordings", justify="right")
    table.add_column("served as", overflow="fold")
    for model, count in stats.models_requested.items():
        served = ", ".join(sorted(stats.models_served.get(model, set()))) or "-"
        table.add_row(escape(model), str(count), escape(served))
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


@app.command("run")
def _run(
    experiment: Annotated[Path, typer.Argument(help="Experiment TOML file.")],
    out: Annotated[
        Path | None, typer.Option(help="Directory for run directories (overrides output_dir).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a key: --set env.fee_bps=2 (repeatable)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    report: Annotated[
        bool, typer.Option(help="Write the HTML report into the run directory.")
    ] = True,
    force: Annotated[
        bool,
        typer.Option(
            help="Redo a complete run with the same inputs (a run that reached a live "
            "provider is kept: the redo goes to a new directory)."
        ),
    ] = False,
) -> None:
    """Run every strategy of an experiment over the same bars; write the run directory.

    A complete run with the same inputs (config, data, files read, LLM source and
    cassette, code) is reused, not redone, unless --force.
    """
    from backtest.config import load_experiment
    from backtest.engine import run as run_experiment

    config = load_experiment(experiment, set_ or (), output_dir=out)

    def announce(estimate: dict[str, Any]) -> None:
        # Before the first LLM call: what the run's calls will cost at the price table.
        from backtest.llm.budget import format_usd

        parts = ", ".join(
            f"{escape(name)} {e['calls']:,} calls ~{format_usd(e['usd'])}"
            for name, e in estimate["per_strategy"].items()
        )
        console.print(
            f"[bold]LLM cost estimate:[/bold] {estimate['calls']:,} calls, at most about "
            f"{format_usd(estimate['usd'])} at the price table ({parts}). Offline and replayed "
            "answers pay nothing; replays still charge the recorded cost against P&L."
        )

    # Bars on a terminal; piped, plain periodic lines on stderr (backtest.progress).
    result = run_experiment(config, progress=progress, on_estimate=announce, force=force)
    if result.reused:
        console.print(
            f"reused run {result.run_id} from {result.run_dir}, --force to redo", soft_wrap=True
        )
    elif result.run_dir.name != result.run_id:
        console.print(
            f"run {result.run_id} in {result.run_dir.with_name(result.run_id)} reached a live "
            f"LLM provider and is kept as it is; this redo is in {result.run_dir}",
            soft_wrap=True,
        )
    summary = result.summary
    _print_verdict(summary.get("verdict") or [])
    if "assets" in summary:
        for symbol, info in summary["assets"].items():
            _print_metrics(
                config.name, {**info, "symbol": symbol, "benchmark": summary["benchmark"]}
            )
            console.print(f"{escape(symbol)}: run {info['run_id']} in {info['run_dir']}")
    else:
        _print_metrics(config.name, summary)
    _print_llm_sources(summary.get("llm_sources") or {})
    from backtest.policy_report import combiner_lines

    for line in combiner_lines(summary):  # does the hybrid combine, or only de-risk?
        console.print(escape(line), soft_wrap=True)
    for warning in result.manifest.get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if not result.reused:
        console.print(f"Run {result.run_id} written to {result.run_dir}")
    if report:
        console.print(f"Report: {_write_report(result.run_dir)}")


def _print_metrics(name: str, summary: dict[str, Any]) -> None:
    """One asset's metrics table, then each seed group's mean Sharpe and spread."""
    table = Table(
        title=f"{name}: {summary['symbol']} {summary['start'][:10]} to "
        f"{summary['end'][:10]} ({summary['bars']} bars)"
    )
    show_llm = any(
        stats.get("llm_calls") or stats.get("llm_cost_usd")
        for stats in summary["strategies"].values()
    )
    columns = ["strategy", "return", "Sharpe", "max DD", "trades", "fees $"]
    columns += ["LLM $"] if show_llm else []
    columns += ["equity $"]
    for column in columns:
        if column == "strategy":
            table.add_column(column, overflow="fold", min_width=12)
        else:
            table.add_column(column, justify="right", no_wrap=True)

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:+.1%}"

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for name, stats in summary["strategies"].items():
        row = [
            escape(f"{name}*" if name == summary["benchmark"] else name),
            pct(stats.get("total_return")),
            num(stats.get("sharpe"), ".2f"),
            pct(stats.get("max_drawdown")),
            num(stats.get("trade_count"), "d"),
            num(stats.get("fees_usd"), ",.0f"),
        ]
        if show_llm:
            row.append(num(stats.get("llm_cost_usd"), ",.2f"))
        row.append(num(stats.get("final_equity_usd"), ",.0f"))
        table.add_row(*row)
    console.print(table)
    if summary["benchmark"]:
        console.print(
            "* benchmark. Every metric (alpha and beta against the benchmark among them) is "
            "in summary.json."
        )
    _print_llm_health(summary)
    for group, info in summary.get("seed_groups", {}).items():
        mean, std = info["mean"].get("sharpe"), info["std"].get("sharpe")
        if mean is not None:
            spread = "" if std is None else f" ± {std:.2f}"
            console.print(
                f"{escape(group)}: Sharpe {mean:.2f}{spread} over {len(info['members'])} seeds"
            )


def _print_llm_sources(sources: dict[str, str]) -> None:
    """Where each LLM strategy's answers came from (strategies that share one, together)."""
    together: dict[str, list[str]] = {}
    for name, text in sources.items():
        together.setdefault(text, []).append(name)
    for text, names in together.items():
        console.print(f"LLM answers of {escape(', '.join(names))}: {escape(text)}", soft_wrap=True)


def _print_llm_health(summary: dict[str, Any]) -> None:
    """Per LLM strategy: calls, failed calls, fallbacks and unusable answers by reason."""
    for name, stats in summary["strategies"].items():
        calls = stats.get("llm_calls") or 0
        if not calls:
            continue
        reasons = stats.get("abstain_reasons") or {}
        detail = ", ".join(f"{k} {v}" for k, v in reasons.items())
        failed = stats.get("llm_failed_calls", 0)
        colour = "yellow" if failed or reasons else "default"
        console.print(
            f"[{colour}]{escape(name)}: {calls:,} LLM call(s), {failed:,} failed, "
            f"{stats.get('llm_fallbacks', 0):,} fallback(s), "
            f"{stats.get('llm_unusable_answers', 0):,} unusable answer(s)"
            f"{f' ({escape(detail)})' if detail else ''}[/{colour}]"
        )


def _print_verdict(entries: list[dict[str, Any]]) -> None:
    """The verdict first, in words: one line per question (pooled, Sharpe)."""
    headline = [e for e in entries if e.get("asset") == "pooled" and e.get("metric") == "sharpe"]
    if not headline:
        return
    console.print("[bold]Verdict[/bold] (seeds are the unit; every metric is in summary.json):")
    for entry in headline:
        colour = {"significant": "green", "underpowered": "yellow"}.get(entry["label"], "default")
        console.print(f"  [{colour}]{escape(entry['sentence'])}[/{colour}]", soft_wrap=True)
    console.print()


@app.command("compare")
def _compare(
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


@app.command("sweep")
def _sweep(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep TOML file (base + [grid]).")],
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes, or the CPUs of a local Ray instance (default: cores)."
        ),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="local (process pool) or ray (Ray tasks; needs the ray extra).")
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(help="Address of an existing Ray cluster (with --backend ray)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on a terminal).")] = True,
    report: Annotated[
        bool, typer.Option(help="Write the HTML report into the sweep's output directory.")
    ] = True,
) -> None:
    """Run every grid point on validation, the best on test; write the summary and selection."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from backtest.sweep import expand_grid, load_sweep, run_sweep, sweep_warnings

    if backend not in ("local", "ray"):
        raise BacktestError(f"--backend {backend!r}: use local or ray.")
    if address is not None and backend != "ray":
        raise BacktestError("--address is for --backend ray. Fix: add --backend ray.")
    spec = load_sweep(sweep_file)
    points = expand_grid(spec)
    total = len(points)
    for warning in sweep_warnings(points):  # before any run starts
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    counts = {"done": 0, "skipped": 0, "failed": 0}
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed"),
        console=console,
        disable=not (progress and console.is_terminal),
    )
    with bar:
        task = bar.add_task("sweep (validation)", total=total, failed=0)
        tests = 0

        def done(point: Any, status: str) -> None:
            nonlocal tests
            counts[status] = counts.get(status, 0) + 1
            if point.split == "test":  # the selection reaches the test split, one run each
                tests += 1
                bar.update(task, description="sweep (test)", total=total + tests)
            bar.update(task, advance=1, failed=counts["failed"])

        table = run_sweep(
            spec,
            workers=workers,
            backend=backend,  # type: ignore[arg-type]
            address=address,
            on_done=done,
        )
    runs = sum(counts.values())
    console.print(
        f"{runs} run(s): {counts['done']} done, {counts['skipped']} already complete, "
        f"{counts['failed']} failed. Per configuration: {spec.output_dir}/sweep_summary.parquet "
        f"(and .csv); per run: {spec.output_dir}/sweep_runs.parquet",
        soft_wrap=True,
    )
    for row in table[table["status"] == "failed"].itertuples():
        console.print(
            f"[red]failed[/red] point {row.point} ({row.split}): {escape(str(row.error))[:300]}"
        )
    _print_selection(spec.output_dir / "selection.json")
    if report:
        console.print(f"Report: {_write_report(spec.output_dir)}", soft_wrap=True)


def _print_selection(path: Path) -> None:
    import json

    selection = json.loads(path.read_text())

    def num(value: float | None, fmt: str = ".3f") -> str:
        return "-" if value is None else format(value, fmt)

    metric = selection["metric"]
    table = Table(
        title=f"Selected by validation {metric} among {selection['n_configs_tried']} "
        f"configuration(s) (top {selection['top_k']})"
    )
    columns = ("configuration", "strategy", "params", "seeds", f"validation {metric}")
    for column in (*columns, "spread (std)", "CI over seeds", f"test {metric}"):
        table.add_column(column, overflow="fold")
    for item in selection["selected"]:
        params = ", ".join(f"{k}={v}" for k, v in item["params"].items())
        seeds = item.get("validation_seeds") or {}
        ci = seeds.get("ci")
        nan = f" ({seeds['n_nan_seeds']} NaN)" if seeds.get("n_nan_seeds") else ""
        table.add_row(
            str(item.get("configuration", item["point"])),
            escape(item["strategy"]),
            escape(params),
            f"{seeds.get('n_seeds', 1)}{nan}",
            num((item["validation"] or {}).get(metric)),
            num(seeds.get("std")),
            "-" if not ci else f"[{num(ci[0])}, {num(ci[1])}]",
            num((item["test"] or {}).get(metric)),
        )
    console.print(table)
    dsr, pbo, spa = selection["deflated_sharpe"], selection["pbo"], selection["spa"]
    if dsr:
        console.print(
            f"Deflated Sharpe ratio of the best: {num(dsr['dsr'])} "
            f"({dsr['n_trials']} distinct trial(s) among "
            f"{dsr.get('n_configurations', dsr['n_trials'])} configuration(s); "
            f"per-bar Sharpe {num(dsr['sharpe'], '.4f')})"
        )
    if pbo:
        console.print(
            f"Probability of backtest overfitting (CSCV, {pbo['n_splits']} blocks): "
            f"{num(pbo['pbo'])}"
        )
    if spa:
        console.print(
            f"SPA p-value against {escape(spa['benchmark'])}: {num(spa['p_value'])} "
            f"({spa['reps']} bootstrap replications)"
        )
    for note in selection.get("notes", []):
        console.print(f"note: {escape(note)}")
    console.print(f"Selection: {path}", soft_wrap=True)


#: The report writer, found by name so that ``backtest`` does not import ``reports``.
REPORT_WRITER = "reports:write_report"


def _write_report(path: Path, out: Path | None = None) -> Path:
    import importlib

    module, _, function = REPORT_WRITER.partition(":")
    writer = getattr(importlib.import_module(module), function)
    return Path(writer(path, out))


@app.command("report")
def _report(
    path: Annotated[Path, typer.Argument(help="A run directory or a sweep's output directory.")],
    out: Annotated[
        Path | None,
        typer.Option(help="HTML file to write (default: report.html / sweep_report.html in it)."),
    ] = None,
) -> None:
    """Write the offline HTML report of a run or a sweep."""
    written = _write_report(path, out)
    console.print(f"Report written to {written} ({written.stat().st_size / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn a user mistake into one message and exit status 1."""
    try:
        app(args=argv, prog_name="backtest")
    except BacktestError as exc:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
