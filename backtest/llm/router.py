"""The seed's router: which model answers a role, what happens when it fails or costs too much.

A routing configuration (TOML under ``experiments/routing/``) names, per role, a primary
model, ordered fallbacks, temperature, ``max_tokens`` and optional OpenRouter provider pins,
plus the seed's decision tree and budget:

- visual input → the ``vision`` model (a fallback that cannot read images gets the prompt's
  text-only version); a prompt over ``long_context_tokens`` (counted
  conservatively) → the ``long_context`` model; intraday bars on a high-volume role →
  the ``fast`` model; otherwise the role's primary (the reasoning model for narrative and meta);
- anything failing (429, 5xx, timeout, malformed body, a vanished model) → the next fallback;
- over the daily budget → the ``cheapest`` model first; over the run's hard cap → no call at
  all, and the decision abstains;
- a circuit breaker skips a model after ``breaker_failures`` failures within
  ``breaker_window_bars`` bars, until ``breaker_cooldown_bars`` have passed. Its state is only
  the failures seen, bar by bar, so a replay takes the same path. A model skipped this way
  counts as a fallback: the call that answers instead names it in ``fallback_from``.

``response_format`` is chosen for each model actually called (a fallback gets its own), by
model id unless the routing file says otherwise per model::

    [models."deepseek/deepseek-chat"]
    response_format = "json_object"   # or "json_schema", or "none" (send none)

The router returns text; parsing it is the strategy's business (a bad answer is an abstain,
not a reason to pay for another model).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from backtest.config import explain_validation_error, read_toml
from backtest.errors import ConfigError
from backtest.llm.budget import Budget, BudgetConfig
from backtest.llm.client import PROFILES, CallContext, ChatRequest, ChatResult, LLMCallFailed
from backtest.llm.records import LLMCall
from backtest.llm.response_format import response_format_for

__all__ = [
    "BudgetSettings",
    "DecisionTree",
    "ModelSettings",
    "RolePlan",
    "RoleRoute",
    "RoleRun",
    "Router",
    "RoutingConfig",
    "load_routing",
]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RoleRoute(_Strict):
    """How one role is served."""

    primary: str
    fallbacks: tuple[str, ...] = ()
    temperature: float = Field(0.2, ge=0, le=2)
    max_tokens: int = Field(600, ge=16)
    provider: dict[str, Any] | None = None


class DecisionTree(_Strict):
    """The seed's model selection tree (None leaves the role's primary in charge).

    ``vision_models`` names other models that accept images. When ``vision`` is set, a
    request with an image that falls back to a model that is neither gets the caller's
    text-only version of the prompt instead (a text model would reject the image).
    """

    vision: str | None = None
    vision_models: tuple[str, ...] = ()
    long_context: str | None = None
    long_context_tokens: int = Field(32_000, ge=1)
    fast: str | None = None
    fast_roles: tuple[str, ...] = ("data_processor",)


class BudgetSettings(_Strict):
    """Dollars of ``cost_usd``: the seed's daily budget and alert, and a hard run cap."""

    daily_usd: float = Field(10.0, gt=0)
    alert_usd: float = Field(8.0, gt=0)
    max_run_usd: float | None = Field(None, gt=0)


class ModelSettings(_Strict):
    """Settings of one model id, whichever role calls it (``[models."<id>"]``).

    Attributes:
        response_format: ``json_schema`` (a strict JSON schema: OpenAI, Qwen, llama.cpp,
            vLLM), ``json_object`` (JSON without a schema: DeepSeek, Moonshot),
            ``json_object_schema`` (llama.cpp's ``json_object`` with a schema: the default
            on the local profile) or ``none`` (no ``response_format`` sent: a server that
            rejects it). Unset: chosen by provider and id.
    """

    response_format: Literal["json_schema", "json_object", "json_object_schema", "none"] | None = (
        None
    )


class RoutingConfig(_Strict):
    """One routing configuration."""

    name: str
    profile: str = "openrouter"
    base_url: str | None = None
    cheapest: str | None = None
    roles: dict[str, RoleRoute]
    tree: DecisionTree = DecisionTree()
    budget: BudgetSettings = BudgetSettings()
    breaker_failures: int = Field(3, ge=1)
    breaker_window_bars: int = Field(20, ge=1)
    breaker_cooldown_bars: int = Field(50, ge=1)
    models_: dict[str, ModelSettings] = Field(default_factory=dict, alias="models")

    @model_validator(mode="after")
    def _settings_name_called_models(self) -> RoutingConfig:
        unused = sorted(set(self.models_) - set(self.models()))
        if unused:
            raise ValueError(
                f"[models] names model(s) no role or tree entry calls: {', '.join(unused)}. "
                "Fix: correct the id (it must match a primary, fallback, cheapest or tree "
                "model exactly) or remove the table"
            )
        return self

    def response_format(
        self, model: str, schema: Mapping[str, Any], name: str
    ) -> dict[str, Any] | None:
        """The ``response_format`` to send ``model`` for an answer of ``schema``."""
        settings = self.models_.get(model)
        kind = settings.response_format if settings is not None else None
        profile = PROFILES.get(self.profile)
        return response_format_for(
            model, schema, name, kind, local=profile is not None and profile.local
        )

    def models(self) -> list[str]:
        """Every model id the configuration may call."""
        ids = []
        for route in self.roles.values():
            ids += [route.primary, *route.fallbacks]
        ids += [
            m
            for m in (self.cheapest, self.tree.vision, self.tree.long_context, self.tree.fast)
            if m
        ]
        return sorted(set(ids))


