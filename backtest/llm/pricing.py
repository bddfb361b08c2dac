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
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from backtest.errors import ConfigError, PricingError
from backtest.llm.pricing_entries import (
    _PER_MILLION,
    _TABLE_KEYS,
    LOOPBACK_HOSTS,  # noqa: F401 (its old home)
    Cost,
    ModelPrice,
    _build_entry,
    _check_usage,
    _read_prices,
    _str_map,
    is_local_base_url,
)
from backtest.llm.pricing_tokens import (
    IMAGE_PART_TOKENS,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_REPLY,
    count_prompt_tokens,
    count_text_tokens,
)
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
