"""Which prices a run uses: a shipped table, or a user's price file merged over it.

``llm.prices`` (the ``prices`` parameter of an LLM strategy) names either a table of the
shipped ``backtest/llm/prices.toml`` (``"openrouter"``, the default; ``"seed"``...) or a
price file of your own (a path ending in ``.toml``, relative to the working directory, like
``routing``). A user file has the shipped file's shape; its table of the same name as the
base table (``openrouter`` unless ``"my.toml#seed"`` names another), or its only table, is
merged over the shipped one: a model it prices replaces the shipped entries of that model,
its aliases (which point at models of the same file) and equivalents are added. So a new
model or a negotiated price needs a few lines, not a copy of the whole table::

    version = "2026-12-01"
    [[tables.openrouter.models."my-org/finetuned-7b"]]
    input_per_million = 0.10
    output_per_million = 0.20
    as_of = "2026-12-01"
    source = "our invoice"
    verified = true

A model that no table prices stays an error (:class:`~backtest.errors.PricingError`) that
says how to add it. Models served by a local provider (a profile with ``local``, see
:class:`~backtest.llm.client.ProviderProfile` and
:func:`~backtest.llm.pricing.is_local_base_url`) cost $0 by rule and need no price.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from backtest.errors import ConfigError
from backtest.llm.pricing import PriceTable, load_tables

__all__ = ["DEFAULT_TABLE", "load_prices", "merge_price_file", "price_file_of"]

#: The shipped table a run prices with unless ``llm.prices`` says otherwise.
DEFAULT_TABLE = "openrouter"


def price_file_of(spec: str) -> tuple[Path | None, str]:
    """Split ``llm.prices`` into (a user price file or None, the base table's name)."""
    path, _, table = spec.partition("#")
    if path.endswith(".toml"):
        return Path(path), table or DEFAULT_TABLE
    return None, spec


def merge_price_file(base: PriceTable, path: str | Path) -> PriceTable:
    """``base`` with the matching table of the price file at ``path`` merged over it.

    Raises:
        ConfigError: The file cannot be read or is malformed, or it has several tables and
            none named like ``base``.
    """
    tables = load_tables(path)
    if base.name in tables:
        own = tables[base.name]
    elif len(tables) == 1:
        own = next(iter(tables.values()))
    else:
        raise ConfigError(
            f"{path}: none of its price tables ({', '.join(sorted(tables))}) is named "
            f"{base.name!r}, the table it is merged over. Fix: name the table "
            f"[tables.{base.name}], or keep one table only, or set llm.prices = "
            f'"{path}#<table>" to merge over another shipped table.'
        )
    entries = {**base._entries, **own._entries}
    aliases = {a: t for a, t in base.aliases.items() if a not in own._entries}
    aliases.update(own.aliases)
    return PriceTable(
        name=base.name,
        version=f"{base.version}+{own.version}",
        currency="USD",
        source_file=f"{base.source_file} with {path} merged over it",
        description=base.description,
        _entries=MappingProxyType(entries),
        aliases=MappingProxyType(aliases),
        equivalents=MappingProxyType({**base.equivalents, **own.equivalents}),
    )


def load_prices(spec: str = DEFAULT_TABLE) -> PriceTable:
    """The price table ``llm.prices`` names (see the module docstring).

    Raises:
        ConfigError: No such shipped table, or a user file that cannot be merged.
    """
    path, table = price_file_of(spec)
    base = PriceTable.load(table=table)
    return base if path is None else merge_price_file(base, path)
