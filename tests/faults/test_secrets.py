"""Fault matrix, item 6: API keys never leave the environment.

With ``OPENROUTER_API_KEY`` set to a recognisable key-shaped value and the strategy's
``api_key_env`` naming a variable that holds a plain (not key-shaped) secret, a live run is
recorded against a server that echoes the presented key in 401 errors and a model that
repeats the keys in its answers; then the run is replayed, the cassette exported and
verified, and a refused run prints its error. Every byte the project wrote under the test's
directory (Parquet files decoded, since their pages are compressed) and everything it
printed is searched for both values: none holds them, and the refusal names the variable.
Unit cases: tests/backtest/llm/test_cassette.py::test_no_secret_is_ever_written and
tests/backtest/llm/test_client.py::test_keys_never_leave_the_environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from backtest.llm.testing import Fault, LLMTestServer
from tests.faults.conftest import FAKE_KEY, answer, cli, llm_params, write_experiment

PLAIN_SECRET = "plain-fault-matrix-secret-4242"
NEEDLES = (FAKE_KEY, PLAIN_SECRET, FAKE_KEY.removeprefix("sk-or-v1-"))


def _leaky(body: dict[str, Any]) -> str:
    # A model that repeats whatever secrets it was ever shown.
    reply = json.loads(answer(body))
    reply["reasoning"] = f"keys: {FAKE_KEY} and {PLAIN_SECRET}; Bearer {PLAIN_SECRET}"
    return json.dumps(reply)


def _written_text(root: Path) -> dict[Path, str]:
    out = {}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            text = json.dumps(table.to_pylist(), default=str)
            text += str(table.schema.metadata)
        else:
            text = path.read_bytes().decode("utf-8", "replace")
        out[path] = text
    return out


def test_no_key_is_written_or_printed(sp500: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {"OPENROUTER_API_KEY": FAKE_KEY, "MY_LLM_KEY": PLAIN_SECRET}
    printed: list[str] = []
    cassette = work / "cassette"
    with LLMTestServer(models={"*": _leaky}, prices={"*": (0.27, 1.1)}) as server:
        server.inject("deepseek/deepseek-chat", Fault.UNAUTHORIZED, times=4)

        def experiment(name: str, **params: Any) -> Path:
            return write_experiment(
                work / f"{name}.toml",
                sp500,
                strategies=[{"name": "llm", "kind": "llm", "params": params}],
                start="2015-08-01",
                end="2015-10-30",
            )

        live = llm_params(server, cassette, api_key_env="MY_LLM_KEY")
        runs = [
            ("run", str(experiment("live", **live)), "--no-progress"),
            ("run", str(experiment("replay", **llm_params(None, cassette))), "--no-progress"),
            ("cassette", "verify", str(cassette)),
            ("cassette", "stats", str(cassette)),
            ("cassette", "export", str(cassette), "--out", str(work / "export.jsonl")),
        ]
        for args in runs:
            result = cli(*args, cwd=work, env=env)
            assert result.returncode == 0, result.stderr
            printed += [result.stdout, result.stderr]
        # Presented keys did reach the server (so there was something to leak)...
        assert any(PLAIN_SECRET in r.headers.get("authorization", "") for r in server.requests)
        # ...and a refused run names the missing variable, never a value.
        missing = cli(
            "run",
            str(experiment("missing", **llm_params(server, cassette, api_key_env="NO_SUCH_KEY"))),
            cwd=work,
            env=env,
        )
        assert missing.returncode == 1 and "NO_SUCH_KEY" in missing.stderr
        printed += [missing.stdout, missing.stderr]
    written = _written_text(work)
    assert any(p.suffix == ".tsv" for p in written) and any(
        p.name == "llm_calls.parquet" for p in written
    )
    calls = "".join(t for p, t in written.items() if p.name == "llm_calls.parquet")
    assert "401" in calls and "[REDACTED]" in calls  # the echoed key was there, scrubbed
    for needle in NEEDLES:
        leaks = [str(p) for p, text in written.items() if needle in text]
        assert not leaks, (needle, leaks)
        assert not [s for s in printed if needle in s], needle
