"""Token accounting before a call: how many prompt tokens a request will be charged.

:func:`count_prompt_tokens` counts a chat request's messages (text, JSON and image parts, plus
:data:`TOKENS_PER_MESSAGE` per message and :data:`TOKENS_PER_REPLY` per request) with
:func:`count_text_tokens`, an upper-bound estimate that needs no tokenizer, so budgets can be
reserved before any call goes out. What a call really used is the provider's
:class:`~backtest.llm.records.Usage`, priced by :class:`backtest.llm.pricing.PriceTable`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "IMAGE_PART_TOKENS",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_REPLY",
    "count_prompt_tokens",
    "count_text_tokens",
]


#: Tokens charged per chat message for role and separators (OpenAI's cookbook uses 3-4).
TOKENS_PER_MESSAGE = 4
#: Tokens that prime the reply (``<|im_start|>assistant``), counted once per request.
TOKENS_PER_REPLY = 3
#: Tokens assumed per image part. Qwen2.5-VL spends one token per 28x28-pixel patch, so
#: 2,000 tokens cover a ~1.5-megapixel chart (e.g. 1456x1078); GPT-4-class high-detail
#: images cost at most ~1,105. Larger renders must be downscaled or counted by the caller.
IMAGE_PART_TOKENS = 2_000


_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


_SINGLE_TOKEN_BYTES = ("0123456789" + "".join(sorted(_ASCII_PUNCT))).encode("ascii")


def count_text_tokens(text: str) -> int:
    """Over-count the tokens of ``text`` for BPE tokenizers without loading one.

    Rule: every ASCII digit and every ASCII punctuation character is one token (Qwen and
    DeepSeek split numbers into single digits, and price tables are mostly digits and
    punctuation); the remaining characters cost ``ceil(UTF-8 bytes / 3)`` together, so
    a CJK character (3 bytes) is one token and English letters a third of one (real
    tokenizers average about four characters per token).

    Args:
        text: Any text.

    Returns:
        The token count, at least ``len(text) / 3``.
    """
    # Digits and punctuation are one byte each in UTF-8, so counting them is deleting them
    # from the bytes (C speed); everything else, ASCII or not, costs its UTF-8 bytes / 3.
    data = text.encode("utf-8", "surrogatepass")
    single = len(data) - len(data.translate(None, _SINGLE_TOKEN_BYTES))
    return single + math.ceil((len(data) - single) / 3)


def count_prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Over-count a chat request's prompt tokens for non-OpenAI tokenizers.

    Rule: :data:`TOKENS_PER_REPLY` once, plus per message :data:`TOKENS_PER_MESSAGE`,
    :func:`count_text_tokens` of its role, name and text (a string ``content`` or each
    ``text`` part), :data:`IMAGE_PART_TOKENS` per image part (``image_url``, ``image``,
    ``input_image``), and the text tokens of the JSON of anything else (tool calls, other
    part types). Used with :meth:`PriceTable.estimate_max_cost` before a call, so it must
    not under-count: for English and Chinese prose it counts at least a third of a token
    per character, a token per CJK character and a token per digit.

    Args:
        messages: Chat messages as sent in the request body.

    Returns:
        The token count.
    """
    total = TOKENS_PER_REPLY
    for message in messages:
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "content":
                total += _content_tokens(value)
            elif isinstance(value, str):
                total += count_text_tokens(value)
            elif value is not None:
                total += count_text_tokens(_as_json(value))
    return total


def _content_tokens(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_text_tokens(content)
    if isinstance(content, Sequence):
        tokens = 0
        for part in content:
            if isinstance(part, str):
                tokens += count_text_tokens(part)
            elif isinstance(part, Mapping) and part.get("type") in (
                "image_url",
                "image",
                "input_image",
            ):
                tokens += IMAGE_PART_TOKENS
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                tokens += count_text_tokens(part["text"])
            else:
                tokens += count_text_tokens(_as_json(part))
        return tokens
    return count_text_tokens(_as_json(content))


def _as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
