"""One rule for paths: a path written in a file is relative to that file.

Every path an experiment file holds is resolved against the file's directory when the file
is read, so an experiment runs the same from any working directory:

- ``data.path`` (one file, a directory, or a list of them), ``output_dir``, a
  ``risk_free_rate`` given as a file;
- a strategy's ``kind`` given as ``path/to/file.py:ClassName``;
- the path parameters of the built-in strategies (:data:`PATH_PARAMS`), wherever they are
  written: a strategy's ``params``, a hybrid's ``params.llm`` / ``params.drl``, the
  experiment's ``[llm]`` table: ``routing``, ``cassette``, ``cache_dir``,
  ``tensorboard_log``, and ``prices`` when it names a ``.toml`` file (else it is the name of
  a shipped price table).

Paths typed on the command line (``--set data.path=...``, ``--out``, the CLI's own
arguments) are relative to the working directory, as a shell user expects; a sweep's
``[grid]`` values are relative to the sweep file. Parameters not written anywhere keep
their defaults, which are relative to the working directory (``cache_dir = "models"``).
A custom strategy's own parameters are passed as written; only the names above are paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["PATH_PARAMS", "is_file_kind", "resolve_experiment_paths", "resolve_value"]

#: Parameter names that hold a path in the built-in strategies (and the ``[llm]`` table).
PATH_PARAMS: frozenset[str] = frozenset({"routing", "cassette", "cache_dir", "tensorboard_log"})


def _absolute(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def is_file_kind(kind: str) -> bool:
    """True when a strategy ``kind`` names a class in a ``.py`` file (``dir/file.py:Class``)."""
    file_part, sep, class_name = kind.rpartition(":")
    return bool(sep) and file_part.endswith(".py") and bool(class_name)


def _leaf(key: tuple[str | int, ...], value: str, base: Path) -> str:
    """``value`` made absolute when ``key`` (the dotted key path) is a path, else unchanged."""
    names = [k for k in key if isinstance(k, str)]
    if not names:
        return value
    last = names[-1]
    if names[:2] == ["data", "path"] and len(names) == 2:
        return _absolute(value, base)
    if names == ["output_dir"] or names == ["risk_free_rate"]:
        return _absolute(value, base)
    if names[0] == "strategies" and names[-1] == "kind" and len(names) == 2:
        if is_file_kind(value):
            file_part, _, class_name = value.rpartition(":")
            return f"{_absolute(file_part, base)}:{class_name}"
        return value
    in_params = names[0] == "llm" or (names[0] == "strategies" and "params" in names)
    if in_params and last in PATH_PARAMS:
        return _absolute(value, base)
    if in_params and last == "prices" and value.endswith(".toml"):
        return _absolute(value, base)
    return value


def resolve_value(key: tuple[str | int, ...], value: Any, base: Path) -> Any:
    """``value`` found at ``key``, with every path inside it made absolute against ``base``.

    Tables and lists are walked, so ``--set llm={routing="x.toml"}`` and a whole
    ``[[strategies]]`` entry resolve as they would in the file. A ``risk_free_rate`` that is
    a number stays a number.
    """
    if isinstance(value, dict):
        return {k: resolve_value((*key, k), v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_value((*key, i), v, base) for i, v in enumerate(value)]
    if isinstance(value, str) and value:
        return _leaf(key, value, base)
    return value


def resolve_experiment_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """The experiment table ``raw`` with every path in it made absolute against ``base``."""
    return resolve_value((), raw, base)
