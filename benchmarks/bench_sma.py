"""A full SMA(10/30) crossover long-only backtest of the S&P 500 sample, cold and warm.

Strategy: at the close of bar *t*, be fully long if SMA10_t > SMA30_t, flat otherwise; the
order fills at bar *t+1*'s open; 100,000 cash; no fees, spread or slippage; whole shares.

Contenders (each factory does the untimed preparation: imports, loading the Parquet file,
building the DataFrame; the timed call runs the whole backtest and returns final equity):

* ``backtesting.py`` 0.6.6: ``Backtest(df, SmaCrossLongOnly, cash=100_000, commission=0,
  exclusive_orders=True, finalize_trades=True).run()``. Market orders placed in ``next()``
  at bar *t* fill at bar *t+1*'s open (its look-ahead-safe default, ``trade_on_close=False``).
  Relative sizes buy ``int(cash * (1 - eps) // open)`` whole shares.
* ``vectorbt``: ``vbt.MA.run`` for the SMAs and ``Portfolio.from_signals(close, entries,
  exits, price=open, size=inf, size_granularity=1)`` with the signals shifted by one bar, so
  a signal at bar *t*'s close fills at *t+1*'s open (whole shares, like backtesting.py).
* ``ours``: ``backtest.run(our_sma_config(path))`` once the lead fills in
  :func:`our_sma_config` (it returns None for now, so the contender is skipped).

Timing modes (see ``_timing``): *cold* = the first call in a fresh process (imports and
preparation excluded, timed inside the child), *warm* = median of interleaved repeats after
one untimed warm-up call.

Accounting cross-check: a plain-Python reference loop replays the same rule under each
engine's conventions, which differ in two places:

1. backtesting.py calls ``next()`` only from bar ``1 + warm-up`` (the first bar where
   every indicator is defined is skipped, "+1 to have at least two entries available"),
   while the vectorbt signals start at that bar;
2. ``finalize_trades=True`` closes a trade still open at the end at the *last bar's open*
   (it re-runs the broker on the last bar), while vectorbt marks it to the last close.

On this sample neither convention bites (no long signal on the first valid bar, flat at the
end), so the two engines agree to ~1e-15; on the NASDAQ and GOOG samples they differ by
-0.7% and +4.5%, and the reference loop reproduces each engine exactly under its own rule.

Run: ``.venv/bin/python benchmarks/bench_sma.py [--repeats 7] [--cold-repeats 3] [--data DIR]
[--skip-empty-cache]``
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

# backtesting.py draws a tqdm progress bar on stderr for every run when tqdm is installed;
# silence it (children inherit this). Set before backtesting is imported.
os.environ.setdefault("TQDM_DISABLE", "1")

from _data import sample_dir  # noqa: E402
from _timing import ColdSpec, markdown_table, time_cold, time_interleaved  # noqa: E402

FAST, SLOW = 10, 30
CASH = 100_000.0

NAME_BT = "backtesting.py"
NAME_VBT = "vectorbt"
NAME_OURS = "ours"
NAME_OURS_MEM = "ours, in memory"
NAME_VBT_NOCACHE = "vectorbt (empty numba cache)"


def load_frame(path: str | Path):
    from backtest.data import load_bars

    return load_bars(path).frame


def _sma(values, n: int) -> np.ndarray:
    """Trailing simple moving average; NaN until ``n`` values are available."""
    x = np.asarray(values, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    c = np.cumsum(np.insert(x, 0, 0.0))
    out[n - 1 :] = (c[n:] - c[:-n]) / n
    return out


# --------------------------------------------------------------------------- backtesting.py


def _strategy_class():
    from backtesting import Strategy

    class SmaCrossLongOnly(Strategy):
        """Long while SMA(fast) > SMA(slow), flat otherwise (state, not crossover events)."""

        fast = FAST
        slow = SLOW

        def init(self):
            self.sma_fast = self.I(_sma, self.data.Close, self.fast)
            self.sma_slow = self.I(_sma, self.data.Close, self.slow)

        def next(self):
            if self.sma_fast[-1] > self.sma_slow[-1]:
                if not self.position:
                    self.buy()
            elif self.position:
                self.position.close()

    return SmaCrossLongOnly


def make_backtesting(path: str, detail: bool = False) -> Callable[[], Any]:
    """Untimed: import backtesting.py, load the bars. The callable runs one backtest."""
    from backtesting import Backtest

    strategy = _strategy_class()
    frame = load_frame(path)
    df = frame[["open", "high", "low", "close", "volume"]].rename(columns=str.capitalize)
    df.index = df.index.tz_convert(None)  # backtesting.py expects naive timestamps

    def run():
        bt = Backtest(
            df,
            strategy,
            cash=CASH,
            commission=0.0,
            exclusive_orders=True,
            finalize_trades=True,
        )
        stats = bt.run()
        equity = float(stats["Equity Final [$]"])
        if detail:
            return {"final_equity": equity, "trades": int(stats["# Trades"])}
        return equity

    return run


# --------------------------------------------------------------------------- vectorbt


def make_vectorbt(path: str, detail: bool = False) -> Callable[[], Any]:
    """Untimed: import vectorbt, load the bars. The callable runs SMAs + portfolio."""
    import pandas as pd
    import vectorbt as vbt

    frame = load_frame(path)
    close = frame["close"]
    open_ = frame["open"]

    def run():
        fast = vbt.MA.run(close, FAST).ma.to_numpy()
        slow = vbt.MA.run(close, SLOW).ma.to_numpy()
        above = fast > slow  # NaN compares False -> flat during the warm-up
        # Decision at t's close, fill at t+1's open: shift the signals by one bar.
        entries = np.zeros_like(above)
        exits = np.zeros_like(above)
        entries[1:] = above[:-1]
        exits[1:] = ~above[:-1]
        pf = vbt.Portfolio.from_signals(
            close,
            pd.Series(entries, index=close.index),
            pd.Series(exits, index=close.index),
            price=open_,
            init_cash=CASH,
            fees=0.0,
            size=np.inf,
            size_granularity=1.0,  # whole shares, as backtesting.py buys
        )
        equity = float(pf.final_value())
        if detail:
            return {"final_equity": equity, "trades": int(pf.trades.count())}
        return equity

    return run


# --------------------------------------------------------------------------- ours


def our_sma_config(path: str) -> Any:
    """The project's run config: SMA(10/30) long/flat on the whole file, no costs.

    Fractional units (the peers buy whole shares), fills at t+1's open, the run directory
    written to a temporary folder (writing the artifacts is part of a run, so it is timed).
    """
    import tempfile

    from backtest import RunConfig

    return RunConfig.model_validate(
        {
            "data": {"path": str(path)},
            "strategies": [{"name": "sma", "kind": "sma", "params": {"fast": FAST, "slow": SLOW}}],
            "benchmark": None,
            "env": {"fee_bps": 0, "spread_bps": 0, "slippage_bps": 0, "rebalance_band": 0},
            "output_dir": tempfile.mkdtemp(prefix="bench-sma-"),
        }
    )


def _our_final_equity(result: Any) -> float:
    """Final equity of the SMA strategy from a :class:`backtest.engine.RunResult`."""
    return float(result.summary["strategies"]["sma"]["final_equity_usd"])


def make_ours_in_memory(path: str, detail: bool = False) -> Callable[[], Any] | None:
    """The project's engine without writing the run directory (``run(write=False)``), the
    closer match to backtesting.py, which keeps its results in memory."""
    return make_ours(path, detail, write=False)


def make_ours(path: str, detail: bool = False, write: bool = True) -> Callable[[], Any] | None:
    """The project's engine on the same backtest, or None (with a note) when unavailable."""
    try:
        from backtest import run as backtest_run
    except ImportError as exc:
        print(f"[bench_sma] skipping '{NAME_OURS}': cannot import backtest.run ({exc})")
        return None
    config = our_sma_config(path)
    if config is None:
        print(f"[bench_sma] skipping '{NAME_OURS}': our_sma_config() is still a TODO")
        return None

    def run():
        # force: the same inputs land in the same run directory, and without it every call
        # after the first would read that complete run back (~6 ms) instead of running.
        result = backtest_run(config, write=write, force=write)
        equity = _our_final_equity(result)
        if not detail:
            return equity
        entries = int((result.ledger["fill_units"] > 0).sum())  # round trips, as the peers count
        return {"final_equity": equity, "trades": entries}

    return run


