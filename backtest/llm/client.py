"""Every LLM call, through the official ``openai`` SDK, recorded in a cassette and priced.

:class:`LLMClient` sends a :class:`ChatRequest` to a provider (OpenRouter by default;
DeepSeek, Qwen/DashScope, Moonshot, or any OpenAI-compatible server such as vLLM,
llama.cpp or Ollama by base URL), retries with exponential backoff and seeded jitter
(honouring ``Retry-After``), and records every attempt, answers and errors alike, in the
:class:`~backtest.llm.cassette.Cassette`. Replaying a cassette repeats the same attempts,
errors and fallbacks, without sleeping and without opening a socket.

API keys come only from environment variables (``OPENROUTER_API_KEY``, ``DEEPSEEK_API_KEY``,
``QWEN_API_KEY``, ``MOONSHOT_API_KEY`` or one the config names); they are never written:
the cassette scrubs them, and errors name the variable, never its value.

Temperature 0 is not reproducible on OpenRouter (it may route to another provider or
quantisation between calls): pin providers with ``provider={"order": [...],
"allow_fallbacks": False}`` and give a ``models`` fallback list; both travel in
``extra_body`` and are part of the cassette key.

Why this module is long: it is the one class :class:`LLMClient` (about 430 lines), whose
cassette lookup, live attempts, retries, fallbacks and pricing share one attempt loop and its
state; the request and result types live in :mod:`backtest.llm.calls` and the provider
profiles in :mod:`backtest.llm.providers`, and every name keeps importing from here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import date
from typing import Any

from backtest.errors import CassetteMiss, ConfigError, PricingError
from backtest.llm.calls import (
    CallContext,
    ChatRequest,
    ChatResult,
    LLMCallFailed,
    _image_count,
    _wire_messages,
    require_parameters,
)
from backtest.llm.cassette import Cassette, Recording, canonical_request, request_key
from backtest.llm.model_list import check_model_ids
from backtest.llm.providers import PROFILES, ProviderProfile
from backtest.llm.records import LLMCall, Usage
from backtest.llm.response_format import (
    JSON_OBJECT_ONLY,
    RESPONSE_FORMATS,
    response_format_for,
    strict_json_schema,
)
from backtest.llm.retry import RetryPolicy

logger = logging.getLogger(__name__)

__all__ = [
    "JSON_OBJECT_ONLY",
    "PROFILES",
    "RESPONSE_FORMATS",
    "CallContext",
    "ChatRequest",
    "ChatResult",
    "LLMCallFailed",
    "LLMClient",
    "ProviderProfile",
    "require_parameters",
    "response_format_for",
    "strict_json_schema",
]


class LLMClient:
    """Send chat requests through the openai SDK, with a cassette, retries and prices.

    Args:
        cassette: Where answers are replayed from and recorded to (None: live only).
        profile: A key of :data:`PROFILES`.
        base_url: Overrides the profile's base URL (required for ``openai_compatible``; for
            ``local``, None starts the bundled llama.cpp server on the first live call).
        local_model: For ``local`` without a base URL: the GGUF file to serve (None: the
            bundled SmolLM2-135M-Instruct).
        api_key_env: Overrides the profile's key variable.
        prices: A :class:`backtest.llm.pricing.PriceTable` for ``cost_usd`` when the
            provider does not report a cost; None leaves the table cost at 0 with
            ``cost_source="unpriced"``. A server on this machine (a loopback base URL)
            (a profile with ``local``) costs $0 by rule, ``cost_source="local"``.
        timeout_s: Per-attempt timeout.
        max_retries: Further attempts after the first, on 429, 5xx, timeouts, connection
            errors and malformed bodies.
        backoff_s: First backoff; doubles per attempt, capped at ``backoff_max_s``, with
            seeded jitter; a ``Retry-After`` header wins when present.
        max_retry_s: Cap of the total wait between the attempts of one call; a retry that
            would pass it is not made (see :mod:`backtest.llm.retry`, which also ends a
            call whose failure repeats word for word).
        seed: Seeds the jitter (per call, from the request key), never a global RNG.
        sleep: How to wait between live attempts (tests pass a fake).
        clock: Monotonic clock for latency.
    """

    def __init__(
        self,
        cassette: Cassette | None = None,
        *,
        profile: str = "openrouter",
        base_url: str | None = None,
        api_key_env: str | None = None,
        local_model: str | None = None,
        prices: Any = None,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        max_retry_s: float = 60.0,
        seed: int = 0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if profile not in PROFILES:
            raise ConfigError(
                f"llm.profile: unknown provider profile {profile!r}. Fix: use one of "
                f"{', '.join(PROFILES)}."
            )
        base = PROFILES[profile]
        self.profile = ProviderProfile(
            base.name,
            base_url or base.base_url,
            api_key_env or base.api_key_env,
            dict(base.headers),
            base.reports_cost,
            base.local,
        )
        self.local_model = local_model
        if not self.profile.base_url and not self.profile.local:
            raise ConfigError(
                "llm.base_url: the openai_compatible profile needs a base URL. Fix: set "
                "llm.base_url (e.g. http://127.0.0.1:8000/v1 for vLLM)."
            )
        self.cassette = cassette
        self.prices = prices
        self.local = self.profile.local
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_s = max_retry_s
        self.seed = seed
        self.retry = RetryPolicy(
            max_retries=max_retries,
            backoff_s=backoff_s,
            backoff_max_s=backoff_max_s,
            max_retry_s=max_retry_s,
            seed=seed,
        )
        self._sleep = sleep
        self._clock = clock
        self._sdk: Any = None
        self._expected: tuple[list[str], str] | None = None
        self._check_lock = threading.Lock()

    # ----------------------------------------------------------------- the SDK

    def _client(self) -> Any:
        if self._sdk is None:
            import openai

            base_url = self.profile.base_url
            if not base_url:  # the local profile: start the bundled server now
                from backtest.llm.local import shared_server

                base_url = shared_server(self.local_model).base_url
            key = os.environ.get(self.profile.api_key_env)
            if not key:
                if self.profile.name != "openai_compatible" and not self.profile.local:
                    raise ConfigError(
                        f"no API key: the environment variable {self.profile.api_key_env} is "
                        f"not set for the {self.profile.name} profile. Fix: export "
                        f"{self.profile.api_key_env}=..., or replay from a cassette "
                        "(llm.record_mode = 'none'), or use the offline analyst."
                    )
                key = "unused"  # local servers usually need none
            self._sdk = openai.OpenAI(
                base_url=base_url,
                api_key=key,
                max_retries=0,  # retries are ours, so each attempt is recorded
                timeout=self.timeout_s,
                default_headers=dict(self.profile.headers),
            )
        return self._sdk

    def _live(self, request: ChatRequest, key: str, canonical: dict[str, Any]) -> Recording:
        import openai

        body: dict[str, Any] = {
            "model": request.model,
            "messages": _wire_messages(request.messages),
        }
        for name in ("temperature", "top_p", "max_tokens", "seed"):
            value = getattr(request, name)
            if value is not None:
                body[name] = value
        if request.response_format is not None:
            body["response_format"] = dict(request.response_format)
        if request.stop is not None:
            body["stop"] = list(request.stop)
        if request.tools is not None:
            body["tools"] = [dict(t) for t in request.tools]
        extra: dict[str, Any] = {}
        if request.provider is not None:
            extra["provider"] = dict(request.provider)
        if request.models is not None:
            extra["models"] = list(request.models)
        if self.profile.name == "openrouter":
            extra["usage"] = {"include": True}  # OpenRouter then reports usage.cost
        started = self._clock()
        error: dict[str, Any] | None = None
        response: dict[str, Any] | None = None
        try:
            raw = self._client().chat.completions.with_raw_response.create(
                **body, extra_body=extra or None
            )
            try:
                parsed = raw.parse()
            except (ValueError, TypeError) as exc:  # json.JSONDecodeError is not wrapped
                error = {
                    "kind": "malformed",
                    "type": type(exc).__name__,
                    "status": 200,
                    "message": str(exc)[:500],
                }
            else:
                if hasattr(parsed, "model_dump"):
                    response = parsed.model_dump()
                else:  # a 200 whose content type is not JSON comes back as a plain string
                    error = {
                        "kind": "malformed",
                        "type": type(parsed).__name__,
                        "status": 200,
                        "message": f"not a chat completion: {str(parsed)[:200]!r}",
                    }
        except openai.RateLimitError as exc:
            error = self._status_error("rate_limit", exc)
        except openai.APITimeoutError as exc:
            error = {
                "kind": "timeout",
                "type": type(exc).__name__,
                "status": None,
                "message": str(exc)[:500],
            }
        except openai.APIConnectionError as exc:
            error = {
                "kind": "connection",
                "type": type(exc).__name__,
                "status": None,
                "message": str(exc)[:500],
            }
        except openai.APIStatusError as exc:
            kind = "server_error" if exc.status_code >= 500 else "client_error"
            if exc.status_code == 404:
                kind = "model_not_found"
            error = self._status_error(kind, exc)
        except openai.APIResponseValidationError as exc:
            error = {
                "kind": "malformed",
                "type": type(exc).__name__,
                "status": 200,
                "message": str(exc)[:500],
            }
        latency_ms = (self._clock() - started) * 1000.0
        if response is not None:
            choices = response.get("choices") or []
            problem = (
                "the response has no choices"
                if not choices
                else None
                if choices[0].get("finish_reason")
                else "the answer has no finish_reason (cut off in transit)"
            )
            if problem is not None:
                error = {
                    "kind": "malformed",
                    "type": "Truncated",
                    "status": 200,
                    "message": problem,
                }
                response = None
        return Recording(
            key=key,
            request=canonical,
            outcome="ok" if error is None else "error",
            response=response,
            error=error,
            latency_ms=round(latency_ms, 3),
            meta={"profile": self.profile.name, "images": _image_count(request.messages)},
        )

    @staticmethod
    def _status_error(kind: str, exc: Any) -> dict[str, Any]:
        headers = getattr(getattr(exc, "response", None), "headers", {}) or {}
        retry_after = headers.get("retry-after")
        try:
            retry_after_s = None if retry_after is None else float(retry_after)
        except ValueError:
            retry_after_s = None
        return {
            "kind": kind,
            "type": type(exc).__name__,
            "status": exc.status_code,
            "message": str(exc)[:500],
            "retry_after_s": retry_after_s,
        }

    def check_models(self, models: list[str], *, source: str = "") -> None:
        """Before a live run: every model id must be in the provider's model list.

        A provider that cannot list its models (no ``/models`` route, an empty list, a
        connection error) is not a reason to stop: the ids are then left unchecked, with a
        warning, and a wrong one fails at its first call as before.

        Args:
            models: The ids the run may call.
            source: Where they come from (the routing file), for the message.

        Raises:
            ConfigError: Naming the routing file, each unknown id and its closest listed ids.
        """
        import openai

        try:
            listed = {m.id for m in self._client().models.list()}
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            logger.warning(
                "%s does not list its models (%s); model ids left unchecked",
                self.profile.base_url,
                type(exc).__name__,
            )
            return
        if not listed:
            logger.warning("%s lists no models; model ids left unchecked", self.profile.base_url)
            return
        check_model_ids(listed, models, base_url=self.profile.base_url, source=source)

    def expect_models(self, models: list[str], *, source: str = "") -> None:
        """Check ``models`` with :meth:`check_models` before the first call that goes live
        (never for cassette hits, replays or the offline analyst)."""
        self._expected = (list(models), source)

    def _check_expected(self) -> None:
        with self._check_lock:
            expected, self._expected = self._expected, None
        if expected is not None:
            self.check_models(expected[0], source=expected[1])

    # ------------------------------------------------------------------ calls

    def _cost_of(
        self, request: ChatRequest, recording: Recording, at: date | None
    ) -> tuple[float, str]:
        body = recording.response or {}
        usage = Usage.from_openai(
            body.get("usage"), image_inputs=int(recording.meta.get("images", 0))
        )
        if self.local:  # $0 by rule, whatever the server says
            return 0.0, "local"
        if usage.reported_cost_usd is not None:
            return float(usage.reported_cost_usd), "reported"
        if self.prices is None:
            return 0.0, "unpriced"
        served = str(body.get("model") or request.model)
        try:
            cost = self.prices.cost(served, usage, at, prefer_reported=False)
        except PricingError:
            # A snapshot id the table does not know: price it as the model asked for.
            cost = self.prices.cost(request.model, usage, at, prefer_reported=False)
        return float(cost.cost_usd), "table"

    def chat(
        self, request: ChatRequest, context: CallContext | None = None, *, at: date | None = None
    ) -> ChatResult:
        """Send (or replay) one request; retry retryable failures.

        Args:
            request: What to ask.
            context: Strategy, bar, role and prompt version, for the record and errors.
            at: The call's date, to price it at the price in force then.

        Raises:
            CassetteMiss: Replay-only mode and the call was never recorded.
            LLMCallFailed: Every attempt failed, or the failure is not retryable.
            ConfigError: No API key for a call that must go live.
        """
        ctx = context or CallContext()
        retries = 0
        retry = self.retry.start()
        for attempt in range(self.max_retries + 1):
            wire = request.as_dict(attempt)
            canonical = canonical_request(wire)
            key = request_key(wire)
            recording = self.cassette.get(key) if self.cassette is not None else None
            if recording is not None:
                cache = "hit"
            elif self.cassette is not None and not self.cassette.can_record:
                raise CassetteMiss(
                    f"cassette {self.cassette.path} (mode {self.cassette.record_mode!r}) has no "
                    f"recording for strategy {ctx.strategy or '?'} at {ctx.timestamp or '?'}, "
                    f"role {ctx.role or '?'}, model {request.model}, attempt {attempt} "
                    f"(key {key[:12]}...). Fix: record it: run the strategy with mode 'live' "
                    f"and record_mode 'new_episodes' (e.g. --set strategies[i].params.mode=live)"
                    f" with {self.profile.api_key_env} set."
                )
            else:
                self._check_expected()  # before the first call that goes out
                recording = self._live(request, key, canonical)
                if recording.outcome == "ok":
                    # Priced once, when recorded: every replay charges the same cost_usd.
                    cost_usd, source = self._cost_of(request, recording, at)
                    recording = dataclasses.replace(
                        recording,
                        meta={**recording.meta, "cost_usd": cost_usd, "cost_source": source},
                    )
                if self.cassette is not None:
                    recording = self.cassette.record(recording)
                    cache = "recorded"
                else:
                    cache = "live"
            if recording.outcome == "ok":
                return self._result(request, ctx, recording, cache, retries, at)
            error = recording.error or {}
            kind = str(error.get("kind", "error"))
            wait = retry.next_wait(key, attempt, error)
            if wait is not None:
                retries += 1
                if cache != "hit":  # a replay repeats the attempts without waiting
                    self._sleep(wait)
                continue
            why_not = f" ({retry.why_not})" if retry.why_not else ""
            call = LLMCall(
                role=ctx.role,
                model_requested=request.model,
                cache=cache,
                retries=retries,
                error=f"{kind}: {error.get('message', '')}"[:300],
                latency_ms=recording.latency_ms,
                prompt_version=request.prompt_version or ctx.prompt_version,
                fallback_from=ctx.fallback_from,
                cost_source="none",
                http_status=error.get("status"),
            )
            raise LLMCallFailed(
                f"{request.model} ({ctx.role or 'call'}): {kind} after {attempt + 1} attempt(s)"
                f"{why_not}: {error.get('message', '')[:200]}",
                call,
                kind,
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _result(
        self,
        request: ChatRequest,
        ctx: CallContext,
        recording: Recording,
        cache: str,
        retries: int,
        at: date | None,
    ) -> ChatResult:
        body = recording.response or {}
        choice = (body.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        usage = Usage.from_openai(
            body.get("usage"), image_inputs=int(recording.meta.get("images", 0))
        )
        served = str(body.get("model") or request.model)
        if "cost_usd" in recording.meta:
            cost_usd = float(recording.meta["cost_usd"])
            source = str(recording.meta.get("cost_source", "table"))
        else:
            cost_usd, source = self._cost_of(request, recording, at)
        call = LLMCall(
            role=ctx.role,
            model_requested=request.model,
            model_served=served,
            provider=str(body.get("provider") or ""),
            prompt_tokens=usage.prompt_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=cost_usd,
            spend_usd=0.0 if cache == "hit" else cost_usd,
            cost_source=source,
            cache=cache,
            fallback_from=ctx.fallback_from,
            retries=retries,
            latency_ms=recording.latency_ms,
            prompt_version=request.prompt_version or ctx.prompt_version,
            finish_reason=str(choice.get("finish_reason") or ""),
            http_status=200,
        )
        content = message.get("content")
        return ChatResult(
            content="" if content is None else str(content),
            finish_reason=str(choice.get("finish_reason") or ""),
            usage=usage,
            model_served=served,
            provider=call.provider,
            call=call,
            raw=body,
            refusal=str(message.get("refusal") or ""),
        )
