"""What each role must answer, and a parser that never turns a failure into a neutral signal.

Each role's answer is a strict pydantic model: every field is required (a field that may be
empty is nullable or a list, never defaulted) and unknown keys are rejected, so the JSON
schema sent to providers lists every property in ``required`` with
``additionalProperties: false`` (what OpenAI's strict mode and llama.cpp's grammar need).

:func:`parse_answer` finds the JSON object in a model's text (bare, inside a code fence, or
surrounded by prose), validates it, and keeps the lenient coercions that are about *values*:
numbers clamped into range (a signal of 3 becomes 1), a confidence of 85 read as 85 %, case
and synonyms of words ("buy", "Bullish"). The trade ``size`` is a fraction of equity in
[0, 1], as the prompt says: a percentage must say so (``"40%"`` is 0.4); a bare number above
1 (``10``: ten percent, or ten times equity?) is ambiguous and refused as ``invalid_value``,
never guessed, since it sizes real money. It never fills in a missing field.
When nothing usable is left it returns an explicit failure with its reason (one of
:data:`ABSTAIN_REASONS`) and the raw text kept; the caller records an abstain, never a
silent 0:

=================  ===========================================================
``empty``          the answer has no text
``truncated``      generation stopped at ``max_tokens`` (``finish_reason == "length"``)
``refusal``        the model refused (a ``refusal`` message, ``content_filter``)
``not_json``       no JSON object in the text
``unknown_keys``   a JSON object with none of the role's fields, or extra keys
``missing_field``  a required field is absent
``invalid_value``  a field's value is out of its type (an action of "MOON")
=================  ===========================================================
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

__all__ = [
    "ABSTAIN_REASONS",
    "MAX_ANSWER_CHARS",
    "ROLE_SCHEMAS",
    "ChartAnalysis",
    "DataProcessing",
    "DocumentAnalysis",
    "Narrative",
    "Parsed",
    "RoleAnswer",
    "TradingAction",
    "extract_json",
    "parse_answer",
]


def _clamp(value: Any, low: float, high: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return min(max(number, low), high)


class RoleAnswer(BaseModel):
    """Fields every role answers: a signal in [-1, 1], a confidence in [0, 1], reasoning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signal: float
    confidence: float
    reasoning: str

    @field_validator("signal", mode="before")
    @classmethod
    def _signal(cls, value: Any) -> float:
        return _clamp(value, -1.0, 1.0)

    @field_validator("confidence", mode="before")
    @classmethod
    def _confidence(cls, value: Any) -> float:
        number = float(value)
        if number > 1.0 and number <= 100.0:  # a percentage
            number /= 100.0
        return _clamp(number, 0.0, 1.0)

    @field_validator("reasoning", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return "" if value is None else str(value)[:4000]


class ChartAnalysis(RoleAnswer):
    """The chart agent: trend, levels and patterns on the candlestick chart."""

    trend: Literal["up", "down", "sideways"]
    support: float | None
    resistance: float | None
    patterns: list[str]

    @field_validator("trend", mode="before")
    @classmethod
    def _trend(cls, value: Any) -> str:
        text = str(value).strip().lower()
        return {
            "bullish": "up",
            "uptrend": "up",
            "bearish": "down",
            "downtrend": "down",
            "flat": "sideways",
            "range": "sideways",
            "ranging": "sideways",
        }.get(text, text)


class Narrative(RoleAnswer):
    """The narrative agent: market regime, its drivers and risks."""

    regime: Literal["bull", "bear", "ranging", "volatile"]
    drivers: list[str]
    risks: list[str]

    @field_validator("regime", mode="before")
    @classmethod
    def _regime(cls, value: Any) -> str:
        text = str(value).strip().lower()
        return {
            "bullish": "bull",
            "bearish": "bear",
            "range": "ranging",
            "sideways": "ranging",
            "volatility": "volatile",
        }.get(text, text)


class DataProcessing(RoleAnswer):
    """The data agent: order-flow imbalance and volume spikes."""

    order_flow_imbalance: float
    volume_spike: bool

    @field_validator("order_flow_imbalance", mode="before")
    @classmethod
    def _imbalance(cls, value: Any) -> float:
        return _clamp(value, -1.0, 1.0)


class DocumentAnalysis(RoleAnswer):
    """The document agent: sentiment and key points of filings and reports."""

    sentiment: float
    key_points: list[str]

    @field_validator("sentiment", mode="before")
    @classmethod
    def _sentiment(cls, value: Any) -> float:
        return _clamp(value, -1.0, 1.0)


class TradingAction(RoleAnswer):
    """The meta orchestrator's decision (the seed's ``TradingAction``)."""

    action: Literal["BUY", "SELL", "HOLD", "CLOSE"]
    size: float
    risk_level: Literal["low", "medium", "high"]

    @field_validator("action", mode="before")
    @classmethod
    def _action(cls, value: Any) -> str:
        return str(value).strip().upper()

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> float:
        if isinstance(value, str) and value.strip().endswith("%"):
            return _clamp(float(value.strip().rstrip("%")) / 100.0, 0.0, 1.0)
        number = float(value)
        if number > 1.0:
            raise ValueError(
                f"size {number:g} is not a fraction of equity in [0, 1] (a percentage must "
                'say so: "40%")'
            )
        return _clamp(number, 0.0, 1.0)

    @field_validator("risk_level", mode="before")
    @classmethod
    def _risk(cls, value: Any) -> str:
        return str(value).strip().lower()


ROLE_SCHEMAS: dict[str, type[RoleAnswer]] = {
    "chart_analysis": ChartAnalysis,
    "narrative": Narrative,
    "data_processor": DataProcessing,
    "document_analysis": DocumentAnalysis,
    "meta_orchestrator": TradingAction,
}

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


#: Characters of an answer that are searched for its JSON object. A role's answer is a few
#: hundred tokens; a longer one is garbage or hostile, and is only searched this far.
MAX_ANSWER_CHARS = 32_000
_DECODER = json.JSONDecoder()
_OBJECT_START = re.compile(r'\{\s*["}]')


def extract_json(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text``: bare, in a code fence, or inside prose.

    Each ``{`` that can open an object is tried with the C decoder, which gives up at the
    first character that cannot continue one; at most :data:`MAX_ANSWER_CHARS` of the text
    are read, so hostile or garbled answers cost milliseconds, not hours.
    """
    text = text[:MAX_ANSWER_CHARS]
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        # Only a '{' followed by a key or '}' can open an object: a run of '{' or of prose
        # braces costs one regex scan, not a decoder error each (errors count lines).
        for match in _OBJECT_START.finditer(candidate):
            try:
                value, _ = _DECODER.raw_decode(candidate, match.start())
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
    return None


#: Why an answer gave no usable signal (see the module docstring).
ABSTAIN_REASONS: tuple[str, ...] = (
    "empty",
    "truncated",
    "refusal",
    "not_json",
    "unknown_keys",
    "missing_field",
    "invalid_value",
)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed answer, or why there is none (``answer`` None: the caller abstains).

    Attributes:
        answer: The validated answer, or None.
        error: What was wrong, for people ("" when ``answer`` is set).
        raw: The answer's text, verbatim.
        reason: One of :data:`ABSTAIN_REASONS` ("" when ``answer`` is set).
    """

    answer: RoleAnswer | None
    error: str
    raw: str
    reason: str = ""


def _failed(reason: str, error: str, text: str) -> Parsed:
    return Parsed(None, error[:300], text, reason)


def _schema_reason(schema: type[RoleAnswer], data: dict[str, Any], exc: ValidationError) -> str:
    fields = set(schema.model_fields)
    if not fields & set(data):
        return "unknown_keys"  # valid JSON that answers nothing asked ({"on the": true})
    kinds = {e["type"] for e in exc.errors()}
    if "missing" in kinds:
        return "missing_field"
    if "extra_forbidden" in kinds:
        return "unknown_keys"
    return "invalid_value"


def parse_answer(
    role: str, text: str, *, finish_reason: str = "", refusal: str | None = None
) -> Parsed:
    """Parse ``text`` as ``role``'s schema; never raises for a bad answer.

    Args:
        role: A key of :data:`ROLE_SCHEMAS`.
        text: The answer's text.
        finish_reason: Why generation stopped (``"length"``: cut off, so an abstain even
            when what was written happens to parse).
        refusal: The provider's refusal message, when the model refused.
    """
    schema = ROLE_SCHEMAS[role]
    if refusal or finish_reason == "content_filter":
        why = refusal or "the provider's content filter stopped the answer"
        return _failed("refusal", f"the model refused: {why}", text)
    if finish_reason == "length":
        return _failed(
            "truncated",
            "the answer was cut off at max_tokens (finish_reason 'length'). Fix: raise "
            f"max_tokens for {role} in the routing file",
            text,
        )
    if not text.strip():
        return _failed("empty", "empty answer", text)
    data = extract_json(text)
    if data is None:
        return _failed("not_json", "no JSON object in the answer", text)
    try:
        return Parsed(schema.model_validate(data), "", text)
    except ValidationError as exc:
        reason = _schema_reason(schema, data, exc)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(answer)'}: {e['msg']}"
            for e in exc.errors()[:4]
        )
        return _failed(reason, f"invalid {role} answer ({reason}): {problems}", text)
    except (ValueError, TypeError) as exc:
        return _failed("invalid_value", f"invalid {role} answer: {exc}", text)
