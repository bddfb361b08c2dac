"""Find the class a strategy's ``kind`` names, and say where a user's strategy went wrong.

A ``kind`` is one of three things:

- a built-in name (``sma``, ``drl``, ... :data:`backtest.config.STRATEGY_KINDS`);
- ``package.module:ClassName``, imported like any module (installed, or on ``PYTHONPATH``);
- ``path/to/file.py:ClassName``, a strategy in one file. In an experiment file the path is
  relative to that file (:func:`backtest.paths.resolve_experiment_paths` makes it absolute
  when the experiment is read). The file is loaded as a module of its own, once per process,
  under a name derived from its absolute path, so two files called ``strategy.py`` never
  collide, and it needs no ``__init__.py`` and no ``PYTHONPATH``.

Errors in a user's code are reported by file and line: a syntax error, an exception while
the file is imported, or one raised by the class's constructor becomes a
:class:`~backtest.errors.ConfigError` naming the innermost line of the user's file that
ran (:func:`user_code_location`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType, TracebackType

from backtest.config import STRATEGY_KINDS
from backtest.errors import ConfigError
from backtest.paths import is_file_kind

__all__ = [
    "is_file_kind",
    "load_strategy_class",
    "strategy_source_file",
    "user_code_location",
]

#: Prefix of the module names user strategy files are loaded under.
USER_MODULE_PREFIX = "_hybrid_backtest_user"
#: Absolute path of each strategy file loaded in this process -> its module.
_LOADED: dict[Path, ModuleType] = {}


def _module_name(path: Path) -> str:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"{USER_MODULE_PREFIX}.{stem}_{digest}"


def user_code_location(tb: TracebackType | None, *, files: tuple[str, ...]) -> str | None:
    """``file:line in function`` of the innermost frame of ``tb`` in one of ``files``."""
    found = None
    for frame in traceback.extract_tb(tb):
        if frame.filename in files:
            found = f"{frame.filename}:{frame.lineno} in {frame.name}"
    return found


def _load_file(path: Path, key: str) -> ModuleType:
    if path in _LOADED:
        return _LOADED[path]
    if not path.is_file():
        raise ConfigError(
            f"{key}.kind: {path}: no such strategy file. Fix: check the path; in an "
            "experiment file it is relative to that file (e.g. kind = "
            '"strategies/momentum.py:Momentum" beside the experiment).'
        )
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py path always has one
        raise ConfigError(f"{key}.kind: {path} cannot be loaded as a Python module.")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it, as import does: dataclasses and pickling look it up.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise ConfigError(
            f"{key}.kind: {exc.filename}:{exc.lineno}: syntax error: {exc.msg}. "
            "Fix: correct the code there."
        ) from exc
    except Exception as exc:
        sys.modules.pop(name, None)
        where = user_code_location(exc.__traceback__, files=(str(path),)) or str(path)
        raise ConfigError(
            f"{key}.kind: importing {path.name} failed at {where}: "
            f"{type(exc).__name__}: {exc}. Fix: correct the code there."
        ) from exc
    _LOADED[path] = module
    return module


def strategy_source_file(kind: str) -> Path | None:
    """The source file of a user strategy's ``kind`` (None for a built-in or unknown one)."""
    target = STRATEGY_KINDS.get(kind, kind)
    if is_file_kind(target):
        return Path(target.rpartition(":")[0])
    module_name, sep, _ = target.partition(":")
    if not sep or module_name.partition(".")[0] in ("backtest", "strategies"):
        return None
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not Path(spec.origin).is_file():
        return None
    return Path(spec.origin)


def load_strategy_class(kind: str, key: str = "strategy") -> type:
    """The class ``kind`` names (a built-in, ``module:Class`` or ``file.py:Class``).

    Args:
        kind: The strategy entry's ``kind``.
        key: The config key for messages (``strategies[2]``).

    Raises:
        ConfigError: Unknown kind (with the closest built-in), a missing file, module or
            class, or an error while importing the user's file (named by file and line).
    """
    import difflib

    target = STRATEGY_KINDS.get(kind, kind)
    if ":" not in target:
        close = difflib.get_close_matches(kind, STRATEGY_KINDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{key}.kind: unknown strategy kind {kind!r}.{hint} Fix: use one of "
            f"{', '.join(STRATEGY_KINDS)}, a 'package.module:Class' path or a "
            "'path/to/file.py:Class' file."
        )
    if is_file_kind(target):
        file_part, _, class_name = target.rpartition(":")
        path = Path(file_part).expanduser().resolve()
        module = _load_file(path, key)
        where = str(path)
    else:
        module_name, _, class_name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"{key}.kind: cannot import {target!r} ({exc}). Fix: check the module path "
                "and that the package is installed, or name the file instead "
                "('path/to/file.py:Class', relative to the experiment file)."
            ) from exc
        where = module_name
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        defined = sorted(
            n
            for n, v in vars(module).items()
            if isinstance(v, type) and v.__module__ == module.__name__ and hasattr(v, "act")
        )
        listing = f" Classes with an act method there: {', '.join(defined)}." if defined else ""
        raise ConfigError(
            f"{key}.kind: {where} has no class {class_name!r}.{listing} Fix: name the class "
            "after the colon."
        )
    return cls
