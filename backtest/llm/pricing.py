"""Versioned LLM price tables: what a call cost, and what the same tokens would cost elsewhere.

Prices live in ``prices.toml`` beside this module (or any file of the same shape). One file
holds several named tables -- ``seed`` (the figures of the design document),
``openrouter`` (OpenRouter's listed prices), ``western_reference`` (GPT-4 Turbo and Claude
3.5 Sonnet, with the Western ``equivalent`` of each Chinese model) and ``deepseek_direct``
(DeepSeek's own API, dated) -- so a run can price its usage with one table and re-price the
very same tokens with another::

    openrouter = PriceTable.load(table="openrouter")
    western = PriceTable.load(table="western_reference")
    cost = openrouter.cost("deepseek/deepseek-chat", usage, at=date(2026, 9, 1))
    multiple = openrouter.savings_multiple(calls, western)  # "x times cheaper"

All prices are USD per million tokens, except ``per_image`` and ``per_request`` (USD each).
A model may have several dated entries; a call is priced at the entry in force on its date
(the latest ``effective_from`` on or before it; an entry without ``effective_from`` holds
for every date before the next one).
"""

from __future__ import annotations

import difflib
import json
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from backtest.errors import ConfigError, PricingError
from backtest.llm.records import Usage

__all__ = [
    "IMAGE_PART_TOKENS",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_REPLY",
    "Cost",
    "ModelPrice",
    "PriceTable",
    "count_prompt_tokens",
    "count_text_tokens",
    "is_local_base_url",
    "load_tables",
    "table_names",
]

#: Tokens charged per chat message for role and separators (OpenAI's cookbook uses 3-4).
TOKENS_PER_MESSAGE = 4
#: Tokens that prime the reply (``<|im_start|>assistant``), counted once per request.
TOKENS_PER_REPLY = 3
#: Tokens assumed per image part. Qwen2.5-VL spends one token per 28x28-pixel patch, so
#: 2,000 tokens cover a ~1.5-megapixel chart (e.g. 1456x1078); GPT-4-class high-detail
#: images cost at most ~1,105. Larger renders must be downscaled or counted by the caller.
IMAGE_PART_TOKENS = 2_000

_PER_MILLION = 1_000_000
_PACKAGE_FILE = "prices.toml"
_MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"
_AS_OF = r"^(\d{4}-(0[1-9]|1[0-2])(-\d{2})?|undated)$"
_TABLE_KEYS = frozenset({"description", "models", "aliases", "equivalent"})
_FILE_KEYS = frozenset({"version", "currency", "notes", "tables"})
_RESERVED_ENTRY_KEYS = frozenset({"model", "table", "alias"})
_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


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


#: A model id in a price table that prices every model the table does not list (the
#: ``local`` table: whatever a local server serves costs $0).
ANY_MODEL = "*"


