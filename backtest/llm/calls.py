"""One LLM call's request, context and result, as :class:`backtest.llm.client.LLMClient`
takes and returns them.

:class:`ChatRequest` holds everything that decides an answer (it is what the cassette key
hashes); :class:`CallContext` says who asked and when (for the ledger and the price date);
:class:`ChatResult` is the answer with its :class:`~backtest.llm.records.LLMCall` record, and
:class:`LLMCallFailed` carries the record of a call whose every attempt failed. Chart images
are rendered only when a request really goes out (:func:`_wire_messages`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backtest.errors import LLMError
from backtest.llm.records import LLMCall, Usage

__all__ = ["CallContext", "ChatRequest", "ChatResult", "LLMCallFailed", "require_parameters"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """One chat completion request, with everything that decides its answer.

    ``prompt_version`` (the template's version) is part of the cassette key, so editing a
    prompt never replays answers to the old one. ``context`` is the structured market context
    the prompt was written from; it is not sent, and only the offline analyst reads it.

    Image parts of ``messages`` may carry ``x_source`` (the hash of the bars a chart was
    drawn from and the renderer's version: what the cassette key uses) and ``x_render``
    (a callable returning PNG bytes, called only when the request really goes out).
    """

    model: str
    messages: tuple[Mapping[str, Any], ...]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    response_format: Mapping[str, Any] | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    tools: tuple[Mapping[str, Any], ...] | None = None
    provider: Mapping[str, Any] | None = None
    models: tuple[str, ...] | None = None
    prompt_version: str = ""
    sample: int = 0
    context: Mapping[str, Any] | None = None

    def as_dict(self, attempt: int) -> dict[str, Any]:
        """The request as the cassette key sees it (attempt number included)."""
        return {
            "model": self.model,
            "messages": [dict(m) for m in self.messages],
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "response_format": None if self.response_format is None else dict(self.response_format),
            "seed": self.seed,
            "stop": None if self.stop is None else list(self.stop),
            "tools": None if self.tools is None else [dict(t) for t in self.tools],
            "provider": None if self.provider is None else dict(self.provider),
            "models": None if self.models is None else list(self.models),
            "prompt_version": self.prompt_version or None,
            "sample": self.sample,
            "attempt": attempt,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CallContext:
    """Where a call comes from, for the ledger and for error messages."""

    strategy: str = ""
    timestamp: str = ""
    role: str = ""
    prompt_version: str = ""
    fallback_from: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatResult:
    """A successful answer.

    Attributes:
        content: The message text.
        finish_reason: Why generation stopped.
        usage: Tokens (and the provider's reported cost) of the answer.
        model_served: The model id the provider says it used.
        provider: The upstream provider OpenRouter routed to.
        call: The ledger record (``cost_usd``, ``spend_usd``, cache, retries...).
        raw: The response body.
        refusal: The model's refusal message (OpenAI's ``message.refusal``), when it refused.
    """

    content: str
    finish_reason: str
    usage: Usage
    model_served: str
    provider: str
    call: LLMCall
    raw: Mapping[str, Any]
    refusal: str = ""


def require_parameters(provider: Mapping[str, Any] | None) -> dict[str, Any]:
    """OpenRouter provider preferences that route only to providers honouring every
    requested parameter (``response_format`` among them)."""
    return {**dict(provider or {}), "require_parameters": True}


class LLMCallFailed(LLMError):
    """Every attempt of a call failed; carries the ledger record of the last one."""

    def __init__(self, message: str, call: LLMCall, kind: str) -> None:
        super().__init__(message)
        self.call = call
        self.kind = kind


def _image_count(messages: Any) -> int:
    count = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            count += sum(
                1 for p in content if isinstance(p, Mapping) and p.get("type") == "image_url"
            )
    return count


def _wire_messages(messages: Any) -> list[dict[str, Any]]:
    """Messages as sent: images rendered now (only now) and the x_ fields removed."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, Mapping) and part.get("type") == "image_url":
                    render = part.get("x_render")
                    if render is not None:
                        png = render()
                        url = "data:image/png;base64," + base64.b64encode(png).decode()
                    else:
                        url = part["image_url"]["url"]
                    parts.append({"type": "image_url", "image_url": {"url": url}})
                else:
                    parts.append({k: v for k, v in dict(part).items() if not k.startswith("x_")})
            message = {**message, "content": parts}
        out.append(dict(message))
    return out
