"""When a failed LLM call is tried again, and how long the client waits before it does.

A call is retried only for failures that may pass (429, 5xx, timeouts, refused connections,
malformed bodies), and never for long:

- the wait doubles per attempt from ``backoff_s`` with seeded jitter, capped at
  ``backoff_max_s``; a ``Retry-After`` header wins when the provider sends one;
- the waits of one call add up to at most ``max_retry_s``: a retry whose wait would pass it
  (a ``Retry-After`` of ten minutes, say) is not made, and the call fails now, so the router
  falls back to the next model instead of stalling the run;
- a deterministic failure is not retried: the same HTTP status with the same body twice in a
  row (a 500 from a server that fails this request every time, a 4xx) ends the call.

Every decision depends only on the recorded outcomes and the seed, never on a clock, so a
replay takes the same retries as the run that recorded them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RETRYABLE", "RetryPolicy", "RetryState"]

#: Error kinds (see :class:`backtest.llm.client.LLMClient`) that may pass on another attempt.
RETRYABLE = frozenset({"rate_limit", "server_error", "timeout", "connection", "malformed"})


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How a client retries one call.

    Attributes:
        max_retries: Further attempts after the first.
        backoff_s: First wait; doubles per attempt, with jitter in [0.5, 1] of it.
        backoff_max_s: Cap of one wait.
        max_retry_s: Cap of all the waits of one call.
        seed: Seeds the jitter (with the request key and attempt), never a global RNG.
    """

    max_retries: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    max_retry_s: float = 60.0
    seed: int = 0

    def backoff(self, key: str, attempt: int, retry_after_s: float | None) -> float:
        """The wait before attempt ``attempt + 1`` of the call keyed ``key``."""
        if retry_after_s is not None and retry_after_s >= 0:
            return float(retry_after_s)
        jitter = random.Random(f"{self.seed}:{key}:{attempt}").uniform(0.5, 1.0)
        return min(self.backoff_s * (2.0**attempt) * jitter, self.backoff_max_s)

    def start(self) -> RetryState:
        """The state of a new call."""
        return RetryState(self)


def _deterministic(status: Any) -> bool:
    # 429 asks to come back later and 502/503/504 are an upstream hiccup; a 500 or another
    # 4xx that repeats word for word is this request failing, every time.
    return isinstance(status, int) and (status == 500 or (400 <= status < 500 and status != 429))


@dataclass(slots=True)
class RetryState:
    """One call's retries so far; :meth:`next_wait` says whether to try again."""

    policy: RetryPolicy
    waited_s: float = 0.0
    last: tuple[Any, str] | None = None
    why_not: str = ""

    def next_wait(self, key: str, attempt: int, error: Mapping[str, Any]) -> float | None:
        """The wait before retrying after ``error`` at ``attempt``, or None: do not retry.

        When the answer is None, :attr:`why_not` says why (empty: not retryable, or the
        retries are used up).
        """
        kind = str(error.get("kind", "error"))
        signature = (error.get("status"), str(error.get("message", "")))
        repeated = self.last == signature
        self.last = signature
        self.why_not = ""
        if kind not in RETRYABLE or attempt >= self.policy.max_retries:
            return None
        if repeated and _deterministic(signature[0]):
            self.why_not = (
                f"the same HTTP {signature[0]} with the same body twice: a deterministic "
                "failure, not retried"
            )
            return None
        wait = self.policy.backoff(key, attempt, error.get("retry_after_s"))
        if self.waited_s + wait > self.policy.max_retry_s:
            self.why_not = (
                f"waiting {wait:.3g} s more would pass max_retry_s = {self.policy.max_retry_s:g} "
                f"s for this call (waited {self.waited_s:.3g} s)"
            )
            return None
        self.waited_s += wait
        return wait
