"""Judging a role's answer: parse it strictly and mark the call that gave an unusable one.

The router returns text; whether that text is an answer is the strategy's business. A call
whose answer was cut off, refused, not JSON or not the role's schema stays in the ledger
with ``answer_error`` (one of :data:`strategies.llm.schemas.ABSTAIN_REASONS`) and its raw
text in ``raw_answer``, so a run's abstains can be counted by reason and read back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from backtest.llm.records import LLMCall
from backtest.llm.router import RoleRun
from strategies.llm.schemas import Parsed, parse_answer

__all__ = ["RAW_ANSWER_CHARS", "Judged", "judge"]

#: Characters of an unusable answer kept in ``llm_calls.raw_answer``.
RAW_ANSWER_CHARS = 4000


@dataclass(frozen=True, slots=True)
class Judged:
    """A role's run with its answer parsed.

    Attributes:
        parsed: The parse (None when no call answered: every model failed, or the budget
            stopped the call).
        calls: The run's calls, the answering one marked when its answer was unusable.
    """

    parsed: Parsed | None
    calls: tuple[LLMCall, ...]

    @property
    def answer(self) -> object | None:
        """The validated answer, or None (the role abstains)."""
        return None if self.parsed is None else self.parsed.answer


def judge(role: str, run: RoleRun) -> Judged:
    """Parse ``run``'s answer as ``role``'s schema (its ``finish_reason`` and refusal too)."""
    result = run.result
    if result is None:
        return Judged(None, run.calls)
    parsed = parse_answer(
        role,
        result.content,
        finish_reason=result.finish_reason,
        refusal=result.refusal or None,
    )
    calls = run.calls
    if parsed.answer is None and calls:
        # The router appends the answering call last.
        marked = dataclasses.replace(
            calls[-1], answer_error=parsed.reason, raw_answer=parsed.raw[:RAW_ANSWER_CHARS]
        )
        calls = (*calls[:-1], marked)
    return Judged(parsed, calls)
