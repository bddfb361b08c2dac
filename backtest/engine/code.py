"""Stage 1, plan (continued): the code a run's numbers go through, as hashes for its id.

The source of the project is hashed whole, not only the modules a process happens to have
imported (which differ between the CLI, a sweep worker and a test, so the id would too):
every ``*.py`` file of the ``backtest`` and ``strategies`` packages, plus the data files
inside them that a run reads (``*.toml``, ``*.txt``, ``*.j2`` prompt templates and the
like), by relative path, size and bytes. A dirty working tree, an installed copy and a
checkout at another commit are told apart by what their files hold, not by a git revision.
``reports`` is left out: a run directory's tables do not depend on how they are drawn (the
report is redrawn by ``backtest report``).

A strategy given as ``module:Class`` from outside these packages (a user's strategy) is
hashed by its module's source file, ``code.<module>`` in the inputs; one given as
``path/file.py:Class`` by that file, ``code.<file name>``.

Hashes are cached per file by (size, mtime), so a sweep asks for them once per file.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path

from backtest.config import StrategyConfig
from backtest.strategy_loader import is_file_kind, strategy_source_file

__all__ = ["code_hashes"]

#: The packages whose whole source enters every run id (found by name, never imported).
PROJECT_PACKAGES = ("backtest", "strategies")
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = {".pyc", ".pyo", ".so", ".parquet"}
_FILES: dict[Path, tuple[tuple[int, int], str]] = {}


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    stamp = (stat.st_size, stat.st_mtime_ns)
    cached = _FILES.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _FILES[path] = (stamp, digest)
    return digest


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _tree_sha256(root: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix not in _SKIP_SUFFIXES
        and not _SKIP_DIRS.intersection(p.relative_to(root).parts)
    )
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def code_hashes(strategies: Iterable[StrategyConfig]) -> dict[str, str]:
    """``{"code.backtest": sha256, "code.strategies": sha256, "code.<module>": sha256}``."""
    out = {}
    for package in PROJECT_PACKAGES:
        root = _package_dir(package)
        out[f"code.{package}"] = _tree_sha256(root) if root is not None else "missing"
    for spec in strategies:
        source = strategy_source_file(spec.kind)
        if source is None:
            continue
        label = source.name if is_file_kind(spec.kind) else spec.kind.partition(":")[0]
        out[f"code.{label}"] = _file_sha256(source) if source.is_file() else "missing"
    return dict(sorted(out.items()))
