"""Load a report in headless Chromium (Debian's ``chromium``) with the network off.

Used by the browser test and, from the command line, to take the README's screenshot::

    python -m tests.reports.browser runs/<run-id>/report.html docs/report.png
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The flags the build machines need (no sandbox as root, no background traffic).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)


def chromium_path() -> str | None:
    """``$CHROMIUM`` or the ``chromium`` on PATH."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium")


@dataclass
class PageReport:
    """What the browser saw while loading a report."""

    plots: int = 0
    drawn: int = 0
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    report_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    hover_text: str = ""
    pwned: Any = None
    #: Viewport rectangle (``top``, ``bottom``, ``height``) and text of the ``probe``
    #: element, or None when it is not on the page.
    probe: dict[str, Any] | None = None
    probes: dict[str, Any] = field(default_factory=dict)
    scroll_width: int = 0


def load_report(
    path: Path,
    *,
    screenshot: Path | None = None,
    hover: tuple[str, str] | None = None,
    probe: str | None = None,
    probes: tuple[str, ...] = (),
    width: int = 1400,
    height: int = 2000,
    timeout_ms: int = 60_000,
) -> PageReport:
    """Open ``path`` from ``file://`` offline; wait until every plot drew.

    Args:
        path: The HTML file.
        screenshot: Where to save a PNG of the page (top ``height`` pixels).
        hover: ``(figure id, trace name part)``: the first point of the first trace of that
            figure (``data-fig``) whose name contains the part and that has hover text gets a
            hover event; the label's text is returned in ``hover_text``.
        probe: A CSS selector whose element's position (after the plots drew) and text are
            returned in ``probe``.
        probes: More selectors, each element's position, size and whether it scrolls
            sideways (``scrolls_x``) returned in ``probes`` by selector; the page's own
            ``scrollWidth`` is returned in ``scroll_width``.
    """
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError(
            "Chromium not found. Fix: `apt-get install -y chromium` (make test does it), or "
            "set CHROMIUM to its path."
        )
    seen = PageReport()
    url = path.resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_ARGS),
            offline=True,
            viewport={"width": width, "height": height},
        )
        try:
            page = context.new_page()
            page.on(
                "console",
                lambda m: seen.console_errors.append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: seen.page_errors.append(str(e)))
            page.on("dialog", lambda d: (seen.dialogs.append(d.message), d.dismiss()))

            def route(r: Any) -> None:
                seen.requests.append(r.request.url)
                if r.request.url == url:
                    r.continue_()
                else:
                    r.abort()

            context.route("**/*", route)
            page.goto(url, wait_until="load", timeout=timeout_ms)
            seen.plots = page.evaluate("document.querySelectorAll('div.plot[data-fig]').length")
            page.wait_for_function(
                "document.body.dataset.plotsDrawn !== undefined", timeout=timeout_ms
            )
            seen.drawn = page.evaluate(
                "Array.from(document.querySelectorAll('div.plot[data-fig]')).filter("
                "d => d.dataset.drawn === '1' && d.querySelector('svg.main-svg')).length"
            )
            seen.report_errors = page.evaluate("window.__reportErrors")
            if hover is not None:
                seen.hover_text = page.evaluate(
                    """([key, part]) => {
                        const div = document.querySelector(`div.plot[data-fig="${key}"]`);
                        const curve = div.data.findIndex(
                            t => t.hovertext && t.hovertext.length &&
                                 (t.name.includes(part) ||
                                  (t.type === "heatmap" && t.y.some(y => y.includes(part)))));
                        const trace = div.data[curve];
                        if (trace.type === "heatmap") {
                            // A heatmap hovers by position: the cell's centre, its x.
                            const row = trace.y.findIndex(y => y.includes(part));
                            const col = Math.max(
                                trace.hovertext[row].findIndex(t => t.includes("last:")), 0);
                            const xval = Date.parse(trace.x[col]);
                            Plotly.Fx.hover(div, {xval: xval, yval: row}, "xy");
                        } else {
                            Plotly.Fx.hover(div, [{curveNumber: curve, pointNumber: 0}]);
                        }
                        const layer = div.querySelector('.hoverlayer');
                        return layer ? layer.textContent : '';
                    }""",
                    list(hover),
                )
            seen.pwned = page.evaluate("window.__pwned === undefined ? null : window.__pwned")
            if probe is not None:
                seen.probe = page.evaluate(
                    """(selector) => {
                        const el = document.querySelector(selector);
                        if (!el) return null;
                        const r = el.getBoundingClientRect();
                        return {top: r.top, bottom: r.bottom, height: r.height,
                                text: el.innerText};
                    }""",
                    probe,
                )
            seen.scroll_width = page.evaluate("document.documentElement.scrollWidth")
            for selector in probes:
                seen.probes[selector] = page.evaluate(
                    """(selector) => {
                        const el = document.querySelector(selector);
                        if (!el) return null;
                        const r = el.getBoundingClientRect();
                        let box = el, scrolls = false;
                        while (box && box !== document.body) {
                            if (box.scrollWidth > box.clientWidth + 1 &&
                                getComputedStyle(box).overflowX !== "visible") scrolls = true;
                            box = box.parentElement;
                        }
                        return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,
                                scrolls_x: scrolls, text: el.innerText};
                    }""",
                    selector,
                )
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=False)
        finally:
            context.close()
    return seen


if __name__ == "__main__":  # pragma: no cover
    report = load_report(Path(sys.argv[1]), screenshot=Path(sys.argv[2]))
    print(report)
    sys.exit(
        1 if report.console_errors or report.page_errors or report.drawn != report.plots else 0
    )
