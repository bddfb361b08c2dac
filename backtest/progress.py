"""Progress of long steps (training, the bar loop): bars on a terminal, lines elsewhere.

:func:`make_progress` returns a ``rich.progress.Progress`` drawing on standard error when
that is a terminal, else a :class:`LineProgress`: the same small interface (``start``, ``stop``,
``add_task``, ``update``), printing plain lines to standard error, so that piped output
(CI logs, ``nohup``, a notebook) still shows that training is moving. A task prints a line
each time it crosses another 10% of its total (at most one a second), at least every 30
seconds while it moves, and once when it completes::

    [progress] train drl@0 (PPO): 40% (8,192/20,480) after 12 s
    [progress] train drl@0 (PPO): done (20,480) in 31 s
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["LineProgress", "make_progress"]


@dataclass
class _Task:
    description: str
    total: float | None
    started: float
    completed: float = 0.0
    last_line: float = 0.0
    last_step: int = 0
    done: bool = False


class LineProgress:
    """Progress as plain lines on a stream (the subset of ``rich.progress.Progress`` used).

    Args:
        stream: Where lines go (None: ``sys.stderr`` at the time of writing).
        step: Fraction of a task's total between two lines.
        every_seconds: Longest silence while a task moves.
        min_seconds: Shortest time between two step lines of one task.
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        step: float = 0.1,
        every_seconds: float = 30.0,
        min_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < step <= 1:
            raise ValueError(f"step must be in (0, 1], got {step}")
        self.stream = stream
        self.step = step
        self.every_seconds = every_seconds
        self.min_seconds = min_seconds
        self.clock = clock
        self.tasks: dict[int, _Task] = {}

    def start(self) -> None:
        """Nothing to set up (``rich``'s interface)."""

    def stop(self) -> None:
        """Nothing to tear down (``rich``'s interface)."""

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        """A new task; returns its id."""
        now = self.clock()
        task_id = len(self.tasks)
        self.tasks[task_id] = _Task(description, total, started=now, last_line=now)
        return task_id

    def update(
        self,
        task_id: int,
        *,
        advance: float | None = None,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
        **_: Any,
    ) -> None:
        """Move a task on; print a line when it is due."""
        task = self.tasks[task_id]
        if total is not None:
            task.total = total
        if description is not None:
            task.description = description
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if task.done:
            return
        now = self.clock()
        if task.total is not None and task.total > 0 and task.completed >= task.total:
            task.done = True
            self._write(
                f"{task.description}: done ({task.completed:,.0f}) in {_secs(now - task.started)}"
            )
            return
        fraction = task.completed / task.total if task.total else 0.0
        step = int(fraction / self.step + 1e-9)
        stepped = step > task.last_step and now - task.last_line >= self.min_seconds
        if stepped or now - task.last_line >= self.every_seconds:
            task.last_step = max(task.last_step, step)
            task.last_line = now
            of = f"/{task.total:,.0f}" if task.total else ""
            self._write(
                f"{task.description}: {fraction:.0%} ({task.completed:,.0f}{of}) after "
                f"{_secs(now - task.started)}"
            )

    def _write(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(f"[progress] {text}\n")
        stream.flush()


def _secs(seconds: float) -> str:
    return f"{seconds:,.0f} s"


def make_progress(stream: TextIO | None = None) -> Any:
    """A ``rich`` progress display when ``stream`` (default stderr) is a terminal, else a
    :class:`LineProgress` on it. Call ``start()`` before use and ``stop()`` after."""
    target = stream if stream is not None else sys.stderr
    isatty = getattr(target, "isatty", None)
    if callable(isatty) and isatty():
        from rich.console import Console
        from rich.progress import Progress

        # On stderr, with the lines: `backtest run ... > out.txt` keeps bars out of the file.
        return Progress(console=Console(file=target), transient=False)
    return LineProgress(stream)
