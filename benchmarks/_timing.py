"""Timing helpers shared by the benchmarks.

Two modes:

* **warm** (:func:`time_interleaved`): every contender is called once untimed (warm-up),
  then the contenders are run interleaved, ``A, B, C, A, B, C, ...``, ``repeats`` times,
  so that slow drifts of a shared, noisy machine hit every contender alike. Each result
  is the median and inter-quartile range of the per-call wall times
  (:func:`time.perf_counter`).
* **cold** (:func:`time_cold`): each contender's *first* call runs in a fresh Python
  process. The child imports the contender's module and calls its factory (imports and
  preparation excluded), then times one call of the returned callable with
  :func:`time.perf_counter` and prints the result as JSON. Cold runs are interleaved too
  (one fresh process per contender per round).

A contender for the cold mode is a :class:`ColdSpec`: a module (found on ``sys.path`` of the
child, to which ``path_dirs`` are prepended), the name of a *factory* in it and the JSON-able
arguments of the factory. The factory does the untimed preparation (loading data, building a
DataFrame) and returns the zero-argument callable whose first call is timed. The same
factories serve the warm mode, so both modes time the same code.

Results are lists of dicts (one per contender) and :func:`markdown_table` renders them.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ColdSpec",
    "markdown_table",
    "summarize",
    "time_cold",
    "time_interleaved",
]

_RESULT_TAG = "__BENCH_RESULT__"

_CHILD_CODE = """
import json, sys, time
sys.path[:0] = {path_dirs!r}
import importlib
mod = importlib.import_module({module!r})
fn = getattr(mod, {factory!r})(*json.loads({args!r}))
t0 = time.perf_counter()
out = fn()
t1 = time.perf_counter()
try:
    json.dumps(out)
except TypeError:
    out = repr(out)
print({tag!r} + json.dumps({{"seconds": t1 - t0, "result": out}}), flush=True)
"""


@dataclass(frozen=True)
class ColdSpec:
    """How a fresh child process builds a contender and times its first call.

    Attributes:
        module: Importable module name holding the factory.
        factory: Name of a function ``factory(*args) -> Callable[[], Any]``.
        args: JSON-serialisable positional arguments of the factory.
        path_dirs: Directories prepended to the child's ``sys.path``.
        env: Extra environment variables for the child.
        fresh_dir_env: Names of environment variables that get a new, empty temporary
            directory for every child (e.g. ``NUMBA_CACHE_DIR``, to time a first-ever
            call with no on-disk JIT cache); the directory is removed afterwards.
    """

    module: str
    factory: str
    args: Sequence[Any] = ()
    path_dirs: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    fresh_dir_env: Sequence[str] = ()


def _quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    """Return (q1, median, q3); with fewer than two samples all three are the sample."""
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def summarize(
    samples: Mapping[str, Sequence[float]],
    *,
    reference: str | None = None,
    mode: str = "warm",
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Turn per-contender wall times (seconds) into result rows.

    Each row has ``name, mode, n, median_s, q1_s, q3_s, iqr_s, min_s`` and ``ratio``, the
    contender's median time divided by the reference's (``None`` when no reference was given
    or the reference has no samples). ``extra[name]`` is merged into that contender's row.
    """
    ref_median = None
    if reference is not None and samples.get(reference):
        ref_median = statistics.median(samples[reference])
    rows = []
    for name, xs in samples.items():
        xs = list(xs)
        if not xs:
            continue
        q1, med, q3 = _quartiles(xs)
        row: dict[str, Any] = {
            "name": name,
            "mode": mode,
            "n": len(xs),
            "median_s": med,
            "q1_s": q1,
            "q3_s": q3,
            "iqr_s": q3 - q1,
            "min_s": min(xs),
            "ratio": (med / ref_median) if ref_median else None,
            "reference": reference,
        }
        if extra and name in extra:
            row.update(extra[name])
        rows.append(row)
    return rows


