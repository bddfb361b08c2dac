"""What to run: an experiment file, a config or a dict; bars from a file or a DataFrame.

:func:`backtest.run` accepts the experiment as a :class:`~backtest.config.RunConfig`, a
mapping of the same keys, or the path of an experiment TOML file (read with
:func:`~backtest.config.load_experiment`, ``overrides`` as ``--set``), and ``data`` to
replace the experiment's bars:

- a path (relative to the working directory): a bar Parquet file or dataset directory;
- a pandas DataFrame of OHLCV bars: timestamps as the index or a ``timestamp`` /
  ``date`` column, columns ``open, high, low, close, volume`` (named as
  ``backtest data import`` accepts them). It is validated as an imported file is (a
  broken row is an error naming it) and stored as canonical Parquet under
  ``<output_dir>/.data/<sha256>/`` (a temporary folder when nothing is written), so the
  run id follows its contents like any data file's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from backtest.config import RunConfig, explain_validation_error, load_experiment
from backtest.errors import ConfigError

__all__ = ["Experiment", "resolve_experiment"]

#: What :func:`backtest.run` accepts as the experiment.
Experiment = RunConfig | Mapping[str, Any] | str | os.PathLike[str]
_PLACEHOLDER = "<data given to run()>"


def _config(experiment: Experiment, overrides: Sequence[str], has_data: bool) -> RunConfig:
    if isinstance(experiment, RunConfig):
        if overrides:
            raise ConfigError(
                "run(config, overrides=...): overrides apply to an experiment file or a dict. "
                "Fix: config.model_copy(update=...) or pass the file's path."
            )
        return experiment
    if isinstance(experiment, Mapping):
        raw = dict(experiment)
        if has_data and "data" not in raw:
            raw["data"] = {"path": _PLACEHOLDER}
        if overrides:
            from backtest.config_files import _apply_override, parse_override

            for text in overrides:
                key_path, value = parse_override(text)
                _apply_override(raw, key_path, value, text)
        from pydantic import ValidationError

        try:
            return RunConfig.model_validate(raw)
        except ValidationError as exc:
            raise explain_validation_error(exc, "run(config)") from exc
    if isinstance(experiment, str | os.PathLike):
        extra = [f'data.path="{_PLACEHOLDER}"'] if has_data else []
        return load_experiment(Path(experiment), [*overrides, *extra])
    raise ConfigError(
        f"run(): the experiment is a {type(experiment).__name__}. Fix: pass a RunConfig, a "
        "dict of its keys or the path of an experiment .toml file."
    )


def _store_frame(frame: pd.DataFrame, folder: Path, symbol: str) -> Path:
    """Validate ``frame`` as bars and write it as canonical Parquet; return the file."""
    from backtest.data import import_bars

    folder.mkdir(parents=True, exist_ok=True)
    has_time = "timestamp" in frame.columns or "date" in frame.columns
    table = frame if has_time else frame.reset_index(names="timestamp")
    # Scratch files live beside the store and go with it, whatever happens.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".incoming-") as scratch:
        source = Path(scratch) / ".source.parquet"
        table.to_parquet(source, index=False)
        out, _ = import_bars(source, symbol=symbol, dest=scratch, source="DataFrame")
        final = folder / hashlib.sha256(out.read_bytes()).hexdigest()[:16] / out.name
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            out.replace(final)
    return final


@contextlib.contextmanager
def resolve_experiment(
    experiment: Experiment,
    *,
    data: pd.DataFrame | str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    write: bool = True,
) -> Iterator[RunConfig]:
    """The run's config, with ``data`` in place of the experiment's bars when given.

    A context manager: a DataFrame given with ``write=False`` lives in a temporary folder
    for the length of the run.

    Raises:
        ConfigError: The experiment or the overrides are invalid, or ``data`` is neither a
            path nor a DataFrame.
        DataValidationError: The DataFrame's bars break the schema (the row is named).
    """
    config = _config(experiment, overrides, data is not None)
    if data is None:
        yield config
        return
    if isinstance(data, str | os.PathLike):
        path = str(Path(data).expanduser().resolve())
        yield config.model_copy(update={"data": config.data.model_copy(update={"path": path})})
        return
    if not isinstance(data, pd.DataFrame):
        raise ConfigError(
            f"run(data=...): a {type(data).__name__} is not bars. Fix: pass a pandas "
            "DataFrame of OHLCV bars or the path of a bar file."
        )
    symbol = config.data.symbol or "DATA"
    with contextlib.ExitStack() as stack:
        if write:
            folder = Path(config.output_dir) / ".data"
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bt-data-")))
        file = _store_frame(data, folder, symbol)
        update = {"path": str(file), "symbol": None}
        yield config.model_copy(update={"data": config.data.model_copy(update=update)})
