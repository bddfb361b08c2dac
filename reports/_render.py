"""Shared plumbing of the HTML reports: plotly.js, figure serialisation, escaping, Jinja2.

A report is one HTML file that works offline: plotly.js is embedded once (the *cartesian*
partial bundle, 1.5 MB, of the same plotly.js version the ``plotly`` package ships; the full
bundle is 4.8 MB and would not leave room for data under the 5 MB budget), and every figure
is a JSON document in a ``<script type="application/json">`` block that one small script
draws. Nothing is fetched from anywhere.

Escaping rules (text from models, news and files is hostile):

- HTML text goes through Jinja2 with autoescaping on, never ``|safe`` on such text.
- Figure JSON is embedded with ``<``, ``>`` and ``&`` written as ``\\u003c``, ``\\u003e`` and
  ``\\u0026``, so no string inside can close the script block or open a tag.
- Hover texts handed to plotly are HTML-escaped first: plotly renders a subset of HTML in
  hover labels (``<b>``, ``<a href>``), and an escaped ``&lt;script&gt;`` shows as text.

Numeric arrays are written as plotly's base64 typed arrays (``{"dtype": "f8", "bdata": ...}``),
and time axes as milliseconds since the epoch, which keeps 5,000-bar curves small and exact.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

__all__ = [
    "PLOTLY_JS_VERSION",
    "figure_json",
    "plotly_js",
    "render_template",
    "short_text",
    "time_ms",
    "write_atomic",
]

#: plotly.js version of the embedded bundle (``reports/static/plotly-cartesian.min.js``).
PLOTLY_JS_VERSION = "4.1.1"

_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


@functools.cache
def plotly_js() -> str:
    """The embedded plotly.js bundle (read once per process)."""
    return (resources.files("reports") / "static" / "plotly-cartesian.min.js").read_text("utf-8")


def time_ms(index: pd.DatetimeIndex | pd.Series) -> np.ndarray:
    """Timestamps as float milliseconds since the epoch (what plotly's date axes accept)."""
    values = pd.DatetimeIndex(index).as_unit("ns").asi8
    return values.astype(np.float64) / 1e6


def short_text(text: object, limit: int = 160) -> str:
    """``text`` on one line, cut at ``limit`` characters, HTML-escaped for a plotly label."""
    value = " ".join(str(text or "").split())
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return html.escape(value, quote=True)


def _typed(array: np.ndarray) -> Any:
    if array.dtype == np.float32:  # chosen by the builder where 7 digits are plenty
        return {"dtype": "f4", "bdata": base64.b64encode(array.astype("<f4").tobytes()).decode()}
    if array.dtype.kind == "f":
        return {"dtype": "f8", "bdata": base64.b64encode(array.astype("<f8").tobytes()).decode()}
    if array.dtype.kind in "iu":
        data = array.astype("<i4") if np.abs(array).max(initial=0) < 2**31 else array
        if data.dtype == np.dtype("<i4"):
            return {"dtype": "i4", "bdata": base64.b64encode(data.tobytes()).decode()}
        return [_plain(v) for v in array.tolist()]
    if array.dtype.kind == "b":
        return [bool(v) for v in array.tolist()]
    return [_plain(v) for v in array.tolist()]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.floating):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _typed(value) if value.ndim == 1 else [_plain(v) for v in value.tolist()]
    return value


def figure_json(figure: dict[str, Any]) -> str:
    """A plotly figure (plain dicts and numpy arrays) as JSON safe inside a script block.

    Raises:
        ValueError: Something that is not JSON (a NaN is written as null, never as NaN).
    """
    text = json.dumps(_plain(figure), separators=(",", ":"), allow_nan=False, sort_keys=True)
    return text.translate(_ESCAPES)


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = _fmt_number
    env.filters["pct"] = _fmt_percent
    env.filters["usd"] = _fmt_usd
    return env


def render_template(name: str, **context: Any) -> str:
    """Render ``reports/templates/<name>`` with autoescaping, plotly.js and the page script."""
    return _environment().get_template(name).render(plotly_js=plotly_js(), **context)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _fmt_number(value: Any, digits: int = 2) -> str:
    if _missing(value):
        return "–"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    return f"{float(value):,.{digits}f}"


def _fmt_percent(value: Any, digits: int = 2) -> str:
    return "–" if _missing(value) else f"{100 * float(value):,.{digits}f}%"


def _fmt_usd(value: Any, digits: int = 2) -> str:
    if _missing(value):
        return "–"
    value = float(value)
    if value != 0 and abs(value) < 0.01:
        return f"${value:,.6f}"
    return f"${value:,.{digits}f}"


def write_atomic(target: Path, text: str) -> Path:
    """Write ``text`` to ``target`` through a temporary file and a rename; return ``target``.

    A reader never sees half a report, and a crash leaves the previous one in place.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target
