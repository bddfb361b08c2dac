"""Fault matrix, item 2: a bad configuration is refused before any work starts.

Every case runs ``backtest run`` in a subprocess on an experiment with a live LLM strategy
pointed at the loopback server (and the provider key set): the CLI exits 1 with one message
that names the key and the fix, prints no traceback, writes no run directory, and not one
request reaches the server. Finer unit cases live in tests/backtest/test_config.py
(override parsing, did-you-mean), tests/backtest/llm/test_budget.py (impossible budgets) and
tests/backtest/llm/test_pricing.py (unknown price tables and models).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import pytest

from backtest.llm.testing import LLMTestServer
from tests.faults.conftest import ROUTING, assert_refused, cli, llm_params, write_experiment


class _Edit(NamedTuple):
    """A copy of the seed routing file with one edit, written when the test runs."""

    old: str
    new: str

    def write(self, folder: Path) -> str:
        text = ROUTING.read_text()
        assert self.old in text
        path = folder / "routing.toml"
        path.write_text(text.replace(self.old, self.new, 1))
        return str(path)


# case -> (params to change, --set overrides, environment changes, what the message names)
def _cases(tmp: Path) -> dict[str, tuple[dict[str, Any], list[str], dict[str, str], list[str]]]:
    return {
        "unknown_key": ({}, ["env.fee_bsp=2"], {}, ["env.fee_bsp", "Did you mean 'fee_bps'"]),
        "wrong_type": ({}, ["seed=abc"], {}, ["seed: Input should be a valid integer", "'abc'"]),
        "wrong_param_type": ({"max_retries": "3"}, [], {}, ["strategies[0].params", "max_retries"]),
        "unknown_strategy": ({}, ["strategies[0].kind=lllm"], {}, ["strategies[0].kind", "'llm'"]),
        "missing_routing_file": (
            {"routing": str(tmp / "nope.toml")},
            [],
            {},
            ["strategies[0].params", "nope.toml", "no such routing file"],
        ),
        "unknown_routing_key": (
            {"routing": _Edit("temperature = 0.3", "temprature = 0.3")},
            [],
            {},
            ["roles.narrative.temprature", "unknown key"],
        ),
        "model_without_price": (
            {
                "routing": _Edit(
                    'fallbacks = ["qwen/qwen-2.5-72b-instruct"]',
                    'fallbacks = ["acme/unpriced-model"]',
                )
            },
            [],
            {},
            ["strategies[0].params", "acme/unpriced-model", "prices.toml"],
        ),
        "budget_zero": (
            {"routing": _Edit("daily_usd = 10.0", "daily_usd = 0")},
            [],
            {},
            ["budget.daily_usd", "greater than 0"],
        ),
        "budget_negative": (
            {"routing": _Edit("daily_usd = 10.0", "daily_usd = -5.0")},
            [],
            {},
            ["budget.daily_usd", "greater than 0"],
        ),
        "run_cap_zero": ({"max_run_usd": 0}, [], {}, ["strategies[0].params", "max_run_usd"]),
        "run_cap_negative": ({"max_run_usd": -1.5}, [], {}, ["max_run_usd", "-1.5"]),
        "unknown_record_mode": ({"record_mode": "sometimes"}, [], {}, ["record_mode"]),
        "record_none_empty_cassette": (
            {"record_mode": "none"},
            [],
            {},
            ["strategies[0].params", "holds no recordings", "record_mode 'none'"],
        ),
        "replay_empty_cassette": ({"mode": "replay"}, [], {}, ["holds no recordings"]),
        "unknown_profile": (
            {"routing": _Edit('profile = "openrouter"', 'profile = "openroutr"')},
            [],
            {},
            ["unknown provider profile 'openroutr'"],
        ),
        "missing_api_key": ({}, [], {"OPENROUTER_API_KEY": ""}, ["OPENROUTER_API_KEY"]),
    }


CASE_NAMES = sorted(_cases(Path("/nonexistent")))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_config_is_refused_before_any_work(
    case: str, sp500: Path, tmp_path: Path, server: LLMTestServer, key_env: dict[str, str]
) -> None:
    params, overrides, env, needles = _cases(tmp_path)[case]
    params = {k: v.write(tmp_path) if isinstance(v, _Edit) else v for k, v in params.items()}
    cassette = tmp_path / "cassette"
    experiment = write_experiment(
        tmp_path / "exp.toml",
        sp500,
        strategies=[
            {"name": "llm", "kind": "llm", "params": llm_params(server, cassette, **params)},
            {"name": "sma", "kind": "sma"},
        ],
    )
    out = tmp_path / "runs"
    args = ["run", str(experiment), "--out", str(out), "--no-progress"]
    for text in overrides:
        args += ["--set", text]
    result = cli(*args, cwd=tmp_path, env={**key_env, **env})
    assert_refused(result, out, *needles)
    assert server.requests == []  # no request reached the provider
    assert not cassette.exists() or not any(cassette.iterdir())


def test_the_unchanged_config_runs(
    sp500: Path, tmp_path: Path, server: LLMTestServer, key_env: dict[str, str]
) -> None:
    """The control: the same experiment, unchanged, records and completes."""
    experiment = write_experiment(
        tmp_path / "exp.toml",
        sp500,
        strategies=[
            {"name": "llm", "kind": "llm", "params": llm_params(server, tmp_path / "cassette")},
            {"name": "sma", "kind": "sma"},
        ],
        end="2015-10-30",
    )
    out = tmp_path / "runs"
    result = cli(
        "run", str(experiment), "--out", str(out), "--no-progress", cwd=tmp_path, env=key_env
    )
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("*/summary.json"))) == 1 and server.requests