def load_routing(path: str | Path) -> RoutingConfig:
    """Read a routing TOML file.

    Raises:
        ConfigError: Missing file, bad TOML, or an unknown / wrong key (named, with the fix).
    """
    path = Path(path)
    raw = read_toml(path, "routing", "point llm.routing at one of experiments/routing/*.toml")
    try:
        return RoutingConfig.model_validate(raw)
    except ValidationError as exc:
        # Same wording as experiment files, minus the experiment's key names.
        message = str(explain_validation_error(exc, str(path)))
        raise ConfigError(message.replace("Known keys here:", "Valid keys:")) from exc


@dataclass(frozen=True, slots=True)
class RolePlan:
    """The models a role will try, with the budget reserved for it (see :meth:`Router.plan`)."""

    role: str
    models: tuple[str, ...]
    requests: tuple[ChatRequest, ...]
    route: RoleRoute
    context: CallContext
    day: str
    estimate: float = 0.0
    bar: int = 0
    stopped: str = ""
    skipped: str = ""


@dataclass(frozen=True, slots=True)
class RoleRun:
    """What asking one role produced.

    Attributes:
        result: The answer (None when every model failed or the budget stopped the call).
        calls: Every call made for it, failed ones included (for the ledger).
        model: The model that answered.
        abstain_reason: Why there is no answer.
    """

    result: ChatResult | None
    calls: tuple[LLMCall, ...]
    model: str = ""
    abstain_reason: str = ""
    failed: tuple[str, ...] = ()


@dataclass
class _Breaker:
    failures: dict[str, list[int]] = field(default_factory=dict)
    open_until: dict[str, int] = field(default_factory=dict)

    def allows(self, model: str, bar: int) -> bool:
        return bar >= self.open_until.get(model, -1)

    def fail(self, model: str, bar: int, config: RoutingConfig) -> None:
        recent = [b for b in self.failures.get(model, []) if b > bar - config.breaker_window_bars]
        recent.append(bar)
        self.failures[model] = recent
        if len(recent) >= config.breaker_failures:
            self.open_until[model] = bar + config.breaker_cooldown_bars
            self.failures[model] = []


