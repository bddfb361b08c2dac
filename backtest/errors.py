"""The exceptions hybrid-backtest raises for user mistakes and bad input.

Every error a user can cause derives from :class:`BacktestError`, so the CLI can
turn any of them into one clear message and a non-zero exit without a traceback.
A message says what is wrong, where (file, row or config key), the rule broken,
and how to fix it.

Hierarchy::

    BacktestError
    ├── DataError
    │   ├── DataFormatError          a file that cannot be read as bars or text
    │   ├── DataValidationError      bars or text that break a rule of the schema
    │   └── SourceMissingError       a sample's source package is not installed
    ├── ConfigError                  an experiment or routing file that is wrong
    └── LLMError
        ├── CassetteError            a damaged cassette
        │   └── CassetteMiss         replay-only mode and the call was never recorded
        ├── PricingError             a model with no price
        └── BudgetExceeded           a call that would break the hard budget cap
"""

from __future__ import annotations

__all__ = [
    "BacktestError",
    "BudgetExceeded",
    "CassetteError",
    "CassetteMiss",
    "ConfigError",
    "DataError",
    "DataFormatError",
    "DataValidationError",
    "LLMError",
    "PricingError",
    "SourceMissingError",
]


class BacktestError(Exception):
    """Base class of every error a user can cause; the CLI prints it without a traceback."""


class DataError(BacktestError):
    """Bars, news or documents that cannot be used."""


class DataFormatError(DataError):
    """A file that cannot be read as the expected kind of data."""


class DataValidationError(DataError):
    """Data that breaks one rule of the schema.

    Args:
        source: The file (or a description of the in-memory frame) that holds the data.
        rule: Short machine-readable name of the rule broken, e.g. ``"high_below_body"``.
        message: What is wrong, in words.
        fix: What the user should do about it.
        row: The first offending row, as a timestamp or position, when there is one.
        count: How many rows break the rule.
    """

    def __init__(
        self,
        source: str,
        rule: str,
        message: str,
        fix: str,
        *,
        row: object | None = None,
        count: int | None = None,
    ) -> None:
        self.source = source
        self.rule = rule
        self.row = row
        self.count = count
        self.fix = fix
        where = f"{source}" + (f", row {row}" if row is not None else "")
        many = f" ({count} rows break this rule)" if count and count > 1 else ""
        super().__init__(f"{where}: {message}{many} [rule: {rule}]. Fix: {fix}")


class SourceMissingError(DataError):
    """A bundled sample's source package is not installed."""


class ConfigError(BacktestError):
    """An experiment, sweep or routing file that is wrong."""


class LLMError(BacktestError):
    """A problem in the LLM layer that the user must act on."""


class CassetteError(LLMError):
    """A cassette that is damaged or cannot be used."""


class CassetteMiss(CassetteError):
    """Replay-only mode asked for a call the cassette does not hold."""


class PricingError(LLMError):
    """A model with no price in the price table."""


class BudgetExceeded(LLMError):
    """A call that would take spend past the run's hard cap."""
