"""The import graph of the project's packages holds the rules of docs/architecture.md.

Every module under ``backtest/``, ``strategies/`` and ``reports/`` is parsed (not imported):
each ``import`` and ``from ... import`` statement counts, at module level or inside a
function, relative ones resolved, ``if TYPE_CHECKING:`` ones included.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("backtest", "strategies", "reports")
#: The most lines one stage module of the engine may have (it was one 1,452-line file).
ENGINE_MODULE_MAX_LINES = 500
#: The most lines any module may have, unless its docstring says why it needs more.
MODULE_MAX_LINES = 500
#: The sentence a longer module's docstring starts its reason with.
LONG_MODULE_REASON = "Why this module is long:"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # ``from . import x`` in a package's __init__ is relative to the package
                # itself; in a plain module, to the package holding it.
                package = name.split(".")
                if not is_package:
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, node.module] if node.module else package)
            else:
                base = node.module or ""
            # ``from pkg import mod`` imports the submodule ``pkg.mod`` when there is one.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            # ``import a.b.c`` of a name that is no module (``from a.b import func``)
            # depends on its nearest enclosing module.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_a_cycle(graph, set(c)) for c in components]


def _a_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One cycle through a strongly connected component: ``[a, b, ..., a]``."""
    start = min(component)
    # Breadth-first from start's successors back to start, inside the component.
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    path = [start]
                    while node != start:
                        path.append(node)
                        node = parents[node]
                    return [start, *reversed(path[1:]), start]
                if nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle in {sorted(component)}")  # pragma: no cover


def test_the_graph_sees_the_engine_stages() -> None:
    # A guard on the parser itself: a graph without these edges would pass vacuously.
    graph = _graph()
    assert "backtest.engine.plan" in graph["backtest.engine"]
    assert "backtest.engine.replay" in graph["backtest.engine.score"]
    assert "backtest.rates" in graph["backtest.compare"]
    # A function-level import (backtest/__init__.py loads the engine on first use).
    assert "backtest.engine" in graph["backtest"]


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    message = "\n".join(" -> ".join(cycle) for cycle in cycles)
    assert not cycles, f"import cycles among the project's modules:\n{message}"


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("forbidden", ["strategies", "reports"])
def test_backtest_never_imports(forbidden: str) -> None:
    # reports -> backtest <- strategies (DESIGN.md): strategies are found through the
    # config's registry entries, by name, never imported by backtest.
    offenders = {
        name: sorted(t for t in targets if t.split(".")[0] == forbidden)
        for name, targets in _graph().items()
        if name.split(".")[0] == "backtest"
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"backtest imports {forbidden}: {offenders}"


def test_engine_stage_modules_stay_small() -> None:
    sizes = {
        path.name: len(path.read_text().splitlines())
        for path in sorted((ROOT / "backtest" / "engine").glob("*.py"))
    }
    assert {"plan.py", "replay.py", "score.py", "write.py"} <= set(sizes)
    too_long = {k: v for k, v in sizes.items() if v > ENGINE_MODULE_MAX_LINES}
    assert not too_long, f"over {ENGINE_MODULE_MAX_LINES} lines: {too_long}"


def _length_problem(source: str) -> str | None:
    """Why ``source`` breaks the size rule, or None: at most :data:`MODULE_MAX_LINES` lines,
    unless the module docstring has a sentence starting :data:`LONG_MODULE_REASON` (with a
    reason after it)."""
    lines = len(source.splitlines())
    if lines <= MODULE_MAX_LINES:
        return None
    docstring = ast.get_docstring(ast.parse(source)) or ""
    # The reason opens a sentence: at the start, after a sentence's end, or a new paragraph.
    pattern = rf"(?:\A|[.!?]\s+|\n\s*\n\s*){re.escape(LONG_MODULE_REASON)}\s*\S"
    if re.search(pattern, docstring):
        return None
    return (
        f"{lines} lines (over {MODULE_MAX_LINES}) and no sentence starting "
        f"{LONG_MODULE_REASON!r} in its docstring"
    )


def _synthetic(lines: int, docstring: str = "A module.") -> str:
    body = [f"x{i} = {i}" for i in range(lines - 1)]
    return "\n".join([f'"""{docstring}"""', *body]) + "\n"


def test_the_size_rule_on_synthetic_modules() -> None:
    # The rule itself, on sources that are never written into the package.
    assert len(_synthetic(501).splitlines()) == 501
    assert _length_problem(_synthetic(500)) is None
    assert "501 lines" in (_length_problem(_synthetic(501)) or "")
    reason = "The graph. Why this module is long: one class holds the loop."
    assert _length_problem(_synthetic(501, reason)) is None
    assert _length_problem(_synthetic(501, "Why this module is long: one loop.")) is None
    paragraph = "The graph.\n\nWhy this module is long: one class holds the loop."
    assert _length_problem(_synthetic(501, paragraph)) is None
    # Mentioning the words is not a reason: the sentence must start with them and say more.
    assert _length_problem(_synthetic(501, "Nobody says 'why this module is long: x'.")) is not None
    assert _length_problem(_synthetic(501, "The graph. Why this module is long:")) is not None
    # A reason in a comment, not the docstring, does not count.
    commented = "# Why this module is long: it is.\n" + _synthetic(501)
    assert _length_problem(commented) is not None


def test_modules_stay_small_or_say_why() -> None:
    modules = _modules()
    assert len(modules) > 50  # the walk found the packages
    problems = {
        name: problem
        for name, path in modules.items()
        if (problem := _length_problem(path.read_text())) is not None
    }
    assert not problems, f"modules over the size rule: {problems}"