FACTORIES: dict[str, Callable[..., Callable[[], Any] | None]] = {
    NAME_BT: make_backtesting,
    NAME_VBT: make_vectorbt,
    NAME_OURS: make_ours,
    NAME_OURS_MEM: make_ours_in_memory,
}


# --------------------------------------------------------------------------- cross-check


def reference_equity(
    open_: np.ndarray,
    close: np.ndarray,
    *,
    first_decision: int,
    last_at_open: bool,
    whole_shares: bool = True,
    cash: float = CASH,
) -> tuple[float, int]:
    """Replay the rule in plain Python; return (final equity, round trips incl. open one).

    Args:
        first_decision: First bar whose close may trigger an order.
        last_at_open: Value a position still open at the end at the last bar's open
            (backtesting.py's ``finalize_trades``) instead of its close (vectorbt).
        whole_shares: Buy ``floor(cash / price)`` shares instead of ``cash / price``.
    """
    above = _sma(close, FAST) > _sma(close, SLOW)
    n = len(close)
    shares = 0.0
    trades = 0
    for t in range(first_decision, n - 1):
        price = open_[t + 1]
        if above[t] and shares == 0:
            shares = math.floor(cash / price) if whole_shares else cash / price
            cash -= shares * price
            trades += 1
        elif not above[t] and shares > 0:
            cash += shares * price
            shares = 0.0
    last = open_[-1] if last_at_open else close[-1]
    return cash + shares * last, trades


