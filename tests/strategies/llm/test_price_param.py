"""``llm.prices``: a price file of the user's own prices a model the shipped table does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from strategies.llm.graph import LLMPolicy

REPO = Path(__file__).resolve().parents[3]
SEED = REPO / "experiments" / "routing" / "seed_stack.toml"
OWN = "acme/unpriced-model"


def _routing(tmp_path: Path) -> Path:
    text = SEED.read_text().replace(
        'profile = "openrouter"',
        'profile = "openai_compatible"\nbase_url = "http://127.0.0.1:9/v1"',
    )
    text = text.replace('fallbacks = ["qwen/qwen-2.5-72b-instruct"]', f'fallbacks = ["{OWN}"]', 1)
    path = tmp_path / "routing.toml"
    path.write_text(text)
    return path


def test_a_price_file_prices_a_model_the_shipped_table_does_not(tmp_path: Path) -> None:
    routing = _routing(tmp_path)
    params = {"routing": str(routing), "mode": "live", "cassette": str(tmp_path / "c")}
    with pytest.raises(ValueError) as refused:
        LLMPolicy("llm", **params)
    assert OWN in str(refused.value) and "prices = 'that.toml'" in str(refused.value)
    own = tmp_path / "ours.toml"
    own.write_text(
        f'version = "1"\n[[tables.openrouter.models."{OWN}"]]\ninput_per_million = 0.1\n'
        'output_per_million = 0.2\nas_of = "2026-12-01"\nsource = "invoice"\nverified = true\n'
    )
    policy = LLMPolicy("llm", prices=str(own), **params)
    assert policy._prices.price(OWN).input_per_million == 0.1
    hashes = LLMPolicy.input_hashes({**params, "prices": str(own)})
    assert hashes["price_file"] != "missing"  # an edit to the file changes the run id
    assert "price_file" not in LLMPolicy.input_hashes(params)
