"""Each module's public API is what its ``__all__`` says (as httpx tests its own)."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = [
    "backtest.errors",
    "backtest.calendars",
    "backtest.compare",
    "backtest.data",
    "backtest.data_import",
    "backtest.data_load",
    "backtest.data_schema",
    "backtest.data_splits",
    "backtest.data_text",
    "backtest.data_validate",
    "backtest.samples",
    "backtest.selection",
    "backtest.sweep",
    "backtest.sweep_backends",
    "backtest.sweep_plan",
    "backtest.sweep_scoring",
    "backtest.cli",
    "backtest.cli_cassette",
    "backtest.cli_compare",
    "backtest.cli_data",
    "backtest.cli_llm",
    "backtest.config",
    "backtest.engine",
    "backtest.engine.plan",
    "backtest.engine.provenance",
    "backtest.engine.replay",
    "backtest.engine.score",
    "backtest.engine.write",
    "backtest.engine.assets",
    "backtest.engine.code",
    "backtest.engine.reuse",
    "backtest.seed_scores",
    "backtest.inference",
    "backtest.inference_kernels",
    "backtest.passive",
    "backtest.questions",
    "backtest.verdict",
    "backtest.env",
    "backtest.features",
    "backtest.llm.budget",
    "backtest.llm.cassette",
    "backtest.llm.cassette_keys",
    "backtest.llm.cassette_records",
    "backtest.llm.calls",
    "backtest.llm.client",
    "backtest.llm.fingerprint",
    "backtest.llm.offline",
    "backtest.llm.providers",
    "backtest.llm.records",
    "backtest.llm.pricing",
    "backtest.llm.pricing_entries",
    "backtest.llm.pricing_tokens",
    "backtest.llm.router",
    "backtest.llm.testing",
    "backtest.llm.testing_faults",
    "backtest.llm.testing_http",
    "backtest.llm.testing_scripts",
    "backtest.metrics",
    "backtest.metrics_checks",
    "backtest.metrics_kernels",
    "backtest.metrics_periods",
    "backtest.policy",
    "backtest.rates",
    "backtest.vecenv",
    "strategies.base",
    "strategies.baselines",
    "strategies.controls",
    "strategies.drl",
    "strategies.hybrid",
    "strategies.meta_rl",
    "strategies.llm.anonymize",
    "strategies.llm.charts",
    "strategies.llm.decisions",
    "strategies.llm.graph",
    "strategies.llm.prompts",
    "strategies.llm.schemas",
    "reports",
    "reports.figures",
    "reports.pooled",
    "reports.run",
    "reports.sweep",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_every_public_definition(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert all(hasattr(module, item) for item in exported)
    defined = {
        key
        for key, value in vars(module).items()
        if not key.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == name
    }
    assert defined <= exported, f"public but not in __all__: {sorted(defined - exported)}"
