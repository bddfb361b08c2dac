"""Experiment files: TOML read into a :class:`~backtest.config.RunConfig`, ``--set`` overrides,
and validation errors turned into one message that names the file, the dotted key, the rule
and the fix. Paths follow :mod:`backtest.paths`.
"""

from __future__ import annotations

import datetime
import difflib
import re
import tomllib
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from backtest.config_models import RunConfig
from backtest.errors import ConfigError
from backtest.paths import resolve_experiment_paths, resolve_value

__all__ = [
    "explain_validation_error",
    "load_experiment",
    "parse_override",
    "read_toml",
]

_OVERRIDE_PART = re.compile(r"^([A-Za-z_][A-Za-z0-9_\-]*)((?:\[\d+\])*)$")


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """Split ``dotted.key[0].name=value`` into a key path and a TOML-typed value.

    The value is read as a TOML value (``3``, ``0.5``, ``true``, ``"x"``, ``[1, 2]``); text
    that is not valid TOML is taken as a plain string.

    Raises:
        ConfigError: The text has no ``=`` or the key is malformed.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"--set {text!r}: expected KEY=VALUE. Fix: e.g. --set env.fee_bps=2 or "
            "--set strategies[0].params.fast=20."
        )
    path: list[str | int] = []
    for part in key.strip().split("."):
        match = _OVERRIDE_PART.match(part)
        if not match:
            raise ConfigError(
                f"--set {text!r}: {part!r} is not a key. Fix: use dotted names, with [i] to "
                "pick an item of a list (strategies[0].name=...)."
            )
        path.append(match.group(1))
        path.extend(int(i) for i in re.findall(r"\[(\d+)\]", match.group(2)))
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    if isinstance(value, datetime.date | datetime.time):
        # ``--set splits.train_end=2010-01-01`` is a TOML date; the config reads dates as text.
        value = value.isoformat()
    return path, value


def _apply_override(raw: dict[str, Any], path: list[str | int], value: Any, text: str) -> None:
    node: Any = raw
    for depth, part in enumerate(path[:-1]):
        nxt = path[depth + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise ConfigError(
                    f"--set {text!r}: there is no item [{part}] at {_dotted(path[:depth])}. "
                    f"Fix: use an index below {size}."
                )
            node = node[part]
            continue
        if part not in node:
            node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"--set {text!r}: there is no item [{last}] to set.")
        node[last] = value
    else:
        if not isinstance(node, dict):
            raise ConfigError(f"--set {text!r}: {_dotted(path[:-1])} is not a table.")
        node[last] = value


def _dotted(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The config model that the key path ``loc`` points into, if any."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _model_in(field.annotation)
    return current


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def explain_validation_error(exc: ValidationError, source: str) -> ConfigError:
    """Turn pydantic's errors into one message: file, dotted key, rule broken and the fix."""
    problems = []
    for error in exc.errors():
        loc = [p for p in error["loc"] if isinstance(p, str | int)]
        key = _dotted(loc)
        kind = error["type"]
        if kind == "extra_forbidden":
            parent = _model_at(RunConfig, loc[:-1])
            known = sorted(parent.model_fields) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            problems.append(f"{key}: unknown key.{hint} Known keys here: {', '.join(known)}.")
        elif kind == "missing":
            problems.append(f"{key}: required, but not set. Fix: add it.")
        else:
            got = error.get("input")
            shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
            problems.append(f"{key}: {error['msg']} (got {shown}).")
    listing = "\n  - ".join(problems)
    return ConfigError(
        f"{source}: {len(problems)} problem(s) in the configuration:\n  - {listing}\n"
        f"Fix: correct the key(s) above in {source} (or in the --set overrides)."
    )


def read_toml(path: Path, kind: str, missing_fix: str) -> dict[str, Any]:
    """Read a TOML file; a missing, unreadable or malformed one is a :class:`ConfigError`.

    Args:
        path: The file.
        kind: What the file is (``experiment``, ``sweep``, ``routing``), for the message.
        missing_fix: What to do when the file does not exist.
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such {kind} file. Fix: {missing_fix}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML ({exc}). Fix: correct the syntax there."
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}).") from exc


def load_experiment(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    output_dir: str | Path | None = None,
    overrides_base: str | Path | None = None,
) -> RunConfig:
    """Read an experiment TOML file into a :class:`RunConfig`.

    Every path written in the file (``data.path``, ``output_dir``, a ``file.py:Class``
    strategy, the built-in strategies' ``routing``, ``cassette``, ``cache_dir``...: see
    :mod:`backtest.paths`) is relative to the file's directory, so an experiment runs the
    same from any working directory; without ``output_dir`` runs go to ``./runs``.

    Args:
        path: The ``.toml`` file.
        overrides: ``dotted.key=value`` strings applied before validation (``--set``).
        output_dir: Replaces ``output_dir`` (``--out``); relative to the working directory.
        overrides_base: What paths in ``overrides`` are relative to: the working directory
            (None) for ``--set``, the sweep file's directory for a sweep's grid.

    Raises:
        ConfigError: The file is missing or not TOML, an override is malformed, or a key is
            unknown, missing or of the wrong type (each named with the fix).
    """
    path = Path(path)
    source = str(path)
    raw = resolve_experiment_paths(
        read_toml(path, "experiment", "check the path"), path.resolve().parent
    )
    here = Path(overrides_base if overrides_base is not None else Path.cwd()).resolve()
    for text in overrides:
        key_path, value = parse_override(text)
        _apply_override(raw, key_path, resolve_value(tuple(key_path), value, here), text)
    if output_dir is not None:
        raw["output_dir"] = str(Path(output_dir).resolve())
    elif "output_dir" not in raw:
        raw["output_dir"] = str(Path("runs").resolve())
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise explain_validation_error(exc, source) from exc
