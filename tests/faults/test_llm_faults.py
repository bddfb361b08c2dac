"""Fault matrix, item 3: LLM faults through the real openai SDK and the loopback server.

Each case injects one kind of provider failure into a live, recording run of the LLM
strategy (OpenRouter profile, fake key, base URL on 127.0.0.1), then checks that

- the run completes and writes its run directory;
- the ledger accounts for every request the server saw: each row of ``llm_calls.parquet``
  is one model's attempts at one role, so rows + retries = chat requests received; failed
  rows carry their error, the next model's row names it in ``fallback_from``, and
  ``summary.json`` repeats the totals (``llm_retries``, ``llm_fallbacks``,
  ``llm_failed_calls``, ``abstains``);
- a replay from the cassette (mode ``replay``, no request goes out) writes a byte-identical
  ``ledger.parquet`` and ``decisions.parquet``, and the same ``llm_calls.parquet`` except for
  ``cache`` (``recorded`` -> ``hit``) and ``spend_usd`` (0 on a hit).

Unit-level cases (backoff, Retry-After, a hang timing out, errors replayed) are in
tests/backtest/llm/test_client.py and tests/backtest/llm/test_testing.py.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from backtest import RunConfig, run
from backtest.llm.testing import Fault, LLMTestServer
from tests.faults.conftest import FAKE_KEY, answer, llm_params

DEEPSEEK, QWEN72, QWEN7, QWENVL = (
    "deepseek/deepseek-chat",
    "qwen/qwen-2.5-72b-instruct",
    "qwen/qwen-2.5-7b-instruct",
    "qwen/qwen2.5-vl-72b-instruct",
)

Inject = Callable[[LLMTestServer], None]
# case -> (inject the faults, the error kind the ledger must show)
CASES: dict[str, tuple[Inject, str]] = {
    "rate_limit_storm": (
        lambda s: s.inject("*", Fault.RATE_LIMIT, times=40, retry_after_s=0.01),
        "rate_limit",
    ),
    "server_errors": (
        lambda s: (
            s.inject(DEEPSEEK, Fault.SERVER_ERROR, times=None),
            s.inject(QWEN7, Fault.BAD_GATEWAY, times=5),
        ),
        "server_error",
    ),
    "hangs": (lambda s: s.inject(QWENVL, Fault.HANG, times=3), "timeout"),
    "malformed_json": (lambda s: s.inject(QWEN7, Fault.MALFORMED_JSON, times=None), "malformed"),
    "truncated_body": (lambda s: s.inject(DEEPSEEK, Fault.TRUNCATED_STREAM, times=6), "malformed"),
    "empty_and_refused": (
        lambda s: (
            s.inject(DEEPSEEK, Fault.EMPTY_CONTENT, times=None),
            s.inject(QWENVL, Fault.REFUSAL, times=None),
        ),
        "",
    ),
    "model_disappears": (
        lambda s: s.inject(DEEPSEEK, Fault.NOT_FOUND, times=None, after=8),
        "model_not_found",
    ),
    "everything_fails": (lambda s: s.inject("*", Fault.BAD_GATEWAY, times=None), "server_error"),
}


def _config(sp500: Path, tmp_path: Path, server: LLMTestServer | None, out: str) -> RunConfig:
    return RunConfig.model_validate(
        {
            "data": {"path": str(sp500), "start": "2015-07-01", "end": "2015-10-30"},
            "env": {"window": 5},
            "strategies": [
                {
                    "name": "llm",
                    "kind": "llm",
                    "params": llm_params(server, tmp_path / "cassette", timeout_s=0.5),
                }
            ],
            "output_dir": str(tmp_path / out),
            "seed": 3,
        }
    )


def _check_accounting(calls: pd.DataFrame, summary: dict, requests: int) -> None:
    stats = summary["strategies"]["llm"]
    assert len(calls) + int(calls["retries"].sum()) == requests  # every attempt is a row or a retry
    assert stats["llm_calls"] == len(calls)
    assert stats["llm_retries"] == int(calls["retries"].sum())
    failed = calls["error"].fillna("") != ""
    assert stats["llm_failed_calls"] == int(failed.sum())
    fallbacks = calls["fallback_from"].fillna("") != ""
    assert stats["llm_fallbacks"] == int(fallbacks.sum())
    for _, group in calls.groupby(["timestamp", "role"], sort=False):
        rows = group.to_dict("records")
        # Only the last model of a role may have answered; each one before it failed, and
        # the next one says which model it stood in for.
        assert all(r["error"] for r in rows[:-1])
        for before, after in itertools.pairwise(rows):
            assert after["fallback_from"] == before["model_requested"]
        # The first call stands in for nothing, or for a model the breaker skipped (a
        # skip is a fallback too), never for one called in this group.
        assert rows[0]["fallback_from"] not in {r["model_requested"] for r in rows}
        assert all(r["cost_usd"] == 0 for r in rows if r["error"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_fault_is_survived_counted_and_replayed(
    case: str, sp500: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    inject, kind = CASES[case]
    with LLMTestServer(models={"*": answer}, prices={"*": (0.27, 1.10)}, hang_s=5) as server:
        inject(server)
        recorded = run(_config(sp500, tmp_path, server, "live"))
        received = len(server.requests)  # chat requests and the model list read before them
        requests = sum(1 for r in server.requests if r.path.endswith("/chat/completions"))
        assert server.errors == []  # every failure was an injected one
        monkeypatch.delenv("OPENROUTER_API_KEY")
        replayed = run(_config(sp500, tmp_path, None, "replay"))
        assert len(server.requests) == received  # the replay sent nothing
    calls = recorded.llm_calls
    _check_accounting(calls, recorded.summary, requests)
    decisions = recorded.decisions[recorded.decisions.strategy == "llm"]
    assert recorded.summary["strategies"]["llm"]["abstains"] == int(decisions["abstain"].sum())
    if kind:
        assert calls["error"].fillna("").str.startswith(kind).any(), calls["error"].unique()
    if case == "everything_fails":
        assert decisions["abstain"].all() and decisions["action"].eq("ABSTAIN").all()
    if case == "empty_and_refused":
        signals = [s for text in decisions["signals"] for s in json.loads(text)]
        unusable = [s for s in signals if s["abstain"]]
        assert unusable and all(
            "empty" in s["reasoning"] or "JSON" in s["reasoning"] for s in unusable
        )
        assert decisions["action"].str.endswith("(fallback)").all()
    if case == "model_disappears":
        gone = calls[calls["error"].fillna("").str.startswith("model_not_found")]
        assert len(gone) and (gone["retries"] == 0).all()  # a 404 is not retried
    # The replay reproduces the recorded run exactly.
    for name in ("ledger", "decisions"):
        assert (recorded.run_dir / f"{name}.parquet").read_bytes() == (
            replayed.run_dir / f"{name}.parquet"
        ).read_bytes(), name
    live = pq.read_table(recorded.run_dir / "llm_calls.parquet").to_pandas()
    again = pq.read_table(replayed.run_dir / "llm_calls.parquet").to_pandas()
    assert set(live["cache"]) <= {"recorded"} and set(again["cache"]) <= {"hit"}
    assert (again["spend_usd"] == 0).all()
    same = [c for c in live.columns if c not in ("cache", "spend_usd")]
    pd.testing.assert_frame_equal(live[same], again[same])
    assert recorded.summary["strategies"]["llm"] == replayed.summary["strategies"]["llm"]
