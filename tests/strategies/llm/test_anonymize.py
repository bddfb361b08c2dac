"""Anonymised prompts and charts: no real date, symbol or price level; decisions unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import strategies.llm.charts as charts
from backtest import RunConfig, run
from backtest.data import import_text, load_bars
from backtest.llm.testing import LLMTestServer
from strategies.llm.anonymize import DEFAULT_SHIFT_DAYS, Anonymizer
from tests.strategies.test_llm import answer

REPO = Path(__file__).resolve().parents[3]
ROUTING = REPO / "experiments" / "routing" / "seed_stack.toml"
END = "2016-02-29"
_DATE = re.compile(r"(\d{4})-\d{2}-\d{2}")
_PNG = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[+-]\d+)?")


@pytest.fixture(autouse=True)
def _local_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    import strategies.llm.graph as graph

    original = graph.load_routing
    monkeypatch.setattr(
        graph,
        "load_routing",
        lambda path: original(path).model_copy(update={"profile": "openai_compatible"}),
    )


def _config(data: Path, tmp: Path, **params: Any) -> RunConfig:
    llm = {"routing": str(ROUTING), "cassette": str(tmp / "cassette"), **params}
    return RunConfig.model_validate(
        {
            "data": {"path": str(data), "end": END},
            "splits": {"train_end": "2015-06-01", "validation_end": "2016-01-01"},
            "strategies": [{"name": "llm", "kind": "llm", "params": llm}],
            "benchmark": None,
            "output_dir": str(tmp / "runs"),
            "seed": 1,
        }
    )


def test_the_anonymizer_keeps_weekdays_and_fixes_its_factors_once() -> None:
    assert DEFAULT_SHIFT_DAYS % 7 == 0 and DEFAULT_SHIFT_DAYS > 365 * 50
    fitted = Anonymizer().fitted(np.array([50.0, 1250.0]), np.array([2e9, 4e9]))
    assert fitted.price_scale == pytest.approx(100 / 1250) and fitted.volume_scale == 1e6 / 3e9
    again = fitted.fitted(np.array([7.0]), np.array([1.0]))
    assert again == fitted  # fixed for the run
    assert fitted.restore_price(100.0) == pytest.approx(1250.0)
    text = "SP500 fell; sp500's low. XSP500 and SP5000 are other names."
    assert (
        fitted.rename(text, "SP500")
        == "ASSET fell; ASSET's low. XSP500 and SP5000 are other names."
    )
    with pytest.raises(ValueError, match="symbol"):
        Anonymizer(symbol=" ")


def test_no_real_date_symbol_or_price_reaches_a_prompt_or_chart(
    samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "SP500.parquet").write_bytes((samples_dir / "SP500.parquet").read_bytes())
    news = tmp_path / "news.csv"
    pd.DataFrame(
        {
            "available_at": ["2016-01-05T15:00:00Z"],
            "headline": ["SP500 slides as oil falls"],
            "text": ["Traders sold the sp500 into the close."],
            "source": ["wire"],
        }
    ).to_csv(news, index=False)
    import_text(news, kind="news", dest=data)
    drawn: list[dict[str, Any]] = []
    original = charts.render_candles

    def capture(context: Any, spec: Any = charts.ChartSpec()) -> bytes:
        drawn.append(dict(context))
        return original(context, spec)

    monkeypatch.setattr(charts, "render_candles", capture)
    with LLMTestServer(models={"*": answer}) as server:
        config = _config(
            data / "SP500.parquet",
            tmp_path,
            mode="live",
            base_url=server.base_url,
            anonymize=True,
            anonymize_symbol="ZETA",
        )
        result = run(config, write=False)
        # The chart itself goes out as base64 PNG: what it was drawn from is checked below.
        texts = [
            _PNG.sub("<png>", json.dumps(r.body["messages"])) for r in server.requests if r.body
        ]
    assert drawn and len(texts) == len(result.llm_calls)
    texts += [json.dumps(c) for c in drawn]  # what the charts were drawn from
    bars = load_bars(data / "SP500.parquet", end=END).frame
    real_numbers = {f"{v:.6g}" for v in bars[["open", "high", "low", "close"]].to_numpy().ravel()}
    real_numbers |= {f"{v:.6g}" for v in bars["volume"].to_numpy()}
    real_numbers = {n for n in real_numbers if len(n) >= 4}  # "0" or "1" prove nothing
    for text in texts:
        assert "sp500" not in text.lower()
        years = {int(y) for y in _DATE.findall(text)}
        assert years and min(years) >= 2070, years  # every date shown is shifted
        # "$1,000,903.47" of equity is one number, not the price 903.47.
        numbers = {n.replace(",", "") for n in _NUMBER.findall(text)}
        assert not real_numbers & numbers
    assert any("ZETA slides as oil falls" in t for t in texts)
    assert all("ZETA" in t for t in texts)
    # The first decision's close reads 100 in the prompts.
    first_close = drawn[0]["close"][-1]
    assert first_close == pytest.approx(100.0)
    # Weekdays survive the shift.
    shown = pd.Timestamp(drawn[0]["timestamps"][-1])
    real = result.decisions["timestamp"].iloc[0]
    assert shown.day_of_week == real.day_of_week and shown - real == pd.Timedelta(days=23_191)


def test_decisions_map_back_unchanged(samples_dir: Path, tmp_path: Path) -> None:
    plain = run(_config(samples_dir / "SP500.parquet", tmp_path, mode="offline"), write=False)
    hidden = run(
        _config(samples_dir / "SP500.parquet", tmp_path, mode="offline", anonymize=True),
        write=False,
    )
    a, b = plain.decisions, hidden.decisions
    assert a["action"].tolist() == b["action"].tolist()
    np.testing.assert_allclose(a["target_position"], b["target_position"], rtol=1e-9)
    assert (plain.ledger["equity_usd"] == hidden.ledger["equity_usd"]).all()
    # Support and resistance were read in anonymised units and scaled back.
    for x, y in zip(a["signals"], b["signals"], strict=True):
        chart_a = next(s for s in json.loads(x) if s["agent"] == "chart_analysis")
        chart_b = next(s for s in json.loads(y) if s["agent"] == "chart_analysis")
        for level in ("support", "resistance"):
            assert chart_b["features"][level] == pytest.approx(chart_a["features"][level], rel=1e-8)
