"""The ``response_format`` a request asks for: JSON by construction, chosen per model called.

A strict JSON schema where the model's provider takes one (OpenAI, Qwen, llama.cpp's server,
vLLM: every property required, no other key, so a weak model cannot stop early or add
keys), ``{"type": "json_object"}`` where it takes no schema (DeepSeek, Moonshot), or none at
all. The router asks for each model actually called, so a fallback gets its own format; a
routing file may override it per model (``[models."<id>"] response_format = ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backtest.errors import ConfigError

__all__ = [
    "GRAMMAR_LIST_ITEMS",
    "GRAMMAR_TEXT_CHARS",
    "JSON_OBJECT_ONLY",
    "RESPONSE_FORMATS",
    "bounded_json_schema",
    "response_format_for",
    "strict_json_schema",
]

#: Model-id prefixes whose providers accept only ``{"type": "json_object"}`` (no JSON schema).
JSON_OBJECT_ONLY: tuple[str, ...] = ("deepseek/", "deepseek-", "moonshotai/", "moonshot-")
#: What a routing file's ``[models."<id>"] response_format`` may say.
RESPONSE_FORMATS: tuple[str, ...] = ("json_schema", "json_object", "json_object_schema", "none")
#: Characters of a free-text field, and items of a list, a grammar-constrained answer may
#: hold (``json_object_schema``); the role parsers keep no more than this anyway.
GRAMMAR_TEXT_CHARS = 160
GRAMMAR_LIST_ITEMS = 3


def strict_json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` as strict mode needs it: every property required, no other key allowed.

    OpenAI's strict mode rejects a schema whose ``required`` misses a property, and
    llama.cpp turns the schema into a grammar, where an optional key lets a weak model stop
    early; a field that may be empty is nullable instead.
    """
    out = dict(schema)
    properties = dict(out.get("properties") or {})
    out["required"] = list(properties)
    out["additionalProperties"] = False
    return out


def bounded_json_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with a ``maxLength`` on every free string and a ``maxItems`` on every list.

    For llama.cpp, which compiles the schema into a grammar: without bounds a small model
    may fill ``max_tokens`` with one string, and the cut-off answer is an abstain.
    """

    def bound(node: Any) -> Any:
        if isinstance(node, list):
            return [bound(n) for n in node]
        if not isinstance(node, Mapping):
            return node
        out = {k: bound(v) for k, v in node.items()}
        if out.get("type") == "string" and "enum" not in out:
            out.setdefault("maxLength", GRAMMAR_TEXT_CHARS)
        if out.get("type") == "array":
            out.setdefault("maxItems", GRAMMAR_LIST_ITEMS)
            items = out.get("items")
            if isinstance(items, dict) and items.get("type") == "string":
                out["items"] = {**items, "maxLength": GRAMMAR_TEXT_CHARS // 4}
        return out

    return dict(bound(schema))


def response_format_for(
    model: str,
    schema: Mapping[str, Any],
    name: str,
    kind: str | None = None,
    *,
    local: bool = False,
) -> dict[str, Any] | None:
    """Ask ``model`` for JSON by construction.

    Args:
        model: The model actually called (a fallback's own id, not the role's primary).
        schema: The answer's JSON schema.
        name: The schema's name (the role).
        kind: ``json_schema``, ``json_object``, ``json_object_schema`` or ``none`` (no
            ``response_format`` sent), from the routing file's per-model override; None
            chooses by provider and model id: ``json_object_schema`` on a local server, else
            a strict JSON schema, except ``json_object`` for the providers that take no
            schema (DeepSeek, Moonshot). The parser validates the answer either way.
        local: The model is served by llama.cpp on this machine. ``json_object_schema`` is
            llama.cpp's form, ``{"type": "json_object", "schema": ...}`` (llama-cpp-python
            rejects ``json_schema``; llama-server takes both): the strict schema with bounded
            strings and lists (:func:`bounded_json_schema`) becomes a grammar, so even a 135M
            model answers in the role's shape without rambling into ``max_tokens``.

    Raises:
        ConfigError: ``kind`` is not one of :data:`RESPONSE_FORMATS`.
    """
    if kind is None and local:
        kind = "json_object_schema"
    if kind is None:
        kind = "json_object" if model.startswith(JSON_OBJECT_ONLY) else "json_schema"
    if kind == "none":
        return None
    if kind == "json_object_schema":
        return {"type": "json_object", "schema": bounded_json_schema(strict_json_schema(schema))}
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise ConfigError(
            f"response_format {kind!r} for model {model!r} is not one of "
            f"{', '.join(RESPONSE_FORMATS)}. Fix: use one of them in the routing file's "
            f'[models."{model}"] table.'
        )
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": strict_json_schema(schema), "strict": True},
    }