def crosscheck(path: str | Path, available: list[str]) -> list[dict[str, Any]]:
    """Final equity of each contender and of the reference loop under each convention."""
    frame = load_frame(path)
    open_ = frame["open"].to_numpy(dtype=np.float64)
    close = frame["close"].to_numpy(dtype=np.float64)
    first_valid = int(np.argmax(~np.isnan(_sma(close, SLOW))))  # first bar with SMA30
    refs = {
        "reference, vectorbt conventions": reference_equity(
            open_, close, first_decision=first_valid, last_at_open=False
        ),
        "reference, backtesting.py conventions": reference_equity(
            open_, close, first_decision=first_valid + 1, last_at_open=True
        ),
        "reference, vectorbt conventions, fractional shares": reference_equity(
            open_, close, first_decision=first_valid, last_at_open=False, whole_shares=False
        ),
        # Ours: fractional units, and the first decision once the 30-bar observation window
        # over the 33-bar feature warm-up is full (bar 62), as the engine's manifest warns.
        "reference, our conventions (fractional, first decision at bar 62)": reference_equity(
            open_, close, first_decision=62, last_at_open=False, whole_shares=False
        ),
    }
    rows: list[dict[str, Any]] = []
    for name in available:
        out = FACTORIES[name](str(path), detail=True)()
        rows.append({"name": name, **out})
    for name, (equity, trades) in refs.items():
        rows.append({"name": name, "final_equity": equity, "trades": trades})
    base = next((r["final_equity"] for r in rows if r["name"] == NAME_BT), None)
    for row in rows:
        row["rel_diff_vs_backtesting_py"] = (row["final_equity"] / base - 1) if base else None
    return rows


# --------------------------------------------------------------------------- main


