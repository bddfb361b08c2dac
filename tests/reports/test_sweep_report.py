"""The sweep report: table, cost/return Pareto front, selection statistics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backtest.errors import BacktestError
from reports import write_report
from reports.figures import pareto_front


def test_sweep_report_lists_every_run(sweep_dir: Path) -> None:
    path = write_report(sweep_dir)
    assert path == sweep_dir / "sweep_report.html"
    html = path.read_text("utf-8")
    table = pd.read_parquet(sweep_dir / "sweep_runs.parquet")
    # 3 points on validation and the selected one on test, x (sma, buy_and_hold).
    assert len(table) == 8 and (table["split"] == "test").sum() == 2
    for run_id in table["run_id"]:
        assert run_id in html
    for value in table["total_return"]:
        assert f'data-v="{value}"' in html
    assert "Configurations tried</b> 3" in html
    selection = json.loads((sweep_dir / "selection.json").read_text())
    assert f'data-v="{selection["deflated_sharpe"]["dsr"]}"' in html
    assert selection["selected"][0]["test_run_id"] in html
    # Its validation and test rows in the table of runs, its row in the seed spread.
    assert html.count('<tr class="selected">') == 5
    configurations = pd.read_parquet(sweep_dir / "sweep_summary.parquet")
    assert len(configurations) == 3 and 'id="seeds"' in html
    for value in configurations["validation_mean"].dropna():
        assert f'data-v="{value}"' in html
    # The scatter shows the configurations where they were scored: validation only.
    spec = json.loads(html.split('id="fig-cost-return">')[1].split("</script>")[0])
    assert len(spec["data"][0]["hovertext"]) == 6


def test_a_sweep_without_selection_says_so(sweep_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    shutil.copytree(sweep_dir, folder)
    (folder / "selection.json").unlink()
    html = write_report(folder).read_text("utf-8")
    assert "ran without a selection step" in html


def test_selection_results_are_shown(sweep_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sel"
    shutil.copytree(sweep_dir, folder)
    table = pd.read_parquet(folder / "sweep_runs.parquet")
    best = table.loc[table["sharpe"].idxmax()]
    selection = {
        "metric": "sharpe",
        "selection_split": "validation",
        "test_split": "test",
        "n_configs_tried": 3,
        "top_k": 1,
        "selected": [
            {
                "run_id": best["run_id"],
                "params": {"env.fee_bps": 0.5},
                "strategy": best["strategy"],
                "validation": {"sharpe": 0.91},
                "test": {"sharpe": 0.42, "total_return": 0.12},
            }
        ],
        "deflated_sharpe": {"sharpe": 0.91, "dsr": 0.8731, "n_trials": 3},
        "pbo": {"pbo": 0.3333, "n_splits": 70},
        "spa": {"p_value": 0.0412, "benchmark": "drl_ppo", "reps": 1000},
    }
    (folder / "selection.json").write_text(json.dumps(selection))
    html = write_report(folder).read_text("utf-8")
    assert "ran without a selection step" not in html
    assert 'data-v="0.8731"' in html and 'data-v="0.3333"' in html and 'data-v="0.0412"' in html
    assert "against drl_ppo" in html
    assert '<tr class="selected"><td data-v=' in html


def test_a_damaged_summary_is_a_clear_error(sweep_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "sweep_runs.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(BacktestError, match=r"sweep_runs\.parquet: cannot read.*Fix"):
        write_report(folder)


def _brute_front(cost: np.ndarray, value: np.ndarray) -> set[int]:
    out = set()
    for i in range(len(cost)):
        if not (np.isfinite(cost[i]) and np.isfinite(value[i])):
            continue
        dominated = any(
            np.isfinite(cost[j])
            and np.isfinite(value[j])
            and cost[j] <= cost[i]
            and value[j] >= value[i]
            and (cost[j] < cost[i] or value[j] > value[i])
            for j in range(len(cost))
        )
        if not dominated:
            out.add(i)
    return out


points = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.1, 0.2, 0.5, float("nan")]),
        st.sampled_from([-0.2, 0.0, 0.1, 0.3, float("nan")]),
    ),
    min_size=1,
    max_size=12,
)


@given(points)
def test_pareto_front_matches_brute_force(pairs: list[tuple[float, float]]) -> None:
    cost = np.array([c for c, _ in pairs])
    value = np.array([v for _, v in pairs])
    front = pareto_front(cost, value)
    # Duplicates of a front point: the front keeps one of them; all others are dominated.
    expected = _brute_front(cost, value)
    got = {(cost[i], value[i]) for i in front}
    assert got == {(cost[i], value[i]) for i in expected}
    assert len(front) == len(got)
