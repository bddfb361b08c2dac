"""The ``backtest`` command line.

Every user mistake surfaces as a :class:`~backtest.errors.BacktestError`; :func:`main`
prints its message (what, where, the rule and the fix) on stderr and exits with status 1,
without a traceback. Usage errors (unknown option, missing argument) exit with status 2.

The command groups live in their own modules: ``backtest data`` in :mod:`backtest.cli_data`,
``backtest cassette`` in :mod:`backtest.cli_cassette`, ``backtest llm`` in
:mod:`backtest.cli_llm` and ``backtest compare`` in :mod:`backtest.cli_compare`; ``run``,
``sweep`` and ``report`` (and the printing of their results) stay here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from backtest.cli_cassette import cassette_app
from backtest.cli_compare import compare_command
from backtest.cli_data import data_app
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
    # Help texts are plain text: "[grid]" is a TOML table, not rich markup.
    rich_markup_mode=None,
)
app.add_typer(data_app, name="data")
app.add_typer(cassette_app, name="cassette")
app.add_typer(llm_app, name="llm")

console = Console()
err_console = Console(stderr=True)


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
    assert result.run_dir is not None  # the CLI always writes the run directory
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
    from backtest.cli_tables import Column, fitted_table

    show_llm = any(
        stats.get("llm_calls") or stats.get("llm_cost_usd")
        for stats in summary["strategies"].values()
    )
    columns = [
        Column("strategy"),
        Column("return", numeric=True),
        Column("Sharpe", numeric=True),
        Column("max DD", numeric=True),
        Column("trades", numeric=True),
        Column("fees $", numeric=True, optional=True),
    ]
    columns += [Column("LLM $", numeric=True, optional=True)] if show_llm else []
    columns += [Column("equity $", numeric=True, optional=True)]

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:+.1%}"

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = []
    for member, stats in summary["strategies"].items():
        row = [
            escape(f"{member}*" if member == summary["benchmark"] else member),
            pct(stats.get("total_return")),
            num(stats.get("sharpe"), ".2f"),
            pct(stats.get("max_drawdown")),
            num(stats.get("trade_count"), "d"),
            num(stats.get("fees_usd"), ",.0f"),
        ]
        if show_llm:
            row.append(num(stats.get("llm_cost_usd"), ",.2f"))
        row.append(num(stats.get("final_equity_usd"), ",.0f"))
        rows.append(row)
    title = (
        f"{name}: {summary['symbol']} {summary['start'][:10]} to "
        f"{summary['end'][:10]} ({summary['bars']} bars)"
    )
    table, dropped = fitted_table(title, columns, rows, console)
    console.print(table)
    if dropped:
        console.print(f"({', '.join(dropped)} left out to fit the terminal: see summary.json)")
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


app.command("compare")(compare_command)


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
    from backtest.cli_tables import Column, fitted_table

    columns = [
        Column("configuration", numeric=True),
        Column("strategy"),
        Column("params"),
        Column("seeds", numeric=True),
        Column(f"validation {metric}", numeric=True),
        Column("spread (std)", numeric=True, optional=True),
        Column("CI over seeds", numeric=True, optional=True),
        Column(f"test {metric}", numeric=True),
    ]
    rows = []
    for item in selection["selected"]:
        params = ", ".join(f"{k}={v}" for k, v in item["params"].items())
        seeds = item.get("validation_seeds") or {}
        ci = seeds.get("ci")
        nan = f" ({seeds['n_nan_seeds']} NaN)" if seeds.get("n_nan_seeds") else ""
        rows.append(
            [
                str(item.get("configuration", item["point"])),
                escape(item["strategy"]),
                escape(params),
                f"{seeds.get('n_seeds', 1)}{nan}",
                num((item["validation"] or {}).get(metric)),
                num(seeds.get("std")),
                "-" if not ci else escape(f"[{num(ci[0])}, {num(ci[1])}]"),
                num((item["test"] or {}).get(metric)),
            ]
        )
    title = (
        f"Selected by validation {metric} among {selection['n_configs_tried']} "
        f"configuration(s) (top {selection['top_k']})"
    )
    table, dropped = fitted_table(title, columns, rows, console)
    if dropped:
        console.print(f"({', '.join(dropped)} left out to fit the terminal: see selection.json)")
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
    """Run the CLI; a user mistake is one message and exit status 1, Ctrl-C one line and 130."""
    from backtest.cli_signals import Interrupted, install

    warnings, restore = install(lambda line: err_console.print(escape(line), soft_wrap=True))
    status = 0
    try:
        app(args=argv, prog_name="backtest")
    except BacktestError as exc:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", soft_wrap=True)
        status = 1
    except Interrupted:
        err_console.print(
            "interrupted (Ctrl-C): nothing half-written was kept; LLM answers already "
            "recorded and models already trained are kept, so a rerun resumes.",
            soft_wrap=True,
        )
        status = 130
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        restore()
        for line in warnings.summary():
            err_console.print(escape(line), soft_wrap=True)
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    main()