def import_times(repeats: int = 3) -> list[dict[str, Any]]:
    """Seconds to import each contender's package in a fresh process (median of repeats).

    The cold figures above exclude imports; this says what they exclude. Importing
    ``backtest.engine`` loads the env's compiled kernels from numba's on-disk cache.
    """
    import statistics
    import subprocess

    modules = {NAME_BT: "backtesting", NAME_VBT: "vectorbt", NAME_OURS: "backtest.engine"}
    rows = []
    for name, module in modules.items():
        code = (
            "import time; t = time.perf_counter(); import " + module + "; "
            "print(time.perf_counter() - t)"
        )
        samples = []
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            )
            samples.append(float(out.stdout.strip().splitlines()[-1]))
        rows.append({"name": name, "module": module, "median_s": statistics.median(samples)})
    return rows


def available_contenders(path: str | Path) -> dict[str, Callable[[], Any]]:
    out = {}
    for name, factory in FACTORIES.items():
        fn = factory(str(path))
        if fn is not None:
            out[name] = fn
    return out


def bench(
    path: str | Path, *, repeats: int = 7, cold_repeats: int = 3, empty_cache: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    warm_fns = available_contenders(path)
    cold_specs = {
        name: ColdSpec("bench_sma", FACTORIES[name].__name__, [str(path)], [str(_HERE)])
        for name in warm_fns
    }
    # vectorbt's numba kernels are compiled on first use and cached on disk (cache=True,
    # in site-packages' __pycache__), so a fresh process after any earlier vectorbt use
    # only loads machine code. An empty NUMBA_CACHE_DIR per child times a first-ever run.
    if empty_cache and NAME_VBT in cold_specs:
        spec = cold_specs[NAME_VBT]
        cold_specs[NAME_VBT_NOCACHE] = ColdSpec(
            spec.module,
            spec.factory,
            spec.args,
            spec.path_dirs,
            fresh_dir_env=["NUMBA_CACHE_DIR"],
        )
    rows = time_cold(cold_specs, repeats=cold_repeats, reference=NAME_BT)
    rows += time_interleaved(warm_fns, repeats=repeats, reference=NAME_BT)
    equity = crosscheck(path, list(warm_fns))
    return rows, equity


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="warm interleaved repeats")
    parser.add_argument("--cold-repeats", type=int, default=3, help="fresh processes each")
    parser.add_argument("--data", default=None, help="directory holding SP500.parquet")
    parser.add_argument(
        "--skip-empty-cache",
        action="store_true",
        help="skip the cold vectorbt runs with an empty numba cache (~20 s each)",
    )
    args = parser.parse_args(argv)
    with sample_dir(args.data) as data:
        text = run(
            data / "SP500.parquet",
            repeats=args.repeats,
            cold_repeats=args.cold_repeats,
            empty_cache=not args.skip_empty_cache,
        )
    print(text, flush=True)
    return text


def run(
    path: str | Path, *, repeats: int = 7, cold_repeats: int = 3, empty_cache: bool = True
) -> str:
    """Run the SMA bench on ``path``; return the Markdown text."""
    rows, equity = bench(path, repeats=repeats, cold_repeats=cold_repeats, empty_cache=empty_cache)
    parts = [
        "### SMA(10/30) long-only backtest, S&P 500 daily 1999-2018 (5031 bars), "
        "fill at next open, no fees",
        "",
        markdown_table(
            rows,
            {
                "name": "contender",
                "mode": "mode",
                "n": "runs",
                "median_s": "median s",
                "iqr_s": "IQR s",
                "min_s": "min s",
                "ratio": "x backtesting.py",
                "result": "final equity",
                "samples_s": "cold runs (s)",
                "error": "error",
            },
            formats={"result": ",.2f"},
        ),
        "",
        "### Import time (fresh process, median of 3; excluded from the cold figures)",
        "",
        markdown_table(
            import_times(),
            {"name": "contender", "module": "module", "median_s": "import s"},
        ),
        "",
        "### Final equity cross-check",
        "",
        markdown_table(
            equity,
            {
                "name": "source",
                "final_equity": "final equity",
                "trades": "trades",
                "rel_diff_vs_backtesting_py": "rel. diff vs backtesting.py",
            },
            formats={"final_equity": ",.4f", "rel_diff_vs_backtesting_py": ".3g"},
        ),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    main()
