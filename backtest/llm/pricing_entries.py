"""A prices file and its entries: reading, checking and the dated price of one model.

:class:`ModelPrice` is one dated entry (USD per million tokens, per image and per request);
:class:`Cost` is what one call cost under it. The readers check a prices file's keys,
currency and entries and name the file, the key and the fix on every mistake; the tables
they hold are built by :mod:`backtest.llm.pricing`. Also here, the rule that a model served
on this machine costs $0 (:func:`is_local_base_url`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from backtest.errors import ConfigError, PricingError
from backtest.llm.records import Usage

__all__ = [
    "LOOPBACK_HOSTS",
    "Cost",
    "ModelPrice",
    "is_local_base_url",
]


_PER_MILLION = 1_000_000
_PACKAGE_FILE = "prices.toml"
_MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"
_AS_OF = r"^(\d{4}-(0[1-9]|1[0-2])(-\d{2})?|undated)$"
_TABLE_KEYS = frozenset({"description", "models", "aliases", "equivalent"})
_FILE_KEYS = frozenset({"version", "currency", "notes", "tables"})
_RESERVED_ENTRY_KEYS = frozenset({"model", "table", "alias"})


class ModelPrice(BaseModel):
    """One dated price entry of one model in one table.

    Attributes:
        model: The model id the table prices (after alias resolution).
        table: The table the entry belongs to.
        alias: The id the caller asked for when it was an alias of ``model``, else None.
        input_per_million: USD per million uncached prompt tokens.
        output_per_million: USD per million completion tokens.
        cached_input_per_million: USD per million prompt tokens read from the provider's
            cache; None bills them at the input price.
        cache_write_per_million: USD per million prompt tokens written to the cache; None
            bills them at the input price.
        reasoning_per_million: USD per million reasoning tokens; None bills them at the
            output price.
        per_image: USD per image input, for providers that bill images on top of tokens
            (0 when images arrive as prompt tokens, as on OpenRouter).
        per_request: USD per request.
        context_tokens: The context window, when known.
        training_cutoff: ``YYYY-MM`` of the training-data cutoff, when published.
        released: ``YYYY-MM`` the model (version) was released; an upper bound on the
            cutoff when the cutoff itself is not published.
        effective_from: First day the price holds; None holds for every earlier date.
        as_of: When the figure was observed in ``source`` (``YYYY-MM[-DD]`` or ``undated``).
        source: URL, repository@commit or ``seed.md`` the figure comes from.
        verified: Whether the figure was confirmed in the provider's (or OpenRouter's) own
            data; False marks a figure taken on trust (e.g. from the seed document).
        notes: Caveats, in words.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    table: str = Field(min_length=1)
    alias: str | None = None
    input_per_million: float = Field(ge=0, allow_inf_nan=False)
    output_per_million: float = Field(ge=0, allow_inf_nan=False)
    cached_input_per_million: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cache_write_per_million: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    reasoning_per_million: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    per_image: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    per_request: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    context_tokens: int | None = Field(default=None, gt=0)
    training_cutoff: str | None = Field(default=None, pattern=_MONTH)
    released: str | None = Field(default=None, pattern=_MONTH)
    effective_from: date | None = None
    as_of: str = Field(pattern=_AS_OF)
    source: str = Field(min_length=1)
    verified: StrictBool
    notes: str = ""

    @field_validator("as_of", mode="before")
    @classmethod
    def _date_to_text(cls, value: Any) -> Any:
        return value.isoformat() if isinstance(value, date) else value

    @property
    def cached_input_price(self) -> float:
        """USD per million cached prompt tokens (the input price when none is listed)."""
        if self.cached_input_per_million is None:
            return self.input_per_million
        return self.cached_input_per_million

    @property
    def cache_write_price(self) -> float:
        """USD per million cache-write tokens (the input price when none is listed)."""
        if self.cache_write_per_million is None:
            return self.input_per_million
        return self.cache_write_per_million

    @property
    def reasoning_price(self) -> float:
        """USD per million reasoning tokens (the output price when none is listed)."""
        if self.reasoning_per_million is None:
            return self.output_per_million
        return self.reasoning_per_million

    @property
    def cutoff_upper_bound(self) -> str | None:
        """``YYYY-MM`` no earlier than the training cutoff: the cutoff, else the release."""
        return self.training_cutoff or self.released


