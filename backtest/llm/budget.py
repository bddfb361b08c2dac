"""LLM budgets, the seed's rule made exact and enforced before each call.

Per simulated trading day: at ``alert_usd`` (``ALERT_THRESHOLD``, default $8) an alert event
is recorded and logged; when a call would take the day past ``daily_usd``
(``DAILY_LLM_BUDGET``, default $10) the router downgrades to the cheapest configured model.
Per run: a call whose worst-case cost would take the run past ``max_run_usd`` is not made,
and the decision abstains, so the hard cap is never exceeded.

Budgets count ``cost_usd`` (the economic cost, identical on every replay), not ``spend_usd``,
so a replayed run takes the same downgrades and stops as the recorded one.

Every crossing is an event in :attr:`Budget.events` (the counts in the ledger and report);
each kind (alert, downgrade, stop) is *logged* once per run, the first time, with the amounts
printed to the digits they have (:func:`format_usd`: a $0.005 cap is "$0.005", not "$0.00").
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Literal

from backtest.errors import ConfigError

__all__ = ["Budget", "BudgetConfig", "BudgetEvent", "Verdict", "format_usd"]

logger = logging.getLogger(__name__)

Verdict = Literal["ok", "downgrade", "stop"]


def format_usd(value: float) -> str:
    """Dollars as people read them, without hiding a small amount: ``$10.00``, ``$1,234.50``,
    ``$0.005``, ``$1.005`` (cents, or as many decimals as the amount has, up to six
    significant digits)."""
    if not math.isfinite(value):
        return f"${value}"
    if value == 0 or abs(value) >= 1000:
        return f"${value:,.2f}"
    most = max(2, 5 - math.floor(math.log10(abs(value))))
    decimals = next(
        (d for d in range(2, most) if abs(round(value, d) - value) <= 1e-9 * abs(value)), most
    )
    return f"${value:,.{decimals}f}"


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not a number of dollars. "
            f"Fix: export {name}=10.0 or unset it."
        ) from exc
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetConfig:
    """Limits in dollars of ``cost_usd``.

    Attributes:
        daily_usd: Soft daily budget; past it the cheapest model is used.
        alert_usd: Daily level at which an alert is recorded.
        max_run_usd: Hard cap for the whole run (None: no cap).
    """

    daily_usd: float = 10.0
    alert_usd: float = 8.0
    max_run_usd: float | None = None

    def __post_init__(self) -> None:
        for name in ("daily_usd", "alert_usd"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(
                    f"llm.budget.{name} = {value!r}: a budget must be a positive "
                    "number of dollars. Fix: set it above 0."
                )
        if self.max_run_usd is not None and not self.max_run_usd > 0:
            raise ConfigError(
                f"llm.budget.max_run_usd = {self.max_run_usd!r}: must be > 0. "
                "Fix: set a positive cap, or leave it out for none."
            )
        if self.alert_usd > self.daily_usd:
            raise ConfigError(
                f"llm.budget.alert_usd ({self.alert_usd}) is above daily_usd "
                f"({self.daily_usd}). Fix: alert at or below the budget."
            )

    @classmethod
    def from_env(cls, max_run_usd: float | None = None) -> BudgetConfig:
        """The seed's environment variables, ``DAILY_LLM_BUDGET`` and ``ALERT_THRESHOLD``."""
        return cls(
            daily_usd=_env_float("DAILY_LLM_BUDGET", 10.0),
            alert_usd=_env_float("ALERT_THRESHOLD", 8.0),
            max_run_usd=max_run_usd,
        )


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """A budget threshold crossed: ``alert``, ``downgrade`` or ``stop``."""

    day: str
    kind: Literal["alert", "downgrade", "stop"]
    spent_usd: float
    limit_usd: float
    model: str = ""


@dataclass
class Budget:
    """Spend so far and the verdict for the next call. Deterministic: state is only the
    costs charged, in order."""

    config: BudgetConfig = field(default_factory=BudgetConfig)
    run_usd: float = 0.0
    reserved_usd: float = 0.0
    events: list[BudgetEvent] = field(default_factory=list)
    _day: str = ""
    _day_usd: float = 0.0
    _alerted: bool = False
    _logged: set[str] = field(default_factory=set)

    def _warn_once(self, kind: str, message: str) -> None:
        # Every crossing is an event; the log (the terminal) hears of each kind once per run.
        if kind not in self._logged:
            self._logged.add(kind)
            logger.warning("%s", message)

    def _roll(self, day: str) -> None:
        if day != self._day:
            self._day, self._day_usd, self._alerted = day, 0.0, False

    @property
    def day_usd(self) -> float:
        """Cost charged so far on the current day."""
        return self._day_usd

    def check(
        self, day: str, estimate_usd: float, *, model: str = "", reserve: bool = False
    ) -> Verdict:
        """Decide, before a call, whether it may go ahead.

        Args:
            day: The simulated trading day (e.g. the bar's date).
            estimate_usd: Worst-case cost of the call (prompt counted conservatively plus
                ``max_tokens`` of output).
            model: The model the call would use, for the event record.
            reserve: Hold ``estimate_usd`` against the budgets until :meth:`release`, so
                calls planned together (and run concurrently) cannot pass a cap together.

        Returns:
            ``stop`` when the run cap would be passed (the call must not be made),
            ``downgrade`` when the day's budget would be passed (use the cheapest model),
            else ``ok``.
        """
        self._roll(day)
        cap = self.config.max_run_usd
        if cap is not None and self.run_usd + self.reserved_usd + estimate_usd > cap:
            self.events.append(BudgetEvent(day, "stop", self.run_usd, cap, model))
            self._warn_once(
                "stop",
                f"LLM run budget: {format_usd(self.run_usd)} spent, a call of up to "
                f"{format_usd(estimate_usd)} would pass the {format_usd(cap)} cap "
                "(max_run_usd); from here on such calls are not made and their decisions "
                "abstain (counted in the ledger; this is said once per run)",
            )
            return "stop"
        verdict: Verdict = "ok"
        if self._day_usd + self.reserved_usd + estimate_usd > self.config.daily_usd:
            self.events.append(
                BudgetEvent(day, "downgrade", self._day_usd, self.config.daily_usd, model)
            )
            self._warn_once(
                "downgrade",
                f"LLM daily budget: {format_usd(self._day_usd)} spent on {day}, a call of up "
                f"to {format_usd(estimate_usd)} would pass the {format_usd(self.config.daily_usd)}"
                " daily budget; such calls go to the cheapest model (said once per run)",
            )
            verdict = "downgrade"
        if reserve:
            self.reserved_usd += estimate_usd
        return verdict

    def release(self, estimate_usd: float) -> None:
        """Give back a reservation made by :meth:`check` (after the call was charged)."""
        self.reserved_usd = max(0.0, self.reserved_usd - estimate_usd)

    def charge(self, day: str, cost_usd: float) -> None:
        """Add a call's cost; record (and log) the daily alert the first time it is crossed."""
        self._roll(day)
        self.run_usd += cost_usd
        self._day_usd += cost_usd
        # A nano-dollar of slack: eight calls of $0.10 reach an $0.80 alert.
        if not self._alerted and self._day_usd >= self.config.alert_usd - 1e-9:
            self._alerted = True
            self.events.append(BudgetEvent(day, "alert", self._day_usd, self.config.alert_usd))
            self._warn_once(
                "alert",
                f"LLM daily budget: {format_usd(self._day_usd)} spent on {day}, alert level "
                f"{format_usd(self.config.alert_usd)} (budget "
                f"{format_usd(self.config.daily_usd)}; said once per run, every day's alert is "
                "an event)",
            )
