"""The local provider for real: llama.cpp's server with SmolLM2-135M-Instruct.

These tests start the real server (llama-cpp-python, `make local`) on a loopback port and
ask the real model. The end-to-end test records `llm_only` and `hybrid` decisions into a
fresh cassette, then replays them with every socket connection refused, and checks the
ledgers and decisions are byte-identical.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from backtest.config import load_experiment
from backtest.engine import run
from backtest.errors import ConfigError
from backtest.llm.cassette import Cassette
from backtest.llm.client import ChatRequest, LLMClient, response_format_for
from backtest.llm.local import (
    DEFAULT_MODEL_ALIAS,
    LocalServer,
    bundled_model,
    check_installed,
    stop_shared_server,
)
from backtest.llm.pricing import PriceTable

REPO = Path(__file__).resolve().parents[3]

try:
    check_installed()
    bundled_model()
    INSTALLED = True
except ConfigError:
    INSTALLED = False

# `make test` installs the local extra (make local) and runs these with REQUIRE_LOCAL_LLM=1,
# so CI fails rather than skips without them; a bare `pytest` without it says why it skips.
if not INSTALLED and os.environ.get("REQUIRE_LOCAL_LLM"):
    raise RuntimeError("REQUIRE_LOCAL_LLM is set but the local LLM is not installed: make local")
pytestmark = [
    pytest.mark.local,
    pytest.mark.skipif(not INSTALLED, reason="llama-cpp-python not installed: make local"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as started:
        yield started


def test_the_server_lists_the_model_and_answers_in_the_role_schema(
    server: LocalServer, tmp_path: Path
) -> None:
    assert DEFAULT_MODEL_ALIAS in server.models()
    schema = {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": ["BUY", "SELL", "HOLD"]},
            "confidence": {"type": "number"},
        },
        "required": ["action", "confidence"],
        "additionalProperties": False,
    }
    client = LLMClient(
        Cassette(tmp_path / "c", "new_episodes"),
        profile="local",
        base_url=server.base_url,
        prices=PriceTable.load(table="local"),
    )
    result = client.chat(
        ChatRequest(
            model=DEFAULT_MODEL_ALIAS,
            messages=({"role": "user", "content": "The market rose 3 days in a row. Decide."},),
            max_tokens=60,
            temperature=0.0,
            response_format=response_format_for(DEFAULT_MODEL_ALIAS, schema, "action", local=True),
        )
    )
    answer = json.loads(result.content)
    assert answer["action"] in ("BUY", "SELL", "HOLD")
    assert isinstance(answer["confidence"], int | float)
    assert result.call.cost_usd == 0.0 and result.call.completion_tokens > 0


def test_a_missing_model_file_is_named_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        LocalServer(model_path=tmp_path / "nope.gguf", port=1).command()


_EXPERIMENT = """
name = "local_e2e"
seed = 3
output_dir = "{out}"

[data]
path = "{data}"

[splits]
train_end = "2013-01-01"
validation_end = "2016-01-01"
evaluate = "test"
last_bars = 25

[llm]
routing = "{routing}"
cassette = "{cassette}"
every_n_bars = 5
lookback_bars = 10
portfolio_in_prompt = false

[[strategies]]
name = "llm_only"
kind = "llm"

[[strategies]]
name = "hybrid"
kind = "hybrid"
seeds = 1

[strategies.params.drl]
algo = "PPO"
timesteps = 256
eval_every = 128
episode_bars = 64
hyperparameters = {{ n_steps = 64, batch_size = 32 }}
cache_dir = "{models}"
"""


def _experiment(tmp_path: Path, samples_dir: Path, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        _EXPERIMENT.format(
            out=tmp_path / name,
            data=samples_dir / "SP500.parquet",
            routing=REPO / "experiments" / "routing" / "local.toml",
            cassette=tmp_path / "cassette",
            models=tmp_path / "models",
        )
    )
    return path


def test_record_with_the_real_model_then_replay_with_the_network_blocked(
    tmp_path: Path, samples_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Record: no cassette yet, so the run starts the local server at its first miss.
    recorded = run(load_experiment(_experiment(tmp_path, samples_dir, "record")))
    stop_shared_server()
    calls = pd.read_parquet(recorded.run_dir / "llm_calls.parquet")
    decisions = pd.read_parquet(recorded.run_dir / "decisions.parquet")
    for name in ("llm_only", "hybrid"):
        asked = decisions[(decisions["strategy"] == name) & (decisions["llm_calls"] > 0)]
        assert len(asked) >= 5, f"{name}: {len(asked)} decisions asked the model"
    assert set(calls["model_served"]) <= {DEFAULT_MODEL_ALIAS, ""}
    assert (calls["cache"] == "recorded").any() and calls["cost_usd"].sum() == 0.0
    # The hybrid asks what llm_only asked (no portfolio in the prompt): all of it replays.
    hybrid = calls[calls["strategy"] == "hybrid"]
    assert len(hybrid) and set(hybrid["cache"]) == {"hit"}

    # Replay: strict (record_mode none), and no socket may connect anywhere.
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    replayed = run(
        load_experiment(_experiment(tmp_path, samples_dir, "replay"), ['llm.record_mode="none"'])
    )
    assert replayed.run_id != recorded.run_id
    for name in ("ledger.parquet", "decisions.parquet"):
        assert (replayed.run_dir / name).read_bytes() == (recorded.run_dir / name).read_bytes(), (
            name
        )
    again = pd.read_parquet(replayed.run_dir / "llm_calls.parquet")
    assert set(again["cache"]) == {"hit"} and len(again) == len(calls)
