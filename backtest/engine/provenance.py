"""Stage 1, plan (continued): what identifies a run.

The run id is the sha256 of the canonical config (output directory and data path
excluded), the data's sha256 and the hashes of every other input (:func:`run_inputs`): the
files the strategies read, news and documents beside the data, where LLM answers come from
(with the cassette's fingerprint) and the code (:mod:`backtest.engine.code`), so the same
inputs always land in the same directory and different ones never do. ``docs/provenance.md``
lists every part.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backtest.config import STRATEGY_KINDS, RunConfig, StrategyConfig, config_hash
from backtest.data import file_sha256
from backtest.engine.code import code_hashes

__all__ = ["run_id_for", "run_inputs"]


def _data_hash(path: Path) -> str:
    if path.is_file():
        return file_sha256(path)
    items = [f"{p.relative_to(path)}:{file_sha256(p)}" for p in sorted(path.rglob("*.parquet"))]
    return hashlib.sha256("\n".join(items).encode()).hexdigest()


def _strategy_class(spec: StrategyConfig) -> type | None:
    """The class a strategy entry names, or None when it cannot be imported (the run says why)."""
    target = STRATEGY_KINDS.get(spec.kind, spec.kind)
    module_name, sep, class_name = target.partition(":")
    if not sep:
        return None
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return None
    return cls if isinstance(cls, type) else None


def _named_files(value: Any, key: str) -> list[tuple[str, Path]]:
    """Every string inside ``value`` (nested tables and lists too) that names an existing file."""
    if isinstance(value, Mapping):
        return [hit for k, v in value.items() for hit in _named_files(v, f"{key}.{k}")]
    if isinstance(value, list | tuple):
        return [hit for i, v in enumerate(value) for hit in _named_files(v, f"{key}[{i}]")]
    if isinstance(value, str) and value:
        try:
            path = Path(value)
            if path.is_file():
                return [(key, path)]
        except (OSError, ValueError):  # not a path at all (too long, NUL byte)
            return []
    return []


def run_inputs(config: RunConfig) -> dict[str, str]:
    """The hash of every input of a run besides its config and data, by what it is.

    A strategy class may say what it reads with a classmethod
    ``input_hashes(params) -> Mapping[str, str]`` (the LLM policy gives its routing file,
    prompt templates, price table, answer source and cassette fingerprint); for any other
    strategy every parameter that names an existing file (a model, a routing file) is
    hashed. A ``risk_free_rate`` file, ``news.parquet`` and ``documents.parquet`` beside the
    data file, and the code (:func:`backtest.engine.code.code_hashes`) are hashed too. These
    enter the run id, so editing a routing file, a prompt, a strategy's source or the
    cassette, or setting an API key, gives a new run.

    Returns:
        ``{"strategies.<name>.<what>": ..., "risk_free_rate": ..., "news": ...,
        "documents": ..., "code.<package or module>": ...}``, sorted by key.
    """
    inputs: dict[str, str] = {}
    for spec in config.strategies:
        cls = _strategy_class(spec)
        hook = getattr(cls, "input_hashes", None)
        if callable(hook):
            found = dict(hook(spec.params))
        else:
            found = {k: file_sha256(p) for k, p in _named_files(spec.params, "params")}
        inputs.update({f"strategies.{spec.name}.{k}": v for k, v in found.items()})
    rate = config.risk_free_rate
    if isinstance(rate, str) and Path(rate).is_file():
        inputs["risk_free_rate"] = file_sha256(rate)
    data = Path(config.data.file)
    if data.is_file():  # a data directory's news and documents are in the data's hash
        for kind in ("news", "documents"):
            beside = data.parent / f"{kind}.parquet"
            if beside.is_file():
                inputs[kind] = file_sha256(beside)
    inputs.update(code_hashes(config.strategies))
    return dict(sorted(inputs.items()))


def run_id_for(
    config: RunConfig,
    data_sha256: str | None = None,
    inputs: Mapping[str, str] | None = None,
) -> str:
    """The run id: hash of the canonical config, the data's sha256 and the other inputs' hashes.

    The data enters by its hash, so where it lives (and where output goes) does not; the
    routing files, prompt templates and other files the strategies read enter by theirs
    (:func:`run_inputs`), so changing one's contents changes the id.

    Args:
        config: The run's configuration.
        data_sha256: The data's hash (computed when None).
        inputs: :func:`run_inputs` of ``config`` (computed when None).
    """
    sha = data_sha256 if data_sha256 is not None else _data_hash(Path(config.data.file))
    found = run_inputs(config) if inputs is None else inputs
    extra = [f"{k}={v}" for k, v in sorted(found.items())]
    return config_hash(config, sha, *extra, exclude={"output_dir": True, "data": {"path"}})[:16]


def _identity(config: RunConfig) -> tuple[str, dict[str, str], str]:
    """The data's sha256, :func:`run_inputs` and the run id of ``config``."""
    data_sha = _data_hash(Path(config.data.file))
    inputs = run_inputs(config)
    return data_sha, inputs, run_id_for(config, data_sha, inputs)
