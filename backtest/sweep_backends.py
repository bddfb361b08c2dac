"""Where a sweep's runs execute: this process, a forkserver process pool, or Ray tasks.

Every backend runs :func:`_execute` on a point's config and reports its outcome (a failure is
a result, never an exception); the local pool's workers fork from a forkserver that has
already imported the engine and the strategies the runs use, and exit when the sweep
process is gone (:func:`_watch_parent`). Also here: which cassettes the runs record into, so
that :func:`backtest.sweep.run_sweep` can compact their shards afterwards.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from backtest.config import RunConfig
from backtest.errors import BacktestError, ConfigError
from backtest.sweep_plan import SweepPoint

__all__ = ["Report"]


def _watch_parent(sweep_pid: int) -> None:
    """Worker initializer: exit as soon as the sweep process is gone.

    A sweep killed with SIGKILL cannot stop its pool; without this its workers would go on
    with the runs already queued to them, unseen (racing a restarted sweep for the same run
    directories), and then wait forever for work that never comes.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.2)
            if os.getppid() != parent:  # the forkserver went away with the sweep
                os._exit(1)
            try:
                os.kill(sweep_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="sweep-watch-parent", daemon=True).start()


# --------------------------------------------------------------------------- execution


def _execute(config_json: str) -> dict[str, Any]:
    """Run one point in a worker process; never raises (a failure is a result)."""
    from backtest.engine import run

    config = RunConfig.model_validate_json(config_json)
    try:
        result = run(config)
    except BacktestError as exc:
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    return {"status": "done", "run_id": result.run_id}


def _execute_in(cwd: str, config_json: str) -> dict[str, Any]:
    """A Ray task: run in the driver's working directory where this node has it."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return _execute(config_json)


Report = Callable[[SweepPoint, dict[str, Any]], None]


class _LocalBackend:
    """A process pool kept for the whole sweep, so the test runs reuse warm workers."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None

    def run(self, todo: Sequence[SweepPoint], report: Report, *, in_pool: bool = False) -> None:
        """Run in this process (one worker, or a lone run unless ``in_pool``) or in the pool."""
        if not todo:
            return
        if self.workers <= 1 or (len(todo) == 1 and not in_pool and self.pool is None):
            for point in todo:
                report(point, _execute(point.config.model_dump_json()))
            return
        if self.pool is None:
            # forkserver: workers fork from a clean server process (no inherited threads,
            # numba or torch state) that has already imported the engine and the strategies
            # the runs use (the LLM graph pulls in the openai SDK, ~1 s per worker
            # otherwise), so they start in milliseconds. Modules that fail to import are
            # skipped there.
            context = get_context("forkserver")
            context.set_forkserver_preload(["backtest.engine", *_strategy_modules(todo)])
            self.pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=context,
                initializer=_watch_parent,
                initargs=(os.getpid(),),
            )
        futures = {self.pool.submit(_execute, p.config.model_dump_json()): p for p in todo}
        for future in as_completed(futures):
            report(futures[future], future.result())

    def close(self) -> None:
        """Stop the pool's workers."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _strategy_modules(points: Sequence[SweepPoint]) -> list[str]:
    """The modules that define the strategies of these runs, in first-use order."""
    from backtest.config import STRATEGY_KINDS

    modules: dict[str, None] = {"strategies.baselines": None}
    for point in points:
        for spec in point.config.strategies:
            module = STRATEGY_KINDS.get(spec.kind, spec.kind).partition(":")[0]
            if module:
                modules[module] = None
    return list(modules)


def _check_reachable(address: str) -> None:
    """Fail fast on a cluster address nothing listens at (Ray itself retries for minutes)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto" and other forms Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError(
            f"--address {address!r}: nothing answers there ({exc}). Fix: start the cluster "
            "with `ray start --head` and pass the address it prints, or leave --address out "
            "for a local Ray instance."
        ) from exc


class _RayBackend:
    """Ray tasks on a local instance (started here, stopped at the end) or a cluster."""

    def __init__(self, workers: int, address: str | None) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(
                "--backend ray: Ray is not installed. Fix: pip install 'hybrid-backtest[ray]', "
                "or use --backend local."
            ) from exc
        # No usage statistics and no dashboard: nothing leaves the machine.
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            if address is not None:
                _check_reachable(address)
            kwargs: dict[str, Any] = {"logging_level": "warning", "log_to_driver": False}
            if address is None:
                kwargs.update(num_cpus=workers, include_dashboard=False)
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(
                    f"--address {address!r}: cannot connect to a Ray cluster ({exc}). Fix: "
                    "start one with `ray start --head` and pass its address, or leave "
                    "--address out for a local instance."
                ) from exc
            self.started = True
        self.task = ray.remote(num_cpus=1, max_retries=0)(_execute_in)

    def run(self, todo: Sequence[SweepPoint], report: Report) -> None:
        ray = self.ray
        cwd = os.getcwd()
        pending = {self.task.remote(cwd, p.config.model_dump_json()): p for p in todo}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                point = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # the worker died: the run failed, the sweep goes on
                    outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                report(point, outcome)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def _cassettes(configs: Sequence[RunConfig]) -> set[Path]:
    """Cassette directories the strategies of these runs name (``cassette`` parameters)."""

    def walk(value: Any) -> list[str]:
        if isinstance(value, Mapping):
            found = [str(v) for k, v in value.items() if k == "cassette" and isinstance(v, str)]
            return found + [c for v in value.values() for c in walk(v)]
        return []

    return {Path(c).resolve() for cfg in configs for s in cfg.strategies for c in walk(s.params)}


def _shards(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("shard-*.tsv")} if folder.is_dir() else set()
