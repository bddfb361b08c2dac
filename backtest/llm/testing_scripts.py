"""What the loopback test server answers: scripts, replies and deterministic token counts.

A model's *script* is one reply, replies served in turn, or a callable of the request body;
a reply is the content or a mapping with ``content`` and overrides (``finish_reason``,
``usage``, ``model``, ``provider``). Token counts come from :func:`count_prompt_tokens` and
:func:`count_completion_tokens`, so the same requests always cost the same. The server itself
is :class:`backtest.llm.testing.LLMTestServer`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = [
    "CHARS_PER_TOKEN",
    "IMAGE_PROMPT_TOKENS",
    "TOKENS_PER_MESSAGE",
    "ReceivedRequest",
    "Reply",
    "Script",
    "count_completion_tokens",
    "count_prompt_tokens",
]


_CREATED_EPOCH = 1_700_000_000

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


_REPLY_KEYS = frozenset({"content", "finish_reason", "usage", "model", "provider"})


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


@dataclass(frozen=True, slots=True)
class _Answer:
    content: str
    finish_reason: str
    usage: Mapping[str, Any]
    model: str | None
    provider: str | None


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