@dataclass(frozen=True, slots=True)
class Cost:
    """What one call cost and where the figure came from.

    Attributes:
        cost_usd: The cost in USD.
        source: ``"reported"`` (the provider's own figure) or ``"table"`` (priced here).
        breakdown: USD per component (``input``, ``cached_input``, ``cache_write``,
            ``output``, ``reasoning``, ``images``, ``request``; ``reported`` for a
            reported cost); the values sum to ``cost_usd``.
        model: The table entry's model id that priced the call (None when reported).
    """

    cost_usd: float
    source: Literal["reported", "table"]
    breakdown: dict[str, float]
    model: str | None = None


def _check_usage(model: str, usage: Usage) -> None:
    counts = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_prompt_tokens": usage.cached_prompt_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "image_inputs": usage.image_inputs,
    }
    problems = [f"{k}={v} is negative" for k, v in counts.items() if v < 0]
    if usage.cached_prompt_tokens + usage.cache_write_tokens > usage.prompt_tokens:
        problems.append(
            f"cached_prompt_tokens + cache_write_tokens = "
            f"{usage.cached_prompt_tokens + usage.cache_write_tokens} exceeds prompt_tokens="
            f"{usage.prompt_tokens}"
        )
    if usage.reasoning_tokens > usage.completion_tokens:
        problems.append(
            f"reasoning_tokens={usage.reasoning_tokens} exceeds completion_tokens="
            f"{usage.completion_tokens}"
        )
    if problems:
        raise PricingError(
            f"Cannot price the usage reported for {model!r}: {'; '.join(problems)}. Prompt "
            "tokens include cached and cache-write tokens, and completion tokens include "
            "reasoning tokens. Fix: build the Usage with Usage.from_openai from the response."
        )


def _read_prices(path: str | Path | None) -> tuple[str, dict[str, Any]]:
    if path is None:
        label = f"backtest/llm/{_PACKAGE_FILE}"
        try:
            raw = resources.files("backtest.llm").joinpath(_PACKAGE_FILE).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"{label}: the packaged price file cannot be read ({exc}). Fix: reinstall "
                "the package, or pass the path of a prices file."
            ) from exc
    else:
        label = str(path)
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"{label}: cannot read the prices file ({exc.strerror or exc}). Fix: check the "
                "path, or pass None for the packaged prices.toml."
            ) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: not valid TOML ({exc}). Fix: correct the syntax.") from exc
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise ConfigError(
            f"{label}: unknown top-level key(s) {', '.join(unknown)}. Fix: use only "
            f"{', '.join(sorted(_FILE_KEYS))}."
        )
    for key in ("version", "tables"):
        if key not in data:
            raise ConfigError(f"{label}: missing top-level key {key!r}. Fix: add it.")
    if data.get("currency", "USD") != "USD":
        raise ConfigError(
            f"{label}: currency = {data['currency']!r}; every price here is in USD. Fix: "
            'convert the prices and set currency = "USD".'
        )
    if not isinstance(data["tables"], dict) or not data["tables"]:
        raise ConfigError(f"{label}: [tables] must hold at least one named table.")
    return label, data


def _build_entry(where: str, table: str, model: str, raw: Any) -> ModelPrice:
    if not isinstance(raw, dict):
        raise ConfigError(
            f'{where} must be a table of prices. Fix: write it as [[tables.{table}.models."'
            f'{model}"]] with input_per_million, output_per_million, as_of, source, verified.'
        )
    reserved = sorted(_RESERVED_ENTRY_KEYS & set(raw))
    if reserved:
        raise ConfigError(
            f"{where}: key(s) {', '.join(reserved)} are set by the loader, not the file. "
            "Fix: remove them."
        )
    try:
        return ModelPrice(model=model, table=table, **raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"]) or "(entry)"
            got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
            problems.append(f"{where}.{key}: {err['msg']}{got}")
        raise ConfigError(
            "; ".join(problems) + ". Fix: every entry needs input_per_million and "
            "output_per_million (USD per million tokens, >= 0), as_of (YYYY-MM[-DD] or "
            "undated), source and verified (true/false); months are YYYY-MM."
        ) from None


def _str_map(where: str, raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise ConfigError(f'{where} must map model ids to model ids ("a" = "b").')
    return dict(raw)


#: Hosts of a server on this machine: a model served there costs $0 by rule.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def is_local_base_url(url: str | None) -> bool:
    """Whether ``url`` reaches a server on this machine (loopback: 127.0.0.0/8, localhost,
    ::1), whose models cost $0 by rule (llama.cpp, Ollama, vLLM run locally)."""
    if not url:
        return False
    from urllib.parse import urlsplit

    try:
        host = (urlsplit(url if "//" in url else f"//{url}").hostname or "").lower()
    except ValueError:
        return False
    return host in LOOPBACK_HOSTS or host.startswith("127.") or host.endswith(".localhost")
