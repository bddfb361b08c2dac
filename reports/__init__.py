"""HTML reports: one offline, self-contained page per run and per sweep.

- :func:`write_report` writes the report of a run directory (``report.html``) or of a sweep
  directory (``sweep_report.html``), whichever ``path`` is.
- :mod:`reports.run` and :mod:`reports.sweep` build each kind; :mod:`reports.figures` holds
  the plot builders; templates are in ``reports/templates``.

``reports`` depends on ``backtest`` (metrics, pricing, errors); ``backtest`` finds this
package only through the ``REPORT_WRITER`` registry entry of its CLI.
"""

from __future__ import annotations

from pathlib import Path

from backtest.errors import BacktestError

__all__ = ["write_report"]


def write_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of a run or sweep directory; return the HTML file's path.

    Args:
        path: A run directory (``runs/<run-id>/``) or a sweep's output directory.
        out: Where to write (default: ``report.html`` or ``sweep_report.html`` inside
            ``path``).

    Raises:
        BacktestError: ``path`` is neither, or its files are unreadable.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise BacktestError(
            f"{folder}: no such directory. Fix: pass a run directory (runs/<run-id>/) or a "
            "sweep's output directory."
        )
    if (folder / "sweep_runs.parquet").is_file() or (folder / "sweep_summary.parquet").is_file():
        from reports.sweep import write_sweep_report

        return write_sweep_report(folder, out)
    from reports.pooled import is_pooled, write_pooled_report

    if is_pooled(folder):
        return write_pooled_report(folder, out)
    from reports.run import write_run_report

    return write_run_report(folder, out)
