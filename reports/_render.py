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
import hashlib
import html
import json
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

__all__ = [
    "CSP_PLACEHOLDER",
    "PLOTLY_JS_VERSION",
    "PLOTLY_STYLE_ATTRIBUTES",
    "content_security_policy",
    "figure_json",
    "plotly_css",
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


def plotly_css() -> str:
    """plotly.js's global style rules, shipped so the page can forbid inline styles."""
    return (resources.files("reports") / "static" / "plotly-global.css").read_text("utf-8")


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


#: The only style attributes plotly.js writes as text (d3 ``.attr("style", ...)``): colour
#: bars clear their rects' style, heatmaps test ``image-rendering`` support once, and the
#: pseudo-HTML of labels (``<b>``, ``<i>``, ``<sup>``...) becomes styled ``<tspan>``s
#: (plotly's ``svg_text_utils`` tag styles).
PLOTLY_STYLE_ATTRIBUTES = (
    "",
    "font-size:70%",
    "text-decoration:line-through",
    "text-decoration:underline",
    "font-weight:bold",
    "font-style:italic",
    "cursor:pointer",
    "font-style:italic;font-weight:bold",
    "image-rendering: optimizeSpeed; image-rendering: -moz-crisp-edges; "
    "image-rendering: -o-crisp-edges; image-rendering: -webkit-optimize-contrast; "
    "image-rendering: optimize-contrast; image-rendering: crisp-edges; "
    "image-rendering: pixelated; ",
)

#: Where the page's Content-Security-Policy goes (``base.html.j2``).
CSP_PLACEHOLDER = "__CONTENT_SECURITY_POLICY__"
_SCRIPT = re.compile(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.S)
_STYLE = re.compile(r"<style(?:\s[^>]*)?>(?P<body>.*?)</style>", re.S)


def _sha256_source(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def content_security_policy(html: str) -> str:
    """A strict policy for ``html``: no network, and only the page's own scripts and styles.

    Every inline ``<script>`` that runs (not the ``application/json`` data blocks, which
    never execute) and every ``<style>`` block is allowed by its sha256, so neither
    ``'unsafe-inline'`` nor ``'unsafe-eval'`` is needed: a script or style injected by text
    that escaped escaping would not match and would be refused by the browser. plotly.js's
    cartesian bundle uses neither ``eval`` nor ``new Function``; the styles it adds at run
    time go through the CSSOM (``element.style``), which CSP allows; its global rules are
    shipped in the page (``static/plotly-global.css``, marked ``no-inline-styles`` so plotly
    inserts none), and the two style attribute values it writes as text
    (:data:`PLOTLY_STYLE_ATTRIBUTES`) are the only ones ``style-src-attr`` allows.
    """
    scripts = sorted(
        {
            _sha256_source(m.group("body"))
            for m in _SCRIPT.finditer(html)
            if "application/json" not in m.group("attrs")
        }
    )
    styles = sorted({_sha256_source(m.group("body")) for m in _STYLE.finditer(html)})
    attributes = " ".join(_sha256_source(text) for text in PLOTLY_STYLE_ATTRIBUTES)
    return (
        "default-src 'none'; "
        f"script-src {' '.join(scripts) or chr(39) + 'none' + chr(39)}; "
        f"style-src {' '.join(styles) or chr(39) + 'none' + chr(39)}; "
        # The style attributes plotly writes as text, and nothing else.
        f"style-src-attr 'unsafe-hashes' {attributes}; "
        "img-src data:; font-src data:; base-uri 'none'; form-action 'none'"
    )


def render_template(name: str, **context: Any) -> str:
    """Render ``reports/templates/<name>`` with autoescaping, plotly.js, the page script and
    a Content-Security-Policy that allows exactly the page's own scripts and styles."""
    html = (
        _environment()
        .get_template(name)
        .render(plotly_js=plotly_js(), plotly_css=plotly_css(), **context)
    )
    return html.replace(CSP_PLACEHOLDER, content_security_policy(html), 1)


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
