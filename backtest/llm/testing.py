"""A loopback, OpenAI-compatible chat server for tests: scripted replies, injected faults.

:class:`LLMTestServer` speaks enough of the OpenAI / OpenRouter HTTP API for the official
``openai`` SDK to talk to it unchanged (``base_url=server.base_url``): ``POST
/v1/chat/completions`` (plain JSON and ``stream: true`` server-sent events), ``GET /v1/models``
and ``GET /v1/models/{id}``. Each model answers from a *script*; :meth:`LLMTestServer.inject`
makes the next requests for a model fail in one of the ways real providers fail (:class:`Fault`).

Replies look like OpenRouter's: ``provider``, ``usage.cost`` (USD) and the token details the
project's :class:`~backtest.llm.records.Usage` reads. Everything is deterministic: token counts
come from :func:`count_prompt_tokens` and :func:`count_completion_tokens`, ids and ``created``
from a request counter and the seed, so the same script and the same sequence of requests give
byte-identical responses.

The server binds ``127.0.0.1`` on an ephemeral port, serves every connection on its own daemon
thread (independent requests overlap, so latency benchmarks are honest) and never writes a
request line or header to stdout or stderr: request headers may carry an API key. They are kept
in memory only, in :attr:`LLMTestServer.requests`, for tests to inspect.

Example::

    with LLMTestServer(models={"deepseek/deepseek-chat": '{"action": "BUY"}'}) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
        server.inject("deepseek/deepseek-chat", Fault.RATE_LIMIT, times=1, retry_after_s=0.05)
        ...
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import socket
import threading
from collections import Counter
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from backtest.llm.testing_faults import (  # noqa: F401 (re-exported: the old home of these names)
    _CONTENT_FAULTS,
    _ERROR_STATUS,
    _MALFORMED_BODY,
    NOT_JSON_TEXT,
    REFUSAL_TEXT,
    Fault,
    _Injection,
)
from backtest.llm.testing_http import (  # noqa: F401 (re-exported: the old home of these names)
    _STREAM_PIECE_CHARS,
    _dumps,
    _error_body,
    _format_seconds,
    _Handler,
    _HTTPServer,
)
from backtest.llm.testing_scripts import (  # noqa: F401 (re-exported: the old home of these names)
    _CREATED_EPOCH,
    _REPLY_KEYS,
    CHARS_PER_TOKEN,
    IMAGE_PROMPT_TOKENS,
    TOKENS_PER_MESSAGE,
    ReceivedRequest,
    Reply,
    Script,
    _Answer,
    _answer_from,
    _check_reply,
    _check_script,
    _deep_merge,
    count_completion_tokens,
    count_prompt_tokens,
)

__all__ = [
    "CHARS_PER_TOKEN",
    "IMAGE_PROMPT_TOKENS",
    "NOT_JSON_TEXT",
    "REFUSAL_TEXT",
    "TOKENS_PER_MESSAGE",
    "Fault",
    "LLMTestServer",
    "ReceivedRequest",
    "Reply",
    "Script",
    "count_completion_tokens",
    "count_prompt_tokens",
]


_PROVIDER_BY_PREFIX = {
    "anthropic": "Anthropic",
    "deepseek": "DeepSeek",
    "google": "Google",
    "meta-llama": "Meta",
    "mistralai": "Mistral",
    "moonshotai": "Moonshot AI",
    "openai": "OpenAI",
    "qwen": "Alibaba",
}


class LLMTestServer:
    """An OpenAI-compatible chat server on ``127.0.0.1`` that answers from scripts.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. Every method is
    thread-safe.

    A script (see :data:`Script`) is a string (the fixed reply), a sequence of replies served
    in turn and cycling, or a callable that takes the request body and returns a reply. A reply
    that is a mapping may set ``content``, ``finish_reason``, ``usage`` (merged into the
    computed usage, nested dicts included; ``total_tokens`` and ``cost`` are recomputed unless
    given), ``model`` (the id reported as served) and ``provider``. The key ``"*"`` in
    ``models``, ``prices`` and ``providers`` is the default for any other model id. A request
    that gets a fault instead of a scripted answer does not advance a sequence script.

    Args:
        models: Script per model id; ``"*"`` answers any id not listed.
        latency_ms: Delay before every chat completion is answered.
        seed: Mixed into the response ids, so two servers can be told apart.
        prices: ``(input, output)`` USD per million tokens per model id; models not listed
            (and no ``"*"``) cost 0.
        report_cost: Report ``usage.cost`` as OpenRouter does; when ``False`` the key is
            left out and clients must price the tokens themselves.
        providers: The ``provider`` reported per model id; by default it is derived from the
            id's prefix (``"deepseek/..."`` → ``"DeepSeek"``).
        served_as: The ``model`` reported in responses per requested id, to simulate a
            provider serving another snapshot; by default the requested id.
        hang_s: How long :attr:`Fault.HANG` keeps a request waiting.
        port: Port to bind on ``127.0.0.1``; 0 picks a free one.

    Raises:
        TypeError: A script or price has the wrong type.
        ValueError: A number is out of range.
    """

    def __init__(
        self,
        *,
        models: Mapping[str, Script],
        latency_ms: float = 0,
        seed: int = 0,
        prices: Mapping[str, tuple[float, float]] | None = None,
        report_cost: bool = True,
        providers: Mapping[str, str] | None = None,
        served_as: Mapping[str, str] | None = None,
        hang_s: float = 30.0,
        port: int = 0,
    ) -> None:
        for name, script in models.items():
            _check_script(name, script)
        prices = dict(prices or {})
        for name, price in prices.items():
            if (
                not isinstance(price, tuple)
                or len(price) != 2
                or not all(isinstance(p, int | float) and p >= 0 for p in price)
            ):
                raise TypeError(
                    f"prices[{name!r}] is {price!r}; give (input_usd_per_million, "
                    "output_usd_per_million) as two non-negative numbers, e.g. (0.27, 1.1)"
                )
        if latency_ms < 0:
            raise ValueError(f"latency_ms is {latency_ms}; give 0 or more milliseconds")
        if hang_s <= 0:
            raise ValueError(f"hang_s is {hang_s}; give a positive number of seconds")
        self._scripts: dict[str, Script] = dict(models)
        self._latency_s = latency_ms / 1000
        self._seed = seed
        self._prices = prices
        self._report_cost = report_cost
        self._providers = dict(providers or {})
        self._served_as = dict(served_as or {})
        self._hang_s = hang_s
        self._port = port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._cursors: Counter[str] = Counter()
        self._calls: Counter[str] = Counter()
        self._removed: set[str] = set()
        self._faults: dict[str, list[_Injection]] = {}
        self._requests: list[ReceivedRequest] = []
        self._errors: list[BaseException] = []
        self._responses = 0
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LLMTestServer:
        """Bind the socket and start serving on a daemon thread.

        Returns:
            The server itself, so ``server = LLMTestServer(...).start()`` works.

        Raises:
            RuntimeError: The server was already started.
        """
        if self._httpd is not None or self._stopping.is_set():
            raise RuntimeError("this LLMTestServer was already started; create a new one")
        self._httpd = _HTTPServer(self, self._port)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"LLMTestServer:{self._httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake hung requests, and close the socket and open connections.

        Returns within about a second even with :attr:`Fault.HANG` requests pending; their
        connections are dropped without an answer. Calling it twice is harmless.
        """
        self._stopping.set()
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)
        thread.join(timeout=1.0)
        self._thread = None

    def __enter__(self) -> LLMTestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what tests look at -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to give the SDK, e.g. ``"http://127.0.0.1:54321/v1"``.

        Raises:
            RuntimeError: The server has not been started.
        """
        if self._httpd is None:
            raise RuntimeError("start the LLMTestServer (or enter its `with` block) first")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A copy of every request received so far, in arrival order."""
        with self._lock:
            return copy.deepcopy(self._requests)

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised while serving (a failing script, a server bug), oldest first.

        A failing script is answered with HTTP 500; a test can assert this list is empty to
        tell such failures from injected ones.
        """
        with self._lock:
            return list(self._errors)

    def calls(self, model: str) -> int:
        """Count the chat completion requests that asked for ``model``, faulted ones included.

        Args:
            model: The requested model id.

        Returns:
            The number of requests received for it.
        """
        with self._lock:
            return self._calls[model]

    # -- what tests change -------------------------------------------------------------------

    def inject(
        self,
        model: str,
        fault: Fault,
        *,
        times: int | None = 1,
        retry_after_s: float = 1.0,
        after: int = 0,
    ) -> None:
        """Make the next ``times`` chat completions for ``model`` suffer ``fault``.

        Injections for one model queue up: the first is used until its count runs out, then
        the next. Injections for ``"*"`` apply to any model that has none of its own.

        Args:
            model: The requested model id, or ``"*"`` for every model.
            fault: What goes wrong.
            times: How many requests it affects; ``None`` for every request from now on.
            retry_after_s: The ``Retry-After`` header of :attr:`Fault.RATE_LIMIT`, in seconds.
                The SDK honours values in (0, 120]; for 0 it falls back to its own backoff.
            after: Requests answered normally before the fault starts (``after=5,
                times=None``: the sixth request and every later one fail).

        Raises:
            TypeError: ``fault`` is not a :class:`Fault`.
            KeyError: ``model`` is not served.
            ValueError: ``times`` is not positive, ``retry_after_s`` or ``after`` negative.
        """
        if not isinstance(fault, Fault):
            raise TypeError(f"fault is {fault!r}; give a member of Fault, e.g. Fault.RATE_LIMIT")
        if times is not None and times < 1:
            raise ValueError(f"times is {times}; give a positive count, or None for always")
        if retry_after_s < 0:
            raise ValueError(f"retry_after_s is {retry_after_s}; give 0 or more seconds")
        if after < 0:
            raise ValueError(f"after is {after}; give 0 or more requests")
        with self._lock:
            if model != "*" and self._script_for(model) is None:
                raise KeyError(self._unknown_model_message(model))
            injection = _Injection(fault, times, retry_after_s, after)
            self._faults.setdefault(model, []).append(injection)

    def clear_faults(self, model: str | None = None) -> None:
        """Drop pending injections for ``model``, or for every model when ``None``.

        Args:
            model: The model id (or ``"*"``) whose injections to drop.
        """
        with self._lock:
            if model is None:
                self._faults.clear()
            else:
                self._faults.pop(model, None)

    def remove_model(self, name: str) -> None:
        """Make ``name`` disappear: from now on it gets HTTP 404 and is not listed.

        Removing ``"*"`` stops the default script from answering unlisted ids.

        Args:
            name: The model id (or ``"*"``) to remove.

        Raises:
            KeyError: ``name`` is not served.
        """
        with self._lock:
            if name != "*" and self._script_for(name) is None:
                raise KeyError(self._unknown_model_message(name))
            if name == "*" and "*" not in self._scripts:
                raise KeyError("no default script ('*') was configured, so there is none to remove")
            self._removed.add(name)

    # -- internals used by the handler ---------------------------------------------------------

    def _script_for(self, model: str) -> Script | None:
        if model in self._removed:
            return None
        if model in self._scripts:
            return self._scripts[model]
        if "*" in self._scripts and "*" not in self._removed:
            return self._scripts["*"]
        return None

    def _unknown_model_message(self, model: str) -> str:
        served = sorted(m for m in self._scripts if m not in self._removed)
        return f"model {model!r} is not served by this LLMTestServer; served models: {served}"

    def _listed_models(self) -> list[str]:
        with self._lock:
            return [m for m in self._scripts if m != "*" and m not in self._removed]

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            if request.model is not None and request.path.endswith("/chat/completions"):
                self._calls[request.model] += 1

    def _record_error(self, error: BaseException) -> None:
        with self._lock:
            self._errors.append(error)

    def _take_fault(self, model: str) -> _Injection | None:
        with self._lock:
            for key in (model, "*"):
                queue = self._faults.get(key)
                if not queue:
                    continue
                injection = queue[0]
                if injection.after > 0:  # not yet: this request is answered normally
                    injection.after -= 1
                    return None
                if injection.remaining is not None:
                    injection.remaining -= 1
                    if injection.remaining == 0:
                        queue.pop(0)
                return injection
            return None

    def _next_reply(self, model: str, body: dict[str, Any], *, advance: bool) -> _Answer | None:
        with self._lock:
            script = self._script_for(model)
            if script is None:
                return None
            if isinstance(script, str | Mapping) or callable(script):
                reply = script
            else:
                reply = script[self._cursors[model] % len(script)]
                if advance:
                    self._cursors[model] += 1
        if callable(reply):
            reply = reply(copy.deepcopy(body))
        return _answer_from(model, reply)

    def _next_identity(self) -> tuple[str, int]:
        with self._lock:
            self._responses += 1
            counter = self._responses
        digest = hashlib.sha256(f"{self._seed}:{counter}".encode()).hexdigest()[:20]
        created = _CREATED_EPOCH + counter
        return f"gen-{created}-{digest}", created

    def _provider(self, model: str) -> str:
        if model in self._providers:
            return self._providers[model]
        if "*" in self._providers:
            return self._providers["*"]
        prefix = model.split("/", 1)[0] if "/" in model else ""
        return _PROVIDER_BY_PREFIX.get(prefix.lower(), prefix or "TestProvider")

    def _usage(self, model: str, body: dict[str, Any], answer: _Answer) -> dict[str, Any]:
        messages = body.get("messages")
        prompt = count_prompt_tokens(messages if isinstance(messages, list) else [])
        completion = count_completion_tokens(answer.content)
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        usage = _deep_merge(usage, answer.usage)
        if "total_tokens" not in answer.usage:
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not self._report_cost:
            usage.pop("cost", None)
        elif "cost" not in answer.usage:
            price_in, price_out = self._prices.get(model, self._prices.get("*", (0.0, 0.0)))
            cost = usage["prompt_tokens"] * price_in + usage["completion_tokens"] * price_out
            usage["cost"] = cost / 1_000_000
        return usage

    def _completion(self, model: str, body: dict[str, Any], answer: _Answer) -> dict[str, Any]:
        generation_id, created = self._next_identity()
        return {
            "id": generation_id,
            "provider": answer.provider or self._provider(model),
            "model": answer.model or self._served_as.get(model, model),
            "object": "chat.completion",
            "created": created,
            "choices": [
                {
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                    "native_finish_reason": answer.finish_reason,
                    "message": {"role": "assistant", "content": answer.content, "refusal": None},
                }
            ],
            "usage": self._usage(model, body, answer),
        }
