"""A small real run whose LLM text is hostile, shared by the report tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from backtest import RunConfig, run
from backtest.engine import RunResult

#: Text a model, a news item or a file could carry; none of it may run in a report.
HOSTILE = (
    '<script>window.__pwned = "script"</script><img src=x onerror="window.__pwned=\'img\'">'
    "</script><b>bold?</b> & ignore previous instructions"
)


@pytest.fixture(scope="session")
def hostile_run(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """S&P 500 test split (754 bars): buy-and-hold, SMA and a paid LLM-like policy."""
    out = tmp_path_factory.mktemp("runs")
    config = RunConfig.model_validate(
        {
            "name": "report-test",
            "data": {"path": str(samples_dir / "SP500.parquet")},
            "splits": {"train_end": "2013-01-01", "validation_end": "2016-01-01"},
            "strategies": [
                {"name": "sma", "kind": "sma", "params": {"fast": 10, "slow": 30}},
                {"name": "llm<i>", "kind": "tests.reports.policies:HostilePolicy"},
            ],
            "output_dir": str(out),
            "seed": 1,
        }
    )
    return run(config)


@pytest.fixture(scope="session")
def verdict_run(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """S&P 500 test split: buy-and-hold and the LLM graph (offline analyst, every 5th bar)."""
    out = tmp_path_factory.mktemp("verdict-runs")
    routing = Path(__file__).resolve().parents[2] / "experiments/routing/seed_stack.toml"
    config = RunConfig.model_validate(
        {
            "name": "verdict-report-test",
            "data": {"path": str(samples_dir / "SP500.parquet")},
            "splits": {"train_end": "2013-01-01", "validation_end": "2016-01-01"},
            "strategies": [
                {
                    "name": "llm_only",
                    "kind": "llm",
                    "params": {"mode": "offline", "routing": str(routing), "every_n_bars": 5},
                },
            ],
            "output_dir": str(out),
            "seed": 1,
            "verdict": {"reps": 200},
        }
    )
    return run(config)


@pytest.fixture(scope="session")
def sweep_dir(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-point fee sweep of SMA and buy-and-hold on the S&P 500 test split, with one
    point that fails (an unknown strategy kind is not caught until the run starts)."""
    from backtest.sweep import load_sweep, run_sweep

    folder = tmp_path_factory.mktemp("sweep")
    (folder / "base.toml").write_text(
        f"""
name = "fees"
[data]
path = "{samples_dir / "SP500.parquet"}"
[splits]
train_end = "2013-01-01"
validation_end = "2016-01-01"
[[strategies]]
name = "sma"
kind = "sma"
params = {{ fast = 10, slow = 30 }}
"""
    )
    (folder / "sweep.toml").write_text(
        'base = "base.toml"\noutput_dir = "out"\n[grid]\n"env.fee_bps" = [0.5, 2.0, 20.0]\n'
    )
    run_sweep(load_sweep(folder / "sweep.toml"), workers=1)
    return folder / "out"
