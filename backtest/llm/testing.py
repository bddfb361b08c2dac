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
import json
import math
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any, TypeAlias
from urllib.parse import unquote

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

Reply: TypeAlias = str | Mapping[str, Any]
"""One scripted answer: the content, or a mapping with ``content`` and optional overrides."""

Script: TypeAlias = Reply | Sequence[Reply] | Callable[[dict[str, Any]], Reply]
"""How a model answers: one fixed reply, replies served in turn (cycling), or a callable."""

CHARS_PER_TOKEN = 4
"""Characters of text counted as one token, prompt and completion alike."""

TOKENS_PER_MESSAGE = 4
"""Prompt tokens charged per message for the chat template around it."""

IMAGE_PROMPT_TOKENS = 765
"""Prompt tokens charged per ``image_url`` content part (OpenAI's high-detail 512 px tile)."""

REFUSAL_TEXT = "I'm sorry, but I can't help with that."
"""The content :attr:`Fault.REFUSAL` answers with."""

NOT_JSON_TEXT = (
    "Looking at the recent bars, momentum is fading and volume is thin, so I would lean "
    "cautiously bullish but keep the position small until the breakout is confirmed."
)
"""The prose :attr:`Fault.NOT_JSON_CONTENT` answers with instead of the scripted JSON."""

_CREATED_EPOCH = 1_700_000_000
_STREAM_PIECE_CHARS = 16
_MALFORMED_BODY = b"<html><body><h1>upstream error</h1><p>{not json</p></body></html>"
_REPLY_KEYS = frozenset({"content", "finish_reason", "usage", "model", "provider"})
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


class Fault(Enum):
    """A failure :meth:`LLMTestServer.inject` makes a model's next requests suffer.

    Attributes:
        RATE_LIMIT: HTTP 429 with a ``Retry-After`` header (seconds) and an OpenAI-style
            error body.
        SERVER_ERROR: HTTP 500 with an OpenAI-style error body.
        BAD_GATEWAY: HTTP 502 with an OpenAI-style error body.
        HANG: Send nothing for ``hang_s`` seconds (longer than any sane client timeout), then
            answer normally. Stopping the server wakes the request and drops its connection.
        MALFORMED_JSON: HTTP 200, ``Content-Type: application/json``, a body that is not JSON
            (when streaming: one event whose data is not JSON).
        TRUNCATED_STREAM: When streaming, chunks carrying the first half of the content, then
            the stream ends cleanly with no ``finish_reason``, no usage and no
            ``data: [DONE]``.
            Otherwise the first half of the JSON body, with a ``Content-Length`` that matches
            the truncated body.
        EMPTY_CONTENT: HTTP 200 with content ``""``.
        REFUSAL: HTTP 200 with content :data:`REFUSAL_TEXT` and ``finish_reason`` ``"stop"``.
        NOT_JSON_CONTENT: HTTP 200 with content :data:`NOT_JSON_TEXT`, prose where a parser
            expects JSON.
        NOT_FOUND: HTTP 404 ``model_not_found``, as for a model the provider withdrew
            (with ``after=k`` in :meth:`LLMTestServer.inject`: a model that vanishes after
            ``k`` answers).
        UNAUTHORIZED: HTTP 401 whose message echoes the whole API key the request presented
            (the worst a provider or proxy does), to prove nothing writes it down.
    """

    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    BAD_GATEWAY = "bad_gateway"
    HANG = "hang"
    MALFORMED_JSON = "malformed_json"
    TRUNCATED_STREAM = "truncated_stream"
    EMPTY_CONTENT = "empty_content"
    REFUSAL = "refusal"
    NOT_JSON_CONTENT = "not_json_content"
    NOT_FOUND = "not_found"
    UNAUTHORIZED = "unauthorized"


