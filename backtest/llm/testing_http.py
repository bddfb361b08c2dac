"""The loopback test server's HTTP protocol: the OpenAI chat and model-list endpoints.

``POST /v1/chat/completions`` (plain JSON and ``stream: true`` server-sent events), ``GET
/v1/models`` and ``GET /v1/models/{id}``, with OpenAI-shaped error bodies. The handler never
logs a request line or header (they may carry an API key); it asks its owner, the
:class:`backtest.llm.testing.LLMTestServer` (seen here through :class:`_Owner`), for the next
reply or fault and records every request there.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Protocol
from urllib.parse import unquote

from backtest.llm.testing_faults import (
    _CONTENT_FAULTS,
    _ERROR_STATUS,
    _MALFORMED_BODY,
    Fault,
    _Injection,
)
from backtest.llm.testing_scripts import _CREATED_EPOCH, ReceivedRequest, Script, _Answer

__all__: list[str] = []


class _Owner(Protocol):
    """What the HTTP layer uses of the :class:`~backtest.llm.testing.LLMTestServer` it serves
    (a protocol, so this module need not import the server that imports it)."""

    _lock: threading.Lock
    _stopping: threading.Event
    _connections: set[socket.socket]
    _latency_s: float
    _hang_s: float

    def _script_for(self, model: str) -> Script | None: ...
    def _unknown_model_message(self, model: str) -> str: ...
    def _listed_models(self) -> list[str]: ...
    def _record(self, request: ReceivedRequest) -> None: ...
    def _record_error(self, error: BaseException) -> None: ...
    def _take_fault(self, model: str) -> _Injection | None: ...
    def _next_reply(self, model: str, body: dict[str, Any], *, advance: bool) -> _Answer | None: ...
    def _provider(self, model: str) -> str: ...
    def _completion(self, model: str, body: dict[str, Any], answer: _Answer) -> dict[str, Any]: ...


_STREAM_PIECE_CHARS = 16


def _error_body(message: str, error_type: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, owner: _Owner, port: int) -> None:
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
