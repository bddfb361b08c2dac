"""Helpers of the fault matrix: the real CLI in a subprocess, an LLM experiment against the
loopback server, and checks that a refused run leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from backtest.llm.testing import LLMTestServer

REPO = Path(__file__).resolve().parents[2]
BACKTEST = str(Path(sys.executable).with_name("backtest"))
from tests.strategies.test_llm import ANSWERS as TEST_ANSWERS  # noqa: E402

ROUTING = REPO / "experiments" / "routing" / "seed_stack.toml"
#: A recognisable fake key: any file or stream that holds it has leaked it.
#: Assembled at run time so that no key-shaped literal sits in the source (secret scanners).
FAKE_KEY = "-".join(("sk", "or", "v1", "FAKEKEY0fault0matrix0" + "9" * 24))

# Each role's scripted answer, the same as the LLM strategy tests' (there fenced in prose;
# here bare JSON).
ANSWERS: dict[str, dict[str, Any]] = TEST_ANSWERS


def answer(body: dict[str, Any]) -> str:
    """The scripted analyst: each role's system prompt picks its JSON answer."""
    system = body["messages"][0]["content"]
    for marker, reply in ANSWERS.items():
        if marker in system:
            return json.dumps(reply)
    return "{}"


def cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``backtest ARGS`` as a user would, capturing both streams."""
    return subprocess.run(
        [BACKTEST, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_refused(result: subprocess.CompletedProcess[str], out: Path, *needles: str) -> None:
    """Exit 1, one message on stderr naming each needle, no traceback, no run directory."""
    assert result.returncode == 1, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    message = " ".join(result.stderr.split())  # rich wraps long lines
    for needle in needles:
        assert needle in message, (needle, message)
    assert "Fix:" in message, message
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


def toml_value(value: Any) -> str:
    """A Python value spelled as TOML (strings, numbers, booleans, flat tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def write_experiment(
    path: Path,
    data: Path,
    *,
    strategies: list[dict[str, Any]],
    start: str = "2015-09-01",
    end: str = "2016-02-12",
    extra: str = "",
) -> Path:
    """An experiment file over ``data`` with the given strategies (params as TOML tables)."""
    lines = [
        'name = "faults"',
        "seed = 1",
        'benchmark = "buy_and_hold"',
        extra,
        "[data]",
        f"path = {json.dumps(str(data))}",
        f'start = "{start}"',
        f'end = "{end}"',
        "[env]",
        "window = 5",
    ]
    for spec in strategies:
        lines += ["[[strategies]]", f'name = "{spec["name"]}"', f'kind = "{spec["kind"]}"']
        if "seeds" in spec:
            lines.append(f"seeds = {int(spec['seeds'])}")
        params = spec.get("params")
        if params:
            lines.append(f"params = {toml_value(params)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def llm_params(server: LLMTestServer | None, cassette: Path, **params: Any) -> dict[str, Any]:
    """Parameters of an LLM strategy recording against ``server`` into ``cassette``."""
    out: dict[str, Any] = {
        "routing": str(ROUTING),
        "cassette": str(cassette),
        "mode": "live" if server is not None else "replay",
        "max_retries": 1,
        "timeout_s": 1.0,
        "backoff_s": 0.01,
    }
    if server is not None:
        out["base_url"] = server.base_url
    out.update(params)
    return out


@pytest.fixture
def sp500(samples_dir: Path) -> Path:
    """The S&P 500 sample's Parquet file."""
    return samples_dir / "SP500.parquet"


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    """The loopback server answering every model with the scripted analyst."""
    with LLMTestServer(models={"*": answer}, prices={"*": (0.27, 1.10)}) as srv:
        yield srv


@pytest.fixture
def key_env() -> dict[str, str]:
    """The environment of a live run: the routing profile's key set to the fake one."""
    return {"OPENROUTER_API_KEY": FAKE_KEY}


def pytest_configure(config: pytest.Config) -> None:
    """Register ``slow`` here rather than in pyproject.toml (which would force a reinstall):
    slow tests still run in ``make test``; ``-m 'not slow'`` skips them while iterating."""
    config.addinivalue_line("markers", "slow: takes several seconds (subprocesses, big inputs)")


_PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
    "sys.stderr.buffer.write(r.stderr)\n"
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def peak_rss_mb(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 600
) -> tuple[int, float, str]:
    """Run a command in a fresh process and return (exit status, its peak RSS in MB, stderr).

    The peak is ``ru_maxrss`` of the children of a small Python process that only starts the
    command, so nothing else the test process holds is counted.
    """
    result = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    status, kilobytes = result.stdout.split()
    return int(status), int(kilobytes) / 1024, result.stderr
