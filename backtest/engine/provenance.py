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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backtest.config import RunConfig, StrategyConfig, config_hash
from backtest.data import file_sha256
from backtest.engine.code import code_hashes
from backtest.errors import ConfigError
from backtest.paths import PATH_PARAMS, is_file_kind
from backtest.strategy_loader import load_strategy_class

__all__ = ["portable_config", "run_id_for", "run_inputs"]


def _data_hash(path: Path) -> str:
    if path.is_file():
        return file_sha256(path)
    items = [f"{p.relative_to(path)}:{file_sha256(p)}" for p in sorted(path.rglob("*.parquet"))]
    return hashlib.sha256("\n".join(items).encode()).hexdigest()


def _strategy_class(spec: StrategyConfig) -> type | None:
    """The class a strategy entry names, or None when it cannot be imported (the run says why)."""
    try:
        return load_strategy_class(spec.kind)
    except ConfigError:
        return None


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


def _portable_params(value: Any) -> Any:
    """``value`` with every path parameter cut to its file name (its contents are inputs)."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            is_path = key in PATH_PARAMS or (
                key == "prices" and isinstance(item, str) and item.endswith(".toml")
            )
            portable = is_path and isinstance(item, str)
            out[key] = Path(item).name if portable else _portable_params(item)
        return out
    if isinstance(value, list | tuple):
        return [_portable_params(item) for item in value]
    return value


def portable_config(config: RunConfig) -> RunConfig:
    """``config`` without where its files live, for the run id.

    Paths are absolute once an experiment is read (:mod:`backtest.paths`); the run id must
    not change with the checkout's location, so each path parameter counts by its file name
    and a ``file.py:Class`` strategy by ``file.py:Class``, while what the files hold enters
    the id through :func:`run_inputs` (routing and price files, the cassette's fingerprint,
    the strategy file's source). ``data.path`` and ``output_dir`` are left out entirely.
    """
    strategies = tuple(
        spec.model_copy(
            update={
                "kind": (
                    f"{Path(spec.kind.rpartition(':')[0]).name}:{spec.kind.rpartition(':')[2]}"
                    if is_file_kind(spec.kind)
                    else spec.kind
                ),
                "params": _portable_params(spec.params),
            }
        )
        for spec in config.strategies
    )
    rate = config.risk_free_rate
    update: dict[str, Any] = {"strategies": strategies, "llm": _portable_params(config.llm)}
    if isinstance(rate, str):
        update["risk_free_rate"] = Path(rate).name
    return config.model_copy(update=update)


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
    portable = portable_config(config)
    return config_hash(portable, sha, *extra, exclude={"output_dir": True, "data": {"path"}})[:16]


def _identity(config: RunConfig) -> tuple[str, dict[str, str], str]:
    """The data's sha256, :func:`run_inputs` and the run id of ``config``."""
    data_sha = _data_hash(Path(config.data.file))
    inputs = run_inputs(config)
    return data_sha, inputs, run_id_for(config, data_sha, inputs)