_ERROR_STATUS = {
    Fault.RATE_LIMIT: (429, "rate_limit_error", "rate_limit_exceeded", "Rate limit exceeded"),
    Fault.SERVER_ERROR: (500, "server_error", "internal_server_error", "Internal server error"),
    Fault.BAD_GATEWAY: (502, "server_error", "bad_gateway", "Upstream provider unavailable"),
}
_CONTENT_FAULTS = {
    Fault.EMPTY_CONTENT: "",
    Fault.REFUSAL: REFUSAL_TEXT,
    Fault.NOT_JSON_CONTENT: NOT_JSON_TEXT,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedRequest:
    """One HTTP request the server received, in arrival order.

    Attributes:
        method: ``"GET"`` or ``"POST"``.
        path: The request path, e.g. ``"/v1/chat/completions"``.
        body: The decoded JSON body, or ``None`` for a request without one (or with a body
            that is not a JSON object).
        headers: Request headers with lower-case names. They may hold the API key
            (``authorization``), so they are left out of ``repr`` and never logged.
    """

    method: str
    path: str
    body: dict[str, Any] | None
    headers: dict[str, str] = field(repr=False)

    @property
    def model(self) -> str | None:
        """The ``model`` the body asked for, if any."""
        if self.body is None:
            return None
        model = self.body.get("model")
        return model if isinstance(model, str) else None


def count_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Count the prompt tokens the server reports for ``messages``.

    The count is ``ceil(text characters / CHARS_PER_TOKEN)`` over all messages, plus
    :data:`TOKENS_PER_MESSAGE` per message and :data:`IMAGE_PROMPT_TOKENS` per ``image_url``
    content part.

    Args:
        messages: Chat messages as sent in the request body.

    Returns:
        The number of prompt tokens.
    """
    chars = 0
    images = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, Sequence):
            for part in content:
                if not isinstance(part, Mapping):
                    continue
                if part.get("type") == "image_url":
                    images += 1
                elif isinstance(part.get("text"), str):
                    chars += len(part["text"])
    return (
        math.ceil(chars / CHARS_PER_TOKEN)
        + TOKENS_PER_MESSAGE * len(messages)
        + IMAGE_PROMPT_TOKENS * images
    )


def count_completion_tokens(content: str) -> int:
    """Count the completion tokens the server reports for an answer.

    Args:
        content: The answer's text.

    Returns:
        ``ceil(len(content) / CHARS_PER_TOKEN)``.
    """
    return math.ceil(len(content) / CHARS_PER_TOKEN)


@dataclass(slots=True)
class _Injection:
    fault: Fault
    remaining: int | None
    retry_after_s: float
    after: int = 0


@dataclass(frozen=True, slots=True)
class _Answer:
    content: str
    finish_reason: str
    usage: Mapping[str, Any]
    model: str | None
    provider: str | None


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


def _check_script(name: str, script: object) -> None:
    if isinstance(script, str) or callable(script):
        return
    if isinstance(script, Mapping):
        _check_reply(name, script)
        return
    if isinstance(script, Sequence) and script:
        for reply in script:
            if not isinstance(reply, str):
                _check_reply(name, reply)
        return
    raise TypeError(
        f"models[{name!r}] is {script!r}; give a reply string, a non-empty list of replies, "
        "or a callable (request_body) -> str | dict"
    )


def _check_reply(model: str, reply: object) -> None:
    if not isinstance(reply, Mapping):
        raise TypeError(
            f"the script for {model!r} gave {reply!r}; a reply is a string or a dict with "
            f"keys among {sorted(_REPLY_KEYS)}"
        )
    unknown = set(reply) - _REPLY_KEYS
    if unknown:
        raise TypeError(
            f"the script for {model!r} gave a reply with unknown keys {sorted(unknown)}; "
            f"allowed keys are {sorted(_REPLY_KEYS)}"
        )
    if not isinstance(reply.get("content", ""), str):
        raise TypeError(f"the script for {model!r} gave non-string content {reply['content']!r}")
    if not isinstance(reply.get("usage", {}), Mapping):
        raise TypeError(f"the script for {model!r} gave usage {reply['usage']!r}; give a dict")


def _answer_from(model: str, reply: object) -> _Answer:
    if isinstance(reply, str):
        return _Answer(reply, "stop", {}, None, None)
    _check_reply(model, reply)
    assert isinstance(reply, Mapping)
    return _Answer(
        content=reply.get("content", ""),
        finish_reason=reply.get("finish_reason", "stop"),
        usage=reply.get("usage", {}),
        model=reply.get("model"),
        provider=reply.get("provider"),
    )


def _deep_merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _error_body(message: str, error_type: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, owner: LLMTestServer, port: int) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn, a reverse DNS lookup; skip it.
        TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; keep the error for tests instead.
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, ConnectionError | TimeoutError):
            self.owner._record_error(error)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LLMTestServer/1"
    server: _HTTPServer

    # -- plumbing --------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm
        # and the client's delayed ACK add ~40 ms to every response.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.owner._lock:
            self.server.owner._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.owner._lock:
            self.server.owner._connections.discard(self.connection)
        with contextlib.suppress(OSError):  # the client (or stop()) closed the connection
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        # Never log: request lines and headers may carry an API key.
        pass

    def send_response(self, code: int, message: str | None = None) -> None:
        # The default adds a wall-clock Date header; responses must be deterministic.
        self.send_response_only(code, message)
        self.send_header("Server", self.server_version)

    def _send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send_bytes(status, _dumps(payload), "application/json", headers)

    def _send_bytes(
        self,
        status: int,
        data: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_error(self, status: int, message: str, error_type: str, code: str) -> None:
        self._send_json(status, _error_body(message, error_type, code))

    def _receive(self) -> ReceivedRequest:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        body: dict[str, Any] | None = None
        if raw:
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = None
            body = decoded if isinstance(decoded, dict) else None
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = ReceivedRequest(method=self.command, path=self.path, body=body, headers=headers)
        self.server.owner._record(request)
        return request

    def _guarded(self, handler: Callable[[ReceivedRequest], None]) -> None:
        try:
            handler(self._receive())
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    # -- routes ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._guarded(self._get)

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _get(self, request: ReceivedRequest) -> None:
        owner = self.server.owner
        path = request.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            data = [self._model_object(m) for m in owner._listed_models()]
            self._send_json(200, {"object": "list", "data": data})
        elif path.startswith("/v1/models/"):
            model = unquote(path.removeprefix("/v1/models/"))
            if model in owner._listed_models():
                self._send_json(200, self._model_object(model))
            else:
                self._model_not_found(model)
        else:
            self._send_error(404, f"no route GET {path}", "invalid_request_error", "not_found")

    def _post(self, request: ReceivedRequest) -> None:
        path = request.path.split("?", 1)[0].rstrip("/")
        if path != "/v1/chat/completions":
            self._send_error(404, f"no route POST {path}", "invalid_request_error", "not_found")
            return
        body = request.body
        if body is None or not isinstance(body.get("model"), str):
            self._send_error(
                400,
                "the request body must be a JSON object with a string `model`",
                "invalid_request_error",
                "invalid_request",
            )
            return
        try:
            self._chat(body["model"], body)
        except (ConnectionError, TimeoutError):
            raise
        except Exception as error:  # a failing script: answer 500 and keep the error
            self.server.owner._record_error(error)
            self._send_error(
                500, f"LLMTestServer script error: {error!r}", "server_error", "script_error"
            )

    def _chat(self, model: str, body: dict[str, Any]) -> None:
        owner = self.server.owner
        if owner._latency_s and owner._stopping.wait(owner._latency_s):
            self.close_connection = True
            return
        with owner._lock:
            served = owner._script_for(model) is not None
        if not served:
            self._model_not_found(model)
            return
        injection = owner._take_fault(model)
        fault = injection.fault if injection else None
        stream = bool(body.get("stream"))

        if injection is not None and fault in _ERROR_STATUS:
            status, error_type, code, message = _ERROR_STATUS[injection.fault]
            headers = {}
            if fault is Fault.RATE_LIMIT:
                headers["Retry-After"] = _format_seconds(injection.retry_after_s)
            self._send_json(status, _error_body(message, error_type, code), headers)
            return
        if fault is Fault.NOT_FOUND:
            self._model_not_found(model)
            return
        if fault is Fault.UNAUTHORIZED:
            presented = self.headers.get("Authorization", "").removeprefix("Bearer ")
            self._send_error(
                401,
                f"Incorrect API key provided: {presented}",
                "invalid_request_error",
                "invalid_api_key",
            )
            return
        if fault is Fault.HANG and owner._stopping.wait(owner._hang_s):
            self.close_connection = True  # shutting down: drop the request unanswered
            return
        if fault is Fault.MALFORMED_JSON:
            if stream:
                self._send_bytes(200, b"data: " + _MALFORMED_BODY + b"\n\n", "text/event-stream")
            else:
                self._send_bytes(200, _MALFORMED_BODY, "application/json")
            return

        if fault in _CONTENT_FAULTS:
            answer = _Answer(_CONTENT_FAULTS[fault], "stop", {}, None, None)
        else:
            reply = owner._next_reply(model, body, advance=fault is not Fault.TRUNCATED_STREAM)
            if reply is None:  # removed while we waited
                self._model_not_found(model)
                return
            answer = reply
        completion = owner._completion(model, body, answer)
        truncated = fault is Fault.TRUNCATED_STREAM
        if stream:
            self._stream(body, completion, truncated=truncated)
        elif truncated:
            data = _dumps(completion)
            self._send_bytes(200, data[: len(data) // 2], "application/json")
        else:
            self._send_json(200, completion)

    def _stream(self, body: dict[str, Any], completion: dict[str, Any], *, truncated: bool) -> None:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        choice = completion["choices"][0]
        content: str = choice["message"]["content"]
        if truncated:
            content = content[: len(content) // 2]
        pieces = [
            content[i : i + _STREAM_PIECE_CHARS]
            for i in range(0, len(content), _STREAM_PIECE_CHARS)
        ]
        base = {
            "id": completion["id"],
            "provider": completion["provider"],
            "model": completion["model"],
            "object": "chat.completion.chunk",
            "created": completion["created"],
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            event: dict[str, Any] = {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "finish_reason": finish_reason,
                        "native_finish_reason": finish_reason,
                        "logprobs": None,
                    }
                ],
            }
            if include_usage:
                event["usage"] = None
            return event

        events = [chunk({"role": "assistant", "content": ""}, None)]
        events += [chunk({"content": piece}, None) for piece in pieces]
        if not truncated:
            events.append(chunk({}, choice["finish_reason"]))
            if include_usage:
                events.append({**base, "choices": [], "usage": completion["usage"]})

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        if truncated:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        frames = [b"data: " + _dumps(event) + b"\n\n" for event in events]
        if not truncated:
            frames.append(b"data: [DONE]\n\n")
        for frame in frames:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _model_object(self, model: str) -> dict[str, Any]:
        return {
            "id": model,
            "object": "model",
            "created": _CREATED_EPOCH,
            "owned_by": self.server.owner._provider(model),
        }

    def _model_not_found(self, model: str) -> None:
        owner = self.server.owner
        with owner._lock:
            message = owner._unknown_model_message(model)
        self._send_error(404, message, "invalid_request_error", "model_not_found")
