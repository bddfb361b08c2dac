"""Candlestick charts: deterministic PNGs, keyed by their source, rendered only when sent."""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import strategies.llm.charts as charts
from backtest import RunConfig, run
from backtest.llm.testing import LLMTestServer
from strategies.llm.charts import ChartSpec, LazyChart, chart_part, chart_source, render_candles
from tests.strategies.test_llm import QWENVL, answer

REPO = Path(__file__).resolve().parents[3]


def _context(n: int = 80, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    return {
        "symbol": "TEST",
        "frequency": "1d",
        "decision_time": "2020-05-01T20:00:00+00:00",
        "timestamps": [f"2020-01-{1 + i % 28:02d}T00:00+00:00" for i in range(n)],
        "open": open_.tolist(),
        "high": (np.maximum(open_, close) * 1.004).tolist(),
        "low": (np.minimum(open_, close) * 0.996).tolist(),
        "close": close.tolist(),
        "volume": rng.uniform(1e6, 3e6, n).tolist(),
        "news": [],
        "documents": [],
    }


def _chunks(png: bytes) -> list[tuple[str, bytes]]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(png):
        (length,) = struct.unpack(">I", png[i : i + 4])
        out.append((png[i + 4 : i + 8].decode("ascii"), png[i + 8 : i + 8 + length]))
        i += 12 + length
    return out


def test_a_chart_is_a_fixed_size_png_with_no_metadata() -> None:
    from PIL import Image

    spec = ChartSpec(bars=40, width_px=640, height_px=400, dpi=120)
    png = render_candles(_context(), spec)
    chunks = _chunks(png)
    assert [name for name, _ in chunks] == ["IHDR", "PLTE", "pHYs", "IDAT", "IEND"]
    width, height = struct.unpack(">II", chunks[0][1][:8])
    assert (width, height) == (640, 400)
    per_metre, _, unit = struct.unpack(">IIB", chunks[2][1])
    assert unit == 1 and round(per_metre * 0.0254) == 120
    image = Image.open(io.BytesIO(png))
    assert image.mode == "P" and not image.info.keys() - {"dpi"}
    # Candles are drawn in both colours (the sample walks up and down).
    colours = {c for _, c in image.convert("RGB").getcolors(maxcolors=1 << 16)}
    assert (38, 166, 91) in colours and (234, 57, 67) in colours


def test_rendering_is_byte_identical_across_runs_and_processes() -> None:
    context = _context()
    first = render_candles(context)
    assert render_candles(context) == first
    script = (
        "import json, sys; from strategies.llm.charts import render_candles; "
        "sys.stdout.write(render_candles(json.loads(sys.stdin.read())).hex())"
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(context),
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert bytes.fromhex(child.stdout) == first


@settings(max_examples=30, deadline=None)
@given(
    bar=st.integers(0, 79),
    field=st.sampled_from(["open", "high", "low", "close", "volume"]),
    factor=st.floats(1.001, 2.0),
)
def test_the_source_hash_covers_exactly_the_bars_drawn(bar: int, field: str, factor: float) -> None:
    spec = ChartSpec(bars=50)
    context = _context()
    changed = {**context, field: list(context[field])}
    changed[field][bar] *= factor
    drawn = bar >= 80 - spec.bars
    assert (chart_source(changed, spec) != chart_source(context, spec)) == drawn
    # The text around the bars is not drawn either: news never changes the key.
    assert chart_source({**context, "news": [{"headline": "x"}]}, spec) == chart_source(
        context, spec
    )


def test_the_source_hash_covers_the_render_parameters_and_labels() -> None:
    context = _context()
    base = chart_source(context)
    assert chart_source(context, ChartSpec(width_px=800)) != base
    assert chart_source(context, ChartSpec(bars=61)) != base
    assert chart_source({**context, "symbol": "OTHER"}) != base
    later = list(context["timestamps"])
    later[-1] = "2099-01-01T00:00+00:00"
    assert chart_source({**context, "timestamps": later}) != base


def test_a_chart_part_renders_once_and_only_when_called(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = charts.render_candles

    def counting(context: Any, spec: ChartSpec = ChartSpec()) -> bytes:
        calls.append(1)
        return original(context, spec)

    monkeypatch.setattr(charts, "render_candles", counting)
    part = chart_part(_context())
    assert calls == [] and part["x_source"] == chart_source(_context())
    render = part["x_render"]
    assert isinstance(render, LazyChart)
    assert render() == render() == original(_context())
    assert calls == [1] and render.renders == 1


def test_spec_rejects_sizes_the_price_table_does_not_cover() -> None:
    with pytest.raises(ValueError, match="image tokens"):
        ChartSpec(width_px=4000)
    with pytest.raises(ValueError, match="bars"):
        ChartSpec(bars=1)


# ------------------------------------------------------------------- in the graph


def _config(samples: Path, tmp: Path, base_url: str, routing: str, **params: Any) -> RunConfig:
    return RunConfig.model_validate(
        {
            "data": {"path": str(samples / "SP500.parquet"), "end": "2016-02-12"},
            "splits": {"train_end": "2015-06-01", "validation_end": "2016-01-01"},
            "strategies": [
                {
                    "name": "llm",
                    "kind": "llm",
                    "params": {
                        "routing": str(REPO / "experiments" / "routing" / routing),  # or absolute
                        "cassette": str(tmp / "cassette"),
                        "mode": "live",
                        "base_url": base_url,
                        **params,
                    },
                }
            ],
            "output_dir": str(tmp / "runs"),
            "seed": 1,
        }
    )


@pytest.fixture(autouse=True)
def _local_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    import strategies.llm.graph as graph

    original = graph.load_routing
    monkeypatch.setattr(
        graph,
        "load_routing",
        lambda path: original(path).model_copy(update={"profile": "openai_compatible"}),
    )


def _count_renders(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    rendered: list[bytes] = []
    original = charts.render_candles

    def counting(context: Any, spec: ChartSpec = ChartSpec()) -> bytes:
        png = original(context, spec)
        rendered.append(png)
        return png

    monkeypatch.setattr(charts, "render_candles", counting)
    return rendered


def test_the_vision_model_sees_the_chart_and_a_replay_renders_none(
    samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = _count_renders(monkeypatch)
    with LLMTestServer(models={"*": answer}) as server:
        recorded = run(_config(samples_dir, tmp_path, server.base_url, "seed_stack.toml"))
        chart_requests = [
            r.body for r in server.requests if r.body and "technical analyst" in json.dumps(r.body)
        ]
        decisions = len(recorded.decisions[recorded.decisions.strategy == "llm"])
        assert len(rendered) == decisions == len(chart_requests)
        for body, png in zip(chart_requests, rendered, strict=True):
            assert body["model"] == QWENVL  # the decision tree's visual-input branch
            image = body["messages"][1]["content"][1]
            assert set(image) == {"type", "image_url"}  # x_source / x_render stay home
            assert base64.b64decode(image["image_url"]["url"].split(",", 1)[1]) == png
        served = len(server.requests)
        rendered.clear()
        replayed = run(
            _config(samples_dir, tmp_path, server.base_url, "seed_stack.toml", mode="replay")
        )
        assert rendered == [] and len(server.requests) == served
    assert (recorded.run_dir / "ledger.parquet").read_bytes() == (
        replayed.run_dir / "ledger.parquet"
    ).read_bytes()
    assert (recorded.run_dir / "decisions.parquet").read_bytes() == (
        replayed.run_dir / "decisions.parquet"
    ).read_bytes()
    calls = recorded.llm_calls
    assert set(calls[calls.role == "chart_analysis"]["prompt_version"]) == {"chart-image-v1"}


@pytest.mark.parametrize("deepseek_sees", [False, True])
def test_a_failed_vision_call_falls_back_with_one_render(
    samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deepseek_sees: bool
) -> None:
    from backtest.llm.testing import Fault

    routing = (REPO / "experiments" / "routing" / "seed_stack.toml").read_text()
    if deepseek_sees:  # declare the text fallback able to read images
        routing = routing.replace("[tree]", '[tree]\nvision_models = ["deepseek/deepseek-chat"]', 1)
    (tmp_path / "routing.toml").write_text(routing)
    rendered = _count_renders(monkeypatch)
    with LLMTestServer(models={"*": answer}) as server:
        server.inject(QWENVL, Fault.SERVER_ERROR, times=2)
        config = _config(
            samples_dir, tmp_path, server.base_url, str(tmp_path / "routing.toml"), max_retries=1
        )
        result = run(config, write=False)
        first_bar = [
            r.body for r in server.requests if r.body and "technical analyst" in json.dumps(r.body)
        ][:3]
    # Two attempts at the vision model (one chart, sent twice), then DeepSeek.
    assert [b["model"] for b in first_bar] == [QWENVL, QWENVL, "deepseek/deepseek-chat"]
    urls = {b["messages"][1]["content"][1]["image_url"]["url"] for b in first_bar[:2]}
    assert len(urls) == 1
    fallback = first_bar[2]["messages"][1]["content"]
    if deepseek_sees:
        assert fallback[1]["image_url"]["url"] in urls
    else:
        # A text model would reject the image: it gets the bars as a table.
        assert isinstance(fallback, str) and "time,open,high,low,close,volume" in fallback
    calls = result.llm_calls
    first = calls[calls.timestamp == calls.timestamp.min()]
    chart = first[first.role == "chart_analysis"]
    # One record per model tried (the vision model's with its retry counted).
    assert chart["prompt_version"].tolist() == [
        "chart-image-v1",
        "chart-image-v1" if deepseek_sees else "chart-text-v1",
    ]
    assert chart["retries"].tolist() == [1, 0]
    decisions = len(result.decisions[result.decisions.strategy == "llm"])
    assert len(rendered) == decisions


def test_without_a_vision_model_the_chart_role_reads_a_table(
    samples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = _count_renders(monkeypatch)
    with LLMTestServer(models={"*": answer}) as server:
        result = run(_config(samples_dir, tmp_path, server.base_url, "no_vision.toml"), write=False)
        bodies = [
            r.body for r in server.requests if r.body and "technical analyst" in json.dumps(r.body)
        ]
    assert rendered == []
    assert all(isinstance(b["messages"][1]["content"], str) for b in bodies)
    assert all("time,open,high,low,close,volume" in b["messages"][1]["content"] for b in bodies)
    calls = result.llm_calls
    chart = calls[calls.role == "chart_analysis"]
    assert set(chart["prompt_version"]) == {"chart-text-v1"}
    assert set(chart["model_requested"]) == {"deepseek/deepseek-chat"}
