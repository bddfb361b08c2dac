"""Immutable records of LLM usage and calls, shared by the client, cassette and pricing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LLMCall", "Usage"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token usage one response reports (OpenAI / OpenRouter ``usage`` object).

    Attributes:
        prompt_tokens: Input tokens, cached ones included.
        completion_tokens: Output tokens, reasoning tokens included.
        cached_prompt_tokens: Input tokens served from the provider's prompt cache
            (``prompt_tokens_details.cached_tokens``).
        cache_write_tokens: Input tokens written to the provider's prompt cache.
        reasoning_tokens: Output tokens spent on reasoning
            (``completion_tokens_details.reasoning_tokens``).
        image_inputs: Number of images in the request.
        reported_cost_usd: The cost the provider reported (OpenRouter's ``usage.cost``),
            when it did.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    image_inputs: int = 0
    reported_cost_usd: float | None = None

    @classmethod
    def from_openai(cls, usage: Any, *, image_inputs: int = 0) -> Usage:
        """Read an SDK ``CompletionUsage`` (or its dict form), tolerating missing fields."""
        if usage is None:
            return cls(image_inputs=image_inputs)
        data = usage if isinstance(usage, dict) else usage.model_dump()
        prompt_details = data.get("prompt_tokens_details") or {}
        completion_details = data.get("completion_tokens_details") or {}
        cost = data.get("cost")
        return cls(
            prompt_tokens=int(data.get("prompt_tokens") or 0),
            completion_tokens=int(data.get("completion_tokens") or 0),
            cached_prompt_tokens=int(prompt_details.get("cached_tokens") or 0),
            cache_write_tokens=int(prompt_details.get("cache_write_tokens") or 0),
            reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
            image_inputs=image_inputs,
            reported_cost_usd=None if cost is None else float(cost),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, as stored in a cassette."""
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMCall:
    """One LLM call as the ledger records it (a row of ``llm_calls.parquet``).

    ``cost_usd`` is the economic cost of the answer, recorded once and identical on every
    replay; ``spend_usd`` is what this run actually paid (0 on a cassette hit).
    ``http_status`` is the provider's HTTP status (None when no HTTP response came back:
    refused connection, timeout, the offline analyst). ``answer_error`` is why an answer that
    did come back gave no usable signal (``truncated``, ``unknown_keys``...: the strategy's
    parser sets it) and ``raw_answer`` then keeps its text.
    """

    role: str
    model_requested: str
    model_served: str = ""
    provider: str = ""
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    spend_usd: float = 0.0
    cost_source: str = "table"
    cache: str = "live"
    fallback_from: str = ""
    retries: int = 0
    error: str = ""
    latency_ms: float = 0.0
    prompt_version: str = ""
    finish_reason: str = ""
    http_status: int | None = None
    answer_error: str = ""
    raw_answer: str = ""

    def to_row(self) -> dict[str, Any]:
        """The ``llm_calls.parquet`` columns this record fills."""
        return asdict(self)
