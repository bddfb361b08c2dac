"""Cassette replay against vcrpy, lookups per second, and opening a 100,000-recording cassette.

Both stores record the same 2,000 chat completions, made through the openai SDK against the
project's loopback test server; then each replays them all. vcrpy matches on method, path and
body (without the body, every call to ``/chat/completions`` would match the first recording,
which is wrong for an LLM); ours replays through :class:`backtest.llm.client.LLMClient`.

Usage: ``.venv/bin/python benchmarks/bench_cassette.py [--calls 2000] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent))

from backtest.llm.cassette import Cassette, Recording, _encode_line  # noqa: E402
from backtest.llm.client import CallContext, ChatRequest, LLMClient  # noqa: E402
from backtest.llm.testing import LLMTestServer  # noqa: E402

MODEL = "deepseek/deepseek-chat"
ANSWER = json.dumps(
    {
        "action": "BUY",
        "size": 0.4,
        "confidence": 0.72,
        "risk_level": "medium",
        "reasoning": "Momentum and breadth improved while volatility fell; the narrative agent "
        "sees a bull regime and the data agent a buying imbalance." * 2,
    }
)
KEY_ENV = "BENCH_LLM_KEY"


def _requests(n: int) -> list[ChatRequest]:
    return [
        ChatRequest(
            model=MODEL,
            messages=(
                {"role": "system", "content": "You are a master trading orchestrator."},
                {
                    "role": "user",
                    "content": f"Bar {i}: close {4000 + i * 0.5:.2f}, RSI "
                    f"{30 + i % 40}, agents: narrative bull 0.6...",
                },
            ),
            temperature=0.2,
            max_tokens=400,
        )
        for i in range(n)
    ]


def _sdk(base_url: str):  # type: ignore[no-untyped-def]
    import openai

    return openai.OpenAI(base_url=base_url, api_key="bench-key", max_retries=0, timeout=10)


def _sdk_call(sdk, request: ChatRequest) -> str:  # type: ignore[no-untyped-def]
    response = sdk.chat.completions.create(
        model=request.model,
        messages=[dict(m) for m in request.messages],
        temperature=request.temperature,
        max_tokens=request.max_tokens,
    )
    return response.choices[0].message.content


def record_both(base_url: str, requests: list[ChatRequest], folder: Path) -> tuple[Path, Path]:
    import vcr

    yaml_path = folder / "vcr.yaml"
    sdk = _sdk(base_url)
    recorder = vcr.VCR(record_mode="once", match_on=["method", "path", "body"])
    with recorder.use_cassette(str(yaml_path)):
        for request in requests:
            _sdk_call(sdk, request)
    ours = folder / "ours"
    client = LLMClient(
        Cassette(ours, "new_episodes", fsync=False),
        profile="openai_compatible",
        base_url=base_url,
        api_key_env=KEY_ENV,
    )
    for request in requests:
        client.chat(request, CallContext(role="meta_orchestrator"))
    client.cassette.close()  # type: ignore[union-attr]
    return yaml_path, ours


def replay_vcr(yaml_path: Path, requests: list[ChatRequest]) -> float:
    import vcr

    sdk = _sdk("http://127.0.0.1:9/v1")  # nothing listens there: replay must not need it
    player = vcr.VCR(record_mode="none", match_on=["method", "path", "body"])
    started = time.perf_counter()
    with player.use_cassette(str(yaml_path)):
        for request in requests:
            _sdk_call(sdk, request)
    return time.perf_counter() - started


def replay_ours(path: Path, requests: list[ChatRequest]) -> float:
    started = time.perf_counter()
    client = LLMClient(
        Cassette(path, "none"), profile="openai_compatible", base_url="http://127.0.0.1:9/v1"
    )
    context = CallContext(role="meta_orchestrator")
    for request in requests:
        client.chat(request, context)
    return time.perf_counter() - started


def lookups_per_second(path: Path, repeats: int = 5) -> tuple[float, float]:
    """(cold: fresh cassette, each key parsed on first lookup; warm: parsed already)."""
    cassette = Cassette(path, "none")
    keys = list(cassette.keys())
    cold, warm = [], []
    for _ in range(repeats):
        fresh = Cassette(path, "none")
        started = time.perf_counter()
        for key in keys:
            fresh.get(key)
        cold.append(len(keys) / (time.perf_counter() - started))
        started = time.perf_counter()
        for key in keys:
            fresh.get(key)
        warm.append(len(keys) / (time.perf_counter() - started))
    return statistics.median(cold), statistics.median(warm)


def open_time_100k(folder: Path, repeats: int = 5) -> tuple[float, int]:
    """Median seconds to open a cassette of 100,000 recordings (~1 KB each), in 4 shards."""
    path = folder / "big"
    path.mkdir()
    template = json.loads(ANSWER)
    size = 0
    for shard in range(4):
        with open(path / f"shard-bench-{shard}.tsv", "wb") as fh:
            for i in range(shard * 25_000, (shard + 1) * 25_000):
                request = {"model": MODEL, "messages": [{"role": "user", "content": f"bar {i}"}]}
                body = {
                    "model": MODEL,
                    "choices": [{"message": {"content": json.dumps({**template, "bar": i})}}],
                    "usage": {"prompt_tokens": 900},
                }
                key = f"{i:064x}"
                line = _encode_line(
                    key, Recording(key=key, request=request, outcome="ok", response=body).payload()
                )
                size += len(line)
                fh.write(line)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        cassette = Cassette(path, "none")
        times.append(time.perf_counter() - started)
        assert len(cassette) == 100_000
    return statistics.median(times), size


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ.setdefault(KEY_ENV, "bench-key")
    warnings.simplefilter("ignore")
    requests = _requests(args.calls)
    with tempfile.TemporaryDirectory() as tmp, LLMTestServer(models={MODEL: ANSWER}) as server:
        folder = Path(tmp)
        yaml_path, ours = record_both(server.base_url, requests, folder)
        vcr_times, our_times = [], []
        for _ in range(args.repeats):  # interleaved
            vcr_times.append(replay_vcr(yaml_path, requests))
            our_times.append(replay_ours(ours, requests))
        cold, warm = lookups_per_second(ours)
        open_s, size = open_time_100k(folder)
    vcr_s, our_s = statistics.median(vcr_times), statistics.median(our_times)
    lines = [
        f"### Cassette replay of {args.calls} chat completions (median of {args.repeats} "
        "interleaved repeats)",
        "",
        "| store | replay s | calls/s | x faster than vcrpy |",
        "|---|---|---|---|",
        f"| vcrpy (match on method, path, body) | {vcr_s:.3f} | {args.calls / vcr_s:,.0f} | 1 |",
        f"| ours (LLMClient + Cassette, mode none) | {our_s:.4f} | {args.calls / our_s:,.0f} | "
        f"{vcr_s / our_s:,.0f} |",
        "",
        f"- lookups/s, fresh cassette (each recording parsed and checksummed on first "
        f"lookup): {cold:,.0f}; parsed already: {warm:,.0f}",
        f"- opening a 100,000-recording cassette ({size / 1e6:.0f} MB in 4 shards): "
        f"{open_s:.3f} s (median of 5)",
        f"- raw: vcrpy {[round(t, 3) for t in vcr_times]}, ours {[round(t, 4) for t in our_times]}",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