@dataclass(frozen=True, slots=True)
class PriceTable:
    """One named price table from a prices file; immutable.

    Build it with :meth:`load`. ``aliases`` maps other ids (e.g. the seed's) to a priced
    model; ``equivalents`` maps a model of another table to this table's model that it is
    compared with (used by :meth:`reprice` when re-pricing into this table).

    Attributes:
        name: The table's name in the file.
        version: The file's ``version``.
        currency: Always ``"USD"``.
        source_file: Where the table was read from.
        description: The table's description.
        aliases: Alias id -> priced model id.
        equivalents: Foreign model id -> this table's model id.
    """

    name: str
    version: str
    currency: str
    source_file: str
    description: str
    _entries: Mapping[str, tuple[ModelPrice, ...]] = field(repr=False)
    aliases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    equivalents: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __hash__(self) -> int:
        return hash((self.name, self.version, self.source_file))

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path: str | Path | None = None, table: str = "openrouter") -> PriceTable:
        """Read one table from a prices file.

        Args:
            path: A TOML prices file; None reads the ``prices.toml`` packaged with
                :mod:`backtest.llm`.
            table: The table's name in the file.

        Returns:
            The table.

        Raises:
            ConfigError: The file cannot be read, an entry is malformed (negative price,
                missing field, unknown key), or there is no table by that name.
        """
        label, data = _read_prices(path)
        tables = data["tables"]
        if table not in tables:
            close = difflib.get_close_matches(table, list(tables), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{label}: no price table {table!r}; available: {', '.join(sorted(tables))}."
                f"{hint} Fix: pick one of them (llm.price_table) or add [tables.{table}] "
                f"to {label}."
            )
        return _build_table(label, str(data["version"]), table, tables[table])

    # ------------------------------------------------------------------ lookups

    def names(self) -> tuple[str, ...]:
        """The model ids this table prices (aliases excluded), sorted."""
        return tuple(sorted(self._entries))

    def history(self, model: str) -> tuple[ModelPrice, ...]:
        """Every dated entry of ``model`` (alias resolved), oldest first.

        Raises:
            PricingError: The table has no price for the model.
        """
        return self._entries[self._resolve(model)]

    def price(self, model: str, at: date | None = None) -> ModelPrice:
        """The entry for ``model`` in force on ``at``.

        Args:
            model: A priced model id or one of the table's aliases.
            at: The call's date (a datetime is reduced to its date); None takes the
                latest entry.

        Returns:
            The entry, with ``alias`` set when ``model`` was an alias.

        Raises:
            PricingError: The table has no price for the model, or none in force on ``at``.
        """
        canonical = self._resolve(model)
        entries = self._entries[canonical]
        if at is None:
            chosen = entries[-1]
        else:
            day = at.date() if isinstance(at, datetime) else at
            in_force = [e for e in entries if e.effective_from is None or e.effective_from <= day]
            if not in_force:
                raise PricingError(
                    f"No price for {canonical!r} in force on {day.isoformat()} in price table "
                    f"{self.name!r} ({self.source_file}): its earliest entry holds from "
                    f"{entries[0].effective_from}. Fix: add an earlier entry (or drop "
                    f"effective_from from the earliest one) under "
                    f'[[tables.{self.name}.models."{canonical}"]].'
                )
            chosen = in_force[-1]
        return chosen if canonical == model else chosen.model_copy(update={"alias": model})

    def cost(
        self,
        model: str,
        usage: Usage,
        at: date | None = None,
        *,
        prefer_reported: bool = True,
    ) -> Cost:
        """Price one call's usage.

        The table cost is, per million tokens: uncached prompt tokens at the input price,
        cached prompt tokens at the cached price, cache writes at the cache-write price,
        non-reasoning completion tokens at the output price and reasoning tokens at the
        reasoning price; plus ``per_image`` per image and ``per_request`` once.

        Args:
            model: The model that answered (a priced id or an alias).
            usage: The usage the response reported.
            at: The call's date, for dated prices.
            prefer_reported: Return the provider's reported cost when there is one.

        Returns:
            The cost, its source and its breakdown.

        Raises:
            PricingError: No price for the model (and no reported cost to use), a reported
                cost that is negative, or usage whose parts exceed its totals.
        """
        reported = usage.reported_cost_usd
        if prefer_reported and reported is not None:
            if not math.isfinite(reported) or reported < 0:
                raise PricingError(
                    f"{model!r}: the provider reported a cost of {reported!r} USD; a cost must "
                    "be a finite number >= 0. Fix: pass prefer_reported=False to price the "
                    "tokens from the table instead."
                )
            return Cost(float(reported), "reported", {"reported": float(reported)})
        _check_usage(model, usage)
        price = self.price(model, at)
        uncached = usage.prompt_tokens - usage.cached_prompt_tokens - usage.cache_write_tokens
        breakdown = {
            "input": uncached * price.input_per_million / _PER_MILLION,
            "cached_input": usage.cached_prompt_tokens * price.cached_input_price / _PER_MILLION,
            "cache_write": usage.cache_write_tokens * price.cache_write_price / _PER_MILLION,
            "output": (usage.completion_tokens - usage.reasoning_tokens)
            * price.output_per_million
            / _PER_MILLION,
            "reasoning": usage.reasoning_tokens * price.reasoning_price / _PER_MILLION,
            "images": usage.image_inputs * price.per_image,
            "request": price.per_request,
        }
        return Cost(math.fsum(breakdown.values()), "table", breakdown, price.model)

    def estimate_max_cost(
        self,
        model: str,
        prompt_tokens: int,
        max_tokens: int,
        images: int = 0,
        at: date | None = None,
    ) -> float:
        """The most a call can cost, before it is made (for budgets).

        Every prompt token is billed at the dearest of the input, cached-input and
        cache-write prices (some listings price cache reads above fresh input) and
        all ``max_tokens`` at the dearer of the output and reasoning prices, plus images and
        the per-request fee. Pass a prompt count from :func:`count_prompt_tokens`, which
        over-counts, so the estimate bounds the real cost from above.

        Args:
            model: The model to be called.
            prompt_tokens: The prompt's token count.
            max_tokens: The request's completion cap (reasoning included).
            images: Images in the request.
            at: The call's date.

        Returns:
            USD.

        Raises:
            PricingError: No price for the model.
            ValueError: A negative count.
        """
        if min(prompt_tokens, max_tokens, images) < 0:
            raise ValueError(
                f"token and image counts must be >= 0, got prompt_tokens={prompt_tokens}, "
                f"max_tokens={max_tokens}, images={images}"
            )
        price = self.price(model, at)
        prompt_price = max(
            price.input_per_million, price.cached_input_price, price.cache_write_price
        )
        completion_price = max(price.output_per_million, price.reasoning_price)
        return math.fsum(
            (
                prompt_tokens * prompt_price / _PER_MILLION,
                max_tokens * completion_price / _PER_MILLION,
                images * price.per_image,
                price.per_request,
            )
        )

    # ------------------------------------------------------------------ re-pricing

    def equivalent_in(
        self, other: PriceTable, model: str, model_map: Mapping[str, str] | None = None
    ) -> str:
        """The model of ``other`` that ``model`` (of this table) is compared with.

        Looks in ``model_map``, then in ``other``'s ``equivalent`` entries (for the id as
        given and with this table's aliases resolved), and finally takes the model itself
        when ``other`` prices it.

        Args:
            other: The table to compare with.
            model: A model of this table (or one of its aliases).
            model_map: Explicit model -> model of ``other`` choices, consulted first.

        Returns:
            A model id ``other`` prices (or one of its aliases).

        Raises:
            PricingError: No equivalent is known.
        """
        candidates = [model, self.aliases.get(model, model)]
        for mapping in (model_map or {}, other.equivalents):
            for candidate in candidates:
                if candidate in mapping:
                    return mapping[candidate]
        for candidate in candidates:
            if candidate in other._entries or candidate in other.aliases:
                return candidate
        raise PricingError(
            f"No equivalent of {model!r} in price table {other.name!r} ({other.source_file}). "
            f'Fix: add "{model}" = "<model of {other.name}>" under '
            f"[tables.{other.name}.equivalent], or pass model_map={{{model!r}: ...}}."
        )

    def reprice(
        self,
        usages: Iterable[tuple[str, Usage, date | None]],
        other: PriceTable,
        *,
        model_map: Mapping[str, str] | None = None,
    ) -> float:
        """What the same tokens would have cost at ``other``'s prices.

        Each call's model is replaced by its equivalent in ``other`` (see
        :meth:`equivalent_in`) and its tokens are priced from ``other``'s table; reported
        costs are ignored, since they belong to the model that actually answered.

        Args:
            usages: ``(model, usage, date)`` per call.
            other: The table to price in (e.g. ``western_reference``).
            model_map: Overrides the ``equivalent`` entries, model -> model of ``other``.

        Returns:
            USD.
        """
        total = []
        for model, usage, at in usages:
            target = self.equivalent_in(other, model, model_map)
            total.append(other.cost(target, usage, at, prefer_reported=False).cost_usd)
        return math.fsum(total)

    def savings_multiple(
        self,
        usages: Iterable[tuple[str, Usage, date | None]],
        other: PriceTable,
        *,
        model_map: Mapping[str, str] | None = None,
        prefer_reported: bool = True,
    ) -> float:
        """How many times more the same tokens would have cost at ``other``'s prices.

        Args:
            usages: ``(model, usage, date)`` per call.
            other: The table to compare with.
            model_map: Overrides the ``equivalent`` entries.
            prefer_reported: Use reported costs for this table's side where present.

        Returns:
            ``other``'s cost / this table's cost; ``inf`` when only the latter is 0, and
            1.0 when both are.
        """
        calls = list(usages)
        ours = math.fsum(
            self.cost(m, u, at, prefer_reported=prefer_reported).cost_usd for m, u, at in calls
        )
        theirs = self.reprice(calls, other, model_map=model_map)
        if ours == 0:
            return math.inf if theirs > 0 else 1.0
        return theirs / ours

    # ------------------------------------------------------------------ helpers

    def _resolve(self, model: str) -> str:
        canonical = self.aliases.get(model, model)
        if canonical in self._entries:
            return canonical
        if ANY_MODEL in self._entries:  # e.g. the local table: every served model is $0
            return ANY_MODEL
        known = [*self._entries, *self.aliases]
        close = difflib.get_close_matches(model, known, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise PricingError(
            f"No price for model {model!r} in price table {self.name!r} "
            f"({self.source_file}, version {self.version}).{hint} Fix: add it to a price "
            f'file of your own, as [[tables.{self.name}.models."{model}"]] with '
            "input_per_million, output_per_million, as_of, source and verified (or as an "
            f"alias under [tables.{self.name}.aliases]), and set llm.prices = "
            '"<that file>.toml": it is merged over the shipped table. A model of a local '
            "provider costs $0 by rule and needs no price."
        )


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


def load_tables(path: str | Path | None = None) -> dict[str, PriceTable]:
    """Every table of a prices file, read and validated once, by name.

    Args:
        path: A TOML prices file; None reads the packaged ``prices.toml``.

    Raises:
        ConfigError: The file cannot be read or an entry is malformed.
    """
    label, data = _read_prices(path)
    version = str(data["version"])
    return {
        name: _build_table(label, version, name, raw)
        for name, raw in sorted(data["tables"].items())
    }


def table_names(path: str | Path | None = None) -> tuple[str, ...]:
    """The names of the tables in a prices file, sorted.

    Args:
        path: A TOML prices file; None reads the packaged ``prices.toml``.

    Raises:
        ConfigError: The file cannot be read.
    """
    _, data = _read_prices(path)
    return tuple(sorted(data["tables"]))


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


# ---------------------------------------------------------------------- private helpers


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


def _build_table(label: str, version: str, name: str, raw: Any) -> PriceTable:
    where = f"{label}: tables.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table. Fix: write it as [tables.{name}].")
    unknown = sorted(set(raw) - _TABLE_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}. Fix: use only "
            f"{', '.join(sorted(_TABLE_KEYS))}."
        )
    models = raw.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigError(
            f"{where}.models: a table must price at least one model. Fix: add "
            f'[[tables.{name}.models."<model id>"]] entries.'
        )
    entries: dict[str, tuple[ModelPrice, ...]] = {}
    for model, value in models.items():
        items = value if isinstance(value, list) else [value]
        parsed = [
            _build_entry(
                f'{where}.models."{model}"' + (f"[{i}]" if len(items) > 1 else ""),
                name,
                model,
                item,
            )
            for i, item in enumerate(items)
        ]
        dates = [p.effective_from for p in parsed]
        if len(set(dates)) != len(dates):
            raise ConfigError(
                f'{where}.models."{model}": two entries hold from the same date '
                f"({', '.join(sorted(str(d) for d in dates))}). Fix: give each entry its own "
                "effective_from (at most one may omit it)."
            )
        parsed.sort(key=lambda p: p.effective_from or date.min)
        entries[model] = tuple(parsed)
    aliases = _str_map(f"{where}.aliases", raw.get("aliases", {}))
    for alias, target in aliases.items():
        if alias in entries:
            raise ConfigError(
                f'{where}.aliases."{alias}": the alias is also a priced model. Fix: remove '
                "one of the two."
            )
        if target not in entries:
            raise ConfigError(
                f'{where}.aliases."{alias}" points at {target!r}, which this table does not '
                f"price. Fix: point it at one of {', '.join(sorted(entries))}."
            )
    equivalents = _str_map(f"{where}.equivalent", raw.get("equivalent", {}))
    for foreign, target in equivalents.items():
        if target not in entries and target not in aliases:
            raise ConfigError(
                f'{where}.equivalent."{foreign}" points at {target!r}, which this table does '
                f"not price. Fix: point it at one of {', '.join(sorted(entries))}."
            )
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}.description must be a string.")
    return PriceTable(
        name=name,
        version=version,
        currency="USD",
        source_file=label,
        description=description,
        _entries=MappingProxyType(entries),
        aliases=MappingProxyType(aliases),
        equivalents=MappingProxyType(equivalents),
    )


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