def time_interleaved(
    contenders: Mapping[str, Callable[[], Any]],
    *,
    repeats: int = 7,
    reference: str | None = None,
    warmup: int = 1,
    collect: bool = True,
) -> list[dict[str, Any]]:
    """Median wall time of each zero-argument callable, run interleaved ``repeats`` times.

    Args:
        contenders: Name to callable, in the order they are run within a round.
        repeats: Rounds; every round calls every contender once.
        reference: Name of the contender the ``ratio`` column divides by.
        warmup: Untimed calls of each contender before the first round.
        collect: Run :func:`gc.collect` (untimed) before every call, so that one
            contender's garbage is not collected on another's clock.

    Returns:
        Rows as in :func:`summarize`; each also holds ``result``, the value the last
        call returned (when it is a float, int, str or None).
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    last: dict[str, Any] = {}
    for name, fn in contenders.items():
        for _ in range(warmup):
            last[name] = fn()
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            if collect:
                gc.collect()
            t0 = time.perf_counter()
            out = fn()
            t1 = time.perf_counter()
            samples[name].append(t1 - t0)
            last[name] = out
    extra = {
        name: {"result": out if isinstance(out, (float, int, str, type(None))) else repr(out)}
        for name, out in last.items()
    }
    return summarize(samples, reference=reference, mode="warm", extra=extra)


def _run_child(spec: ColdSpec, timeout: float) -> dict[str, Any]:
    code = _CHILD_CODE.format(
        path_dirs=[str(p) for p in spec.path_dirs],
        module=spec.module,
        factory=spec.factory,
        args=json.dumps(list(spec.args)),
        tag=_RESULT_TAG,
    )
    env = dict(os.environ)
    env.update(spec.env)
    with contextlib.ExitStack() as stack:
        for var in spec.fresh_dir_env:
            env[var] = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cold-"))
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT_TAG):
            return json.loads(line[len(_RESULT_TAG) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
    raise RuntimeError(
        f"cold child for {spec.module}.{spec.factory} exited with {proc.returncode}: "
        + " | ".join(tail)
    )


def time_cold(
    contenders: Mapping[str, ColdSpec],
    *,
    repeats: int = 3,
    reference: str | None = None,
    timeout: float = 300.0,
) -> list[dict[str, Any]]:
    """Time each contender's first call in fresh processes (imports excluded).

    Rounds are interleaved (``A, B, C, A, B, C, ...``); each call is a new process. A
    contender whose child fails gets a row with ``error`` set and no timings.
    """
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    extra: dict[str, dict[str, Any]] = {name: {} for name in contenders}
    failed: dict[str, str] = {}
    for _ in range(repeats):
        for name, spec in contenders.items():
            if name in failed:
                continue
            try:
                out = _run_child(spec, timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                failed[name] = str(exc)
                continue
            samples[name].append(float(out["seconds"]))
            extra[name]["result"] = out.get("result")
    for name, xs in samples.items():
        extra[name]["samples_s"] = ", ".join(f"{x:.3g}" for x in xs)
    rows = summarize(samples, reference=reference, mode="cold", extra=extra)
    for name, err in failed.items():
        if not samples[name]:
            rows.append({"name": name, "mode": "cold", "n": 0, "error": err})
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        a = abs(value)
        if a == 0:
            return "0"
        if a >= 1e5:
            return f"{value:,.0f}"
        if a >= 100:
            return f"{value:.1f}"
        if a >= 1:
            return f"{value:.3f}"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | Mapping[str, str] | None = None,
    formats: Mapping[str, str] | None = None,
) -> str:
    """Render rows as a GitHub Markdown table.

    Args:
        rows: Result rows (dicts).
        columns: Keys to show, in order; a mapping gives ``key -> header``. Default: the
            union of the rows' keys in first-seen order.
        formats: ``key -> format spec`` (e.g. ``",.2f"``) for numeric cells of a column.
    """
    formats = formats or {}

    def cell(row: Mapping[str, Any], key: str) -> str:
        value = row.get(key)
        if key in formats and isinstance(value, (int, float)) and value is not None:
            return format(value, formats[key])
        return _fmt(value)

    if columns is None:
        keys: list[str] = []
        for row in rows:
            keys.extend(k for k in row if k not in keys)
        headers = dict(zip(keys, keys, strict=True))
    elif isinstance(columns, Mapping):
        headers = dict(columns)
    else:
        headers = {c: c for c in columns}
    lines = [
        "| " + " | ".join(headers.values()) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell(row, k) for k in headers) + " |")
    return "\n".join(lines)
