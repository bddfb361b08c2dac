"""The run report: content drawn from the run directory, self-contained, text escaped."""

from __future__ import annotations

import json
import re
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest

from backtest.engine import RunResult
from backtest.errors import BacktestError
from backtest.llm.pricing import PriceTable
from backtest.llm.records import Usage
from reports import write_report
from reports._render import PLOTLY_STYLE_ATTRIBUTES, figure_json, plotly_js
from reports.run import run_report_html
from tests.reports.conftest import HOSTILE


class _Scripts(HTMLParser):
    """Collects every element and the text of every script, as a browser would parse them."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._in: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in, self._text = dict(attrs), []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._in is not None:
            self.scripts.append((self._in, "".join(self._text)))
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self._text.append(data)


@pytest.fixture(scope="module")
def report(hostile_run: RunResult) -> str:
    path = write_report(hostile_run.run_dir)
    assert path == hostile_run.run_dir / "report.html"
    return path.read_text("utf-8")


def test_report_holds_every_section_and_strategy(report: str, hostile_run: RunResult) -> None:
    for section in ("warnings", "metrics", "curves", "trades", "llm-cost", "comparison"):
        assert f'id="{section}"' in report
    for name in hostile_run.summary["strategies"]:
        escaped = name.replace("<", "&lt;").replace(">", "&gt;")
        assert f'<td class="text">{escaped}' in report
    assert hostile_run.run_id in report
    assert hostile_run.manifest["data"]["sha256"] in report
    # The benchmark was added automatically and is labelled.
    assert "buy_and_hold (benchmark)" in report


def test_metrics_are_the_summary_numbers(report: str, hostile_run: RunResult) -> None:
    for name, stats in hostile_run.summary["strategies"].items():
        value = stats["total_return"]
        assert f'data-v="{value}"' in report, name
        assert f"{100 * value:,.2f}%" in report


def test_cost_panel_matches_the_ledger_and_the_western_table(
    report: str, hostile_run: RunResult
) -> None:
    calls = hostile_run.llm_calls
    mine = calls[calls.strategy == "llm<i>"]
    n_decisions = hostile_run.summary["strategies"]["llm<i>"]["decisions"]
    cost = float(mine["cost_usd"].sum())
    assert cost == pytest.approx(0.0006 * n_decisions)
    section = report[report.index('id="cost-totals"') : report.index('id="cost-rows"')]
    assert f'data-v="{cost}"' in section
    assert f'data-v="{cost / n_decisions}"' in section
    assert f'data-v="{len(mine)}"' in section
    # The oracle: price the same tokens at the reference table directly.
    ours, theirs = PriceTable.load(table="openrouter"), PriceTable.load(table="western_reference")
    usages = [
        (
            r.model_served,
            Usage(
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                cached_prompt_tokens=r.cached_prompt_tokens,
            ),
            date(r.timestamp.year, r.timestamp.month, r.timestamp.day),
        )
        for r in mine.itertuples()
    ]
    western = ours.reprice(usages, theirs)
    assert western > 10 * cost  # GPT-4-class prices are far above DeepSeek's
    assert f'data-v="{western}"' in section
    assert f'data-v="{western / cost}"' in section
    # Fallbacks, retries and failures are counted per role and model.
    rows = report[report.index('id="cost-rows"') :]
    narrative = mine[mine.role == "narrative"]
    assert f'data-v="{int((narrative.fallback_from != "").sum())}"' in rows
    assert f'data-v="{int(narrative.retries.sum())}"' in rows


def test_failures_and_abstains_are_warned_about(report: str, hostile_run: RunResult) -> None:
    failed = hostile_run.llm_calls["error"].ne("").sum()
    assert failed > 0
    assert f"had {failed} failed call(s) (RateLimitError" in report


def test_hostile_text_is_escaped_everywhere(report: str) -> None:
    parser = _Scripts()
    parser.feed(report)
    # The only scripts are ours: the error collector, plotly.js, the figure JSON blocks and
    # the drawing script. None has a src; nothing else became a tag.
    kinds = [attrs.get("type") for attrs, _ in parser.scripts]
    n_figures = kinds.count("application/json")
    assert n_figures == 6
    assert len(parser.scripts) == 3 + n_figures
    assert all("src" not in attrs for attrs, _ in parser.scripts)
    assert not [t for t, a in parser.tags if t in ("img", "iframe", "object", "embed", "link")]
    assert not [a for _, a in parser.tags if any(k.startswith("on") for k in a)]
    assert HOSTILE not in report
    for attrs, text in parser.scripts:
        if attrs.get("type") == "application/json":
            spec = json.loads(text)  # valid JSON, and no raw '<' that could end the block
            assert "<" not in text
            assert "data" in spec and "layout" in spec
    # The hostile reasoning reaches the hover labels as escaped text.
    timeline = next(
        json.loads(text) for attrs, text in parser.scripts if attrs.get("id") == "fig-timeline"
    )
    labels = [
        label
        for trace in timeline["data"]
        for row in trace.get("hovertext", [])
        for label in (row if isinstance(row, list) else [row])
    ]
    assert labels and any("&lt;script&gt;window.__pwned" in label for label in labels)
    assert not any("<script" in label or "<img" in label for label in labels)


def test_hostile_text_never_appears_raw_outside_scripts(report: str) -> None:
    body = re.sub(r"<script[^>]*>.*?</script>", "", report, flags=re.S)
    assert "<script" not in body and "onerror=" not in body.replace("onerror=&#34;", "")
    assert "<img" not in body and "<b>prov</b>" not in body
    assert "llm&lt;i&gt;" in body  # the strategy name from the config, escaped


def test_self_contained(report: str) -> None:
    assert report.count(plotly_js()) == 1  # plotly.js embedded exactly once
    outside = report.replace(plotly_js(), "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", outside)
    assert "cdn.plot.ly" not in outside
    assert "default-src 'none'" in report  # a stray request would be blocked and reported
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', report)
    assert policy is not None
    assert "unsafe-inline" not in policy.group(1) and "unsafe-eval" not in policy.group(1)
    # Every script that runs and every style block is allowed by its hash, and only those.
    assert policy.group(1).count("'sha256-") == 3 + 2 + len(PLOTLY_STYLE_ATTRIBUTES)


def test_report_is_deterministic(hostile_run: RunResult, tmp_path: Path) -> None:
    first = run_report_html(hostile_run.run_dir)
    assert first == run_report_html(hostile_run.run_dir)


def test_figure_json_cannot_close_its_script_block() -> None:
    text = figure_json({"data": [{"hovertext": ["</script><script>alert(1)</script> & >"]}]})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text)["data"][0]["hovertext"][0].startswith("</script>")


def test_bad_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BacktestError, match=r"missing manifest\.json.*Fix"):
        write_report(tmp_path)
    with pytest.raises(BacktestError, match="no such directory"):
        write_report(tmp_path / "absent")


def test_walk_forward_folds_are_tabulated(samples_dir: Path, tmp_path: Path) -> None:
    from backtest import RunConfig, run

    result = run(
        RunConfig.model_validate(
            {
                "data": {"path": str(samples_dir / "GOOG.parquet")},
                "splits": {"walk_forward": {"n_folds": 3, "test_size": 120}},
                "strategies": [{"name": "sma", "kind": "sma", "params": {"fast": 5, "slow": 20}}],
                "output_dir": str(tmp_path),
            }
        )
    )
    folds = result.summary["folds"]
    assert len(folds) == 3
    html = run_report_html(result.run_dir)
    table = html[html.index('id="folds"') :]
    for fold in folds:
        for name, metrics in fold["strategies"].items():
            assert f'data-v="{metrics["total_return"]}"' in table, (fold["fold"], name)
        assert fold["test_start"][:10] in table


def test_leakage_estimate_and_cutoff_split_are_shown(
    hostile_run: RunResult, tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(hostile_run.run_dir, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    stats = summary["strategies"]["llm<i>"]
    manifest["warnings"].append("strategy 'llm<i>': the evaluated window starts before a cutoff")
    manifest["leakage"] = [
        {
            "strategy": "llm<i>",
            "model": "deepseek/deepseek-chat",
            "training_cutoff": "2017-06",
            "window_start": summary["start"],
            "window_end": summary["end"],
        }
    ]
    manifest["llm_cost_estimate"] = {
        "calls": 1508,
        "usd": 1.2345,
        "per_strategy": {"llm<i>": {"calls": 1508, "usd": 1.2345}},
    }
    summary["cutoff_split"] = {
        "llm<i>": [
            {
                "model": "deepseek/deepseek-chat",
                "cutoff": "2017-06",
                "before": {**stats, "total_return": 0.1111},
                "after": None,
            }
        ]
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "summary.json").write_text(json.dumps(summary))
    html = run_report_html(folder)
    assert "the evaluated window starts before a cutoff" in html
    assert "Leakage-exposed models</b> deepseek/deepseek-chat" in html
    assert "1,508 calls, up to $1.23" in html
    split = html[html.index("training cutoff</h3>") :]
    assert 'data-v="0.1111"' in split and "2017-06" in split


def test_the_hashes_of_files_read_are_shown(samples_dir: Path, tmp_path: Path) -> None:
    from backtest import RunConfig, run

    routing = Path(__file__).resolve().parents[2] / "experiments" / "routing" / "seed_stack.toml"
    result = run(
        RunConfig.model_validate(
            {
                "data": {"path": str(samples_dir / "SP500.parquet"), "end": "2016-03-31"},
                "splits": {"train_end": "2015-06-01", "validation_end": "2016-01-01"},
                "strategies": [
                    {
                        "name": "llm",
                        "kind": "llm",
                        "params": {"routing": str(routing), "mode": "offline", "every_n_bars": 10},
                    }
                ],
                "output_dir": str(tmp_path),
            }
        )
    )
    inputs = result.manifest["inputs"]
    assert "strategies.llm.routing" in inputs
    html = run_report_html(result.run_dir)
    for key, digest in inputs.items():
        assert key in html and digest in html
