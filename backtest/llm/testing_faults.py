"""The fault modes of the loopback test server: how real providers fail, on demand.

:class:`Fault` names each failure (HTTP errors with their status, dropped and hung
connections, malformed bodies, truncated streams, empty, refused and prose answers);
:meth:`backtest.llm.testing.LLMTestServer.inject` queues them per model and the HTTP layer
(:mod:`backtest.llm.testing_http`) acts them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["NOT_JSON_TEXT", "REFUSAL_TEXT", "Fault"]


REFUSAL_TEXT = "I'm sorry, but I can't help with that."
"""The content :attr:`Fault.REFUSAL` answers with."""

NOT_JSON_TEXT = (
    "Looking at the recent bars, momentum is fading and volume is thin, so I would lean "
    "cautiously bullish but keep the position small until the breakout is confirmed."
)
"""The prose :attr:`Fault.NOT_JSON_CONTENT` answers with instead of the scripted JSON."""


_MALFORMED_BODY = b"<html><body><h1>upstream error</h1><p>{not json</p></body></html>"


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


@dataclass(slots=True)
class _Injection:
    fault: Fault
    remaining: int | None
    retry_after_s: float
    after: int = 0
