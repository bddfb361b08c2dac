"""Progress lines off a terminal: every 10% (at most one a second), every 30 s, and done."""

from __future__ import annotations

import io

from backtest.progress import LineProgress, make_progress


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_every_tenth_every_30_seconds_and_when_done() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = LineProgress(out, clock=clock)
    task = progress.add_task("train drl@0 (PPO)", total=1000)
    for done in range(0, 1001, 10):
        clock.now += 0.5  # 100 updates over 50 s
        progress.update(task, completed=done)
    lines = out.getvalue().splitlines()
    assert lines[-1] == "[progress] train drl@0 (PPO): done (1,000) in 50 s"
    steps = [line for line in lines if "%" in line]
    assert steps[0].startswith("[progress] train drl@0 (PPO): 10% (100/1,000)")
    assert len(steps) == 9  # 10% .. 90%, each once
    # A slow task with no 10% step in 30 s still says it is moving.
    slow = progress.add_task("slow", total=10_000)
    clock.now += 31
    progress.update(slow, advance=1)
    assert out.getvalue().splitlines()[-1].startswith("[progress] slow: 0% (1/10,000) after 31 s")
    progress.update(slow, completed=10_000)
    progress.update(slow, completed=10_000)  # done once only
    assert out.getvalue().count("slow: done") == 1


def test_a_fast_task_prints_only_its_end() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = LineProgress(out, clock=clock)
    task = progress.add_task("bars", total=100)
    for _ in range(100):
        clock.now += 0.001
        progress.update(task, advance=1)
    assert out.getvalue().splitlines() == ["[progress] bars: done (100) in 0 s"]


def test_bars_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(make_progress(io.StringIO()), LineProgress)
    assert not isinstance(make_progress(Tty()), LineProgress)
