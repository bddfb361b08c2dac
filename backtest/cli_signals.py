"""Ctrl-C and repeated warnings, as a terminal user should see them.

- **Ctrl-C** becomes :class:`Interrupted` (a ``BaseException``, so no library's ``except
  Exception`` swallows it, and so click does not turn it into "Aborted!" with status 1): the
  CLI prints one line and exits with status 130, the shell's code for SIGINT. Work in flight
  is cleaned up by the ``finally`` blocks on the way out: the model cache and the run
  directory are written to staging folders that are removed, so nothing half-written is
  left; LLM answers already recorded stay in the cassette, and trained models that finished
  stay cached, so a rerun resumes.
- **Warnings** logged by the package (``logging``) are printed once each; a warning that
  comes back (the same logger and text) is counted, and the counts are printed as one line
  per warning when the command ends.
"""

from __future__ import annotations

import logging
import signal
from collections import Counter
from collections.abc import Callable
from types import FrameType

__all__ = ["CollapsingHandler", "Interrupted", "install"]


class Interrupted(BaseException):
    """The user pressed Ctrl-C (SIGINT)."""


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


class CollapsingHandler(logging.Handler):
    """Emit each distinct warning once; count the repeats for :meth:`summary`."""

    def __init__(self, emit_line: Callable[[str], None]) -> None:
        super().__init__(level=logging.WARNING)
        self.emit_line = emit_line
        self.seen: Counter[tuple[str, str]] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        key = (record.name, record.getMessage())
        self.seen[key] += 1
        if self.seen[key] == 1:
            self.emit_line(f"warning: {key[1]}")

    def summary(self) -> list[str]:
        """One line per warning that was repeated, with how many times it was logged."""
        return [
            f"warning repeated {count} times in all: {message}"
            for (_, message), count in self.seen.items()
            if count > 1
        ]


def install(emit_line: Callable[[str], None]) -> tuple[CollapsingHandler, Callable[[], None]]:
    """SIGINT raises :class:`Interrupted`; the package's warnings go through one
    :class:`CollapsingHandler`.

    Returns:
        The handler (the caller prints its summary at the end) and a function that puts the
        previous SIGINT handler back and removes this one (so ``main`` called in a test
        process leaves nothing behind). Records still propagate to the root logger, so
        pytest's ``caplog`` sees them; having a handler here keeps Python's last-resort
        handler from printing them a second time.
    """
    previous = signal.signal(signal.SIGINT, _on_sigint)
    handler = CollapsingHandler(emit_line)
    loggers = [logging.getLogger(name) for name in ("backtest", "strategies", "reports")]
    for logger in loggers:
        logger.addHandler(handler)

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)
        for logger in loggers:
            logger.removeHandler(handler)

    return handler, restore