class Router:
    """Serve roles through a client (``LLMClient`` or the offline analyst).

    Args:
        config: The routing configuration.
        client: Anything with ``chat(request, context, at=...)``.
        prices: A price table for worst-case estimates before each call (None: no estimate,
            so only budgets on recorded costs apply).
        budget: Shared budget state (made from the config when omitted).
    """

    def __init__(
        self,
        config: RoutingConfig,
        client: Any,
        *,
        prices: Any = None,
        budget: Budget | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.prices = prices
        self.budget = budget or Budget(
            BudgetConfig(
                daily_usd=config.budget.daily_usd,
                alert_usd=config.budget.alert_usd,
                max_run_usd=config.budget.max_run_usd,
            )
        )
        self._breaker = _Breaker()

    def choose(
        self, role: str, *, has_image: bool = False, prompt_tokens: int = 0, intraday: bool = False
    ) -> list[str]:
        """The models to try for ``role``, in order (the decision tree, then fallbacks)."""
        if role not in self.config.roles:
            raise ConfigError(
                f"routing {self.config.name!r} has no [roles.{role}] table. Fix: "
                "add one with primary = '<model id>'."
            )
        route = self.config.roles[role]
        tree = self.config.tree
        first = route.primary
        if has_image and tree.vision:
            first = tree.vision
        elif prompt_tokens > tree.long_context_tokens and tree.long_context:
            first = tree.long_context
        elif intraday and tree.fast and role in tree.fast_roles:
            first = tree.fast
        ordered = [first, route.primary, *route.fallbacks]
        return list(dict.fromkeys(ordered))

    def _count(self, messages: Sequence[Mapping[str, Any]]) -> int:
        if self.prices is None:
            return 0
        from backtest.llm.pricing import count_prompt_tokens

        return count_prompt_tokens([dict(m) for m in messages])

    def _estimate(self, model: str, tokens: int, max_tokens: int, images: int) -> float:
        # An unpriced model raises PricingError: it is an error, not a free call.
        if self.prices is None:
            return 0.0
        return float(self.prices.estimate_max_cost(model, tokens, max_tokens, images=images))

    def plan(
        self,
        role: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        context: CallContext,
        day: str,
        bar: int,
        market: Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        schema: Mapping[str, Any] | None = None,
        prompt_version: str = "",
        intraday: bool = False,
        text_messages: Sequence[Mapping[str, Any]]
        | Callable[[], Sequence[Mapping[str, Any]]]
        | None = None,
        text_prompt_version: str = "",
    ) -> RolePlan:
        """Decide, before any call, which models to try and reserve the budget for them.

        Plans made one after another in a fixed order can then be executed concurrently and
        committed in the same order: budgets and the circuit breaker see the same sequence
        on every replay.

        ``text_messages`` (with ``text_prompt_version``) is the prompt without its images,
        sent to the models that cannot read them (see :class:`DecisionTree`); a callable is
        called only when such a model is planned.

        ``schema`` (the answer's JSON schema, named ``role``) gives each planned model the
        ``response_format`` that model takes (:meth:`RoutingConfig.response_format`);
        ``response_format`` instead sends one format to every model.
        """
        images = sum(
            1
            for m in messages
            if isinstance(m.get("content"), list)
            for p in m["content"]
            if isinstance(p, Mapping) and p.get("type") == "image_url"
        )
        tokens = self._count(messages)
        models = self.choose(role, has_image=images > 0, prompt_tokens=tokens, intraday=intraday)
        route = self.config.roles[role]
        estimate = self._estimate(models[0], tokens, route.max_tokens, images)
        verdict = self.budget.check(day, estimate, model=models[0], reserve=True)
        if verdict == "stop":
            return RolePlan(
                role,
                (),
                (),
                route,
                context,
                day,
                estimate=0.0,
                stopped="budget: the run's hard cap would be passed",
            )
        if verdict == "downgrade" and self.config.cheapest:
            models = list(dict.fromkeys([self.config.cheapest, *models]))
        allowed = tuple(m for m in models if self._breaker.allows(m, bar))
        # The model a breaker skip replaced: the first allowed one is then a fallback from it.
        skipped = models[0] if allowed and models[0] not in allowed else ""
        tree = self.config.tree
        sees = {tree.vision, *tree.vision_models}

        def text_only(model: str) -> bool:
            return bool(images and text_messages is not None and tree.vision) and (
                model not in sees
            )

        text: Sequence[Mapping[str, Any]] = ()
        if any(text_only(m) for m in allowed):
            assert text_messages is not None
            text = text_messages() if callable(text_messages) else text_messages
        requests = tuple(
            ChatRequest(
                model=model,
                messages=tuple(text if text_only(model) else messages),
                temperature=route.temperature,
                max_tokens=route.max_tokens,
                provider=route.provider,
                response_format=(
                    self.config.response_format(model, schema, role)
                    if schema is not None
                    else response_format
                ),
                prompt_version=text_prompt_version if text_only(model) else prompt_version,
                context=market,
            )
            for model in allowed
        )
        return RolePlan(
            role,
            allowed,
            requests,
            route,
            context,
            day,
            estimate=estimate,
            bar=bar,
            skipped=skipped,
        )

    def execute(self, plan: RolePlan) -> RoleRun:
        """Try the planned models in order; touches no shared state (safe in a thread)."""
        if plan.stopped:
            return RoleRun(None, (), abstain_reason=plan.stopped)
        calls: list[LLMCall] = []
        previous = plan.skipped  # a breaker skip is a fallback too
        failed: list[str] = []
        for model, request in zip(plan.models, plan.requests, strict=True):
            ctx = CallContext(
                strategy=plan.context.strategy,
                timestamp=plan.context.timestamp,
                role=plan.role,
                prompt_version=request.prompt_version,
                fallback_from=previous,
            )
            try:
                result = self.client.chat(request, ctx)
            except LLMCallFailed as failure:
                calls.append(failure.call)
                failed.append(model)
                previous = model
                continue
            calls.append(result.call)
            return RoleRun(result, tuple(calls), model=model, failed=tuple(failed))
        return RoleRun(
            None,
            tuple(calls),
            failed=tuple(failed),
            abstain_reason=f"every model for {plan.role} failed or is on cool-down",
        )

    def commit(self, plan: RolePlan, run: RoleRun) -> RoleRun:
        """Apply a run's failures to the breaker and its cost to the budget, in plan order."""
        for model in run.failed:
            self._breaker.fail(model, plan.bar, self.config)
        self.budget.release(plan.estimate)
        if run.result is not None:
            self.budget.charge(plan.day, run.result.call.cost_usd)
        return run

    def ask(
        self,
        role: str,
        messages: Sequence[Mapping[str, Any]],
        **kwargs: Any,
    ) -> RoleRun:
        """Plan, execute and commit one role (see :meth:`plan` for the arguments)."""
        plan = self.plan(role, messages, **kwargs)
        return self.commit(plan, self.execute(plan))
