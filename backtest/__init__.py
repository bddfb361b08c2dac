"""hybrid-backtest: does adding cheap LLMs to a DRL trading agent pay for itself?

The Python API mirrors the CLI::

    from backtest import run
    result = run("experiments/quickstart.toml")        # or a RunConfig, or a dict
    result = run("experiments/custom_strategy.toml", data=my_bars_dataframe)
    result.metrics          # one row per strategy (mean over seeds), a DataFrame
    result.ledger, result.equity, result.summary, result.run_dir

Heavy modules load on first use, so ``import backtest`` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["RunConfig", "RunResult", "run"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from backtest.config import RunConfig
    from backtest.engine import RunResult, run


def __getattr__(name: str) -> Any:
    if name == "RunConfig":
        from backtest.config import RunConfig

        return RunConfig
    if name in ("run", "RunResult"):
        from backtest import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'backtest' has no attribute {name!r}")
