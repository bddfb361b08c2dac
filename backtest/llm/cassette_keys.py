"""What a cassette line is filed under, and what it may never contain.

:func:`request_key` is the sha256 of the canonical request (:func:`canonical_request`: the
fields that decide an answer, an image replaced by the hash of what it was drawn from; never
the API key, headers or base URL). :func:`scrub` removes the values of the API-key
environment variables (:data:`SECRET_ENV_VARS` and every ``*_API_KEY``) and key-shaped text
from everything written. The cassette itself is :class:`backtest.llm.cassette.Cassette`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["SECRET_ENV_VARS", "canonical_request", "request_key", "scrub"]


#: Environment variables whose values are never written anywhere (with every other variable
#: whose name ends in ``_API_KEY``).
SECRET_ENV_VARS: tuple[str, ...] = (
    "OPENROUTER_API_KEY",
    "DEEPSEEK_API_KEY",
    "QWEN_API_KEY",
    "DASHSCOPE_API_KEY",
    "MOONSHOT_API_KEY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
)
_KEY_SHAPES = re.compile(
    r"(sk-or-v1-[A-Za-z0-9]{8,}|sk-[A-Za-z0-9_\-]{16,}|Bearer\s+[A-Za-z0-9._\-]{8,})"
)
_REDACTED = "[REDACTED]"


_KEY_FIELDS = (
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "response_format",
    "seed",
    "tools",
    "tool_choice",
    "stop",
    "provider",
    "models",
    "prompt_version",
    "sample",
    "attempt",
)


def _canonical_content(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    parts = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") == "image_url":
            source = part.get("x_source")
            if source is None:
                # No source hash given: key on the image bytes themselves.
                url = part.get("image_url", {})
                url = url.get("url", "") if isinstance(url, Mapping) else str(url)
                source = {"sha256": hashlib.sha256(url.encode()).hexdigest()}
            parts.append({"type": "image", "source": source})
        else:
            parts.append(dict(part) if isinstance(part, Mapping) else part)
    return parts


def canonical_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a chat request that decide its answer, in canonical form.

    Keeps :data:`_KEY_FIELDS` only (no API key, header or base URL can enter), drops
    unset values, and replaces each image part by the hash of what it was drawn from
    (its ``x_source`` field, set by the chart renderer) so a replay never renders a chart.
    """
    out: dict[str, Any] = {}
    for name in _KEY_FIELDS:
        value = request.get(name)
        if value is None:
            continue
        if name == "messages":
            value = [
                {k: (_canonical_content(v) if k == "content" else v) for k, v in m.items()}
                for m in value
            ]
        out[name] = value
    return out


def request_key(request: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical request's JSON (sorted keys, no whitespace)."""
    payload = json.dumps(
        canonical_request(request),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


# --------------------------------------------------------------------------- secrets


def _secret_values(extra_env: Iterable[str] = ()) -> list[str]:
    # Any *_API_KEY variable is a secret (OPENAI_COMPATIBLE_API_KEY, a user's own), not
    # only the providers this module knows by name.
    named = [n for n in os.environ if n.upper().endswith("_API_KEY")]
    values = []
    for name in (*SECRET_ENV_VARS, *named, *extra_env):
        value = os.environ.get(name)
        if value and len(value) >= 6:
            values.append(value)
    return sorted(set(values), key=len, reverse=True)


def scrub(value: Any, secrets_: Iterable[str] = ()) -> Any:
    """Return ``value`` with every secret and key-shaped string replaced by ``[REDACTED]``."""
    known = list(secrets_)
    if isinstance(value, str):
        for secret in known:
            if secret in value:
                value = value.replace(secret, _REDACTED)
        return _KEY_SHAPES.sub(_REDACTED, value)
    if isinstance(value, Mapping):
        return {
            k: (
                _REDACTED
                if str(k).lower() in ("authorization", "api-key", "x-api-key")
                else scrub(v, known)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v, known) for v in value]
    return value
