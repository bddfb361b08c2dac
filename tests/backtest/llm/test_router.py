"""The router through the real SDK and the loopback server: the seed's decision tree, fallbacks
on each failure, the circuit breaker (replayed exactly), budget downgrade and the hard stop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backtest.llm.cassette import Cassette
from backtest.llm.client import CallContext, LLMClient
from backtest.llm.pricing import PriceTable
from backtest.llm.router import Router, RoutingConfig, load_routing
from backtest.llm.testing import Fault, LLMTestServer

REPO = Path(__file__).resolve().parents[3]
SEED = REPO / "experiments" / "routing" / "seed_stack.toml"
DEEPSEEK, QWEN72, QWEN7, QWENVL, KIMI = (
    "deepseek/deepseek-chat",
    "qwen/qwen-2.5-72b-instruct",
    "qwen/qwen-2.5-7b-instruct",
    "qwen/qwen2.5-vl-72b-instruct",
    "moonshotai/kimi-k2",
)
TEXT = [{"role": "user", "content": "Regime?"}]
IMAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Chart?"},
            {
                "type": "image_url",
                "image_url": {"url": ""},
                "x_source": "a" * 64,
                "x_render": lambda: b"\x89PNG fake",
            },
        ],
    }
]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LLMTestServer]:
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test-router")
    with LLMTestServer(models={"*": '{"signal": 0.1}'}, hang_s=3.0) as srv:
        yield srv


def _routing(**updates: Any) -> RoutingConfig:
    return load_routing(SEED).model_copy(update={"profile": "openai_compatible", **updates})


def _router(
    server: LLMTestServer, tmp: Path, config: RoutingConfig | None = None, mode: str = "all"
) -> Router:
    prices = PriceTable.load(table="openrouter")
    client = LLMClient(
        Cassette(tmp / "cassette", mode),  # type: ignore[arg-type]
        profile="openai_compatible",
        base_url=server.base_url,
        api_key_env="TEST_LLM_KEY",
        timeout_s=0.5,
        max_retries=0,
        sleep=lambda s: None,
        prices=prices,
    )
    return Router(config or _routing(), client, prices=prices)


def _ask(router: Router, role: str, messages: Any = TEXT, bar: int = 0, **kwargs: Any) -> Any:
    day = kwargs.pop("day", "2016-01-04")
    return router.ask(
        role,
        messages,
        context=CallContext(strategy="t", timestamp=day),
        day=day,
        bar=bar,
        **kwargs,
    )


def _models(server: LLMTestServer, since: int = 0) -> list[str]:
    return [r.model for r in server.requests[since:] if r.body]


# ------------------------------------------------------------------- the tree


def test_every_branch_of_the_decision_tree(server: LLMTestServer, tmp_path: Path) -> None:
    router = _router(server, tmp_path)
    # Visual input -> the vision model (even for a role whose primary is a text model).
    assert _ask(router, "narrative", IMAGE).model == QWENVL
    body = server.requests[-1].body
    assert body is not None
    assert body["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png")
    # Context over the threshold (counted) -> the long-context model.
    long_prompt = [{"role": "user", "content": "1 " * 33_000}]
    assert _ask(router, "narrative", long_prompt).model == KIMI
    # Intraday bars on a high-volume role -> the fast model; not on other roles.
    assert _ask(router, "data_processor", intraday=True).model == QWEN7
    assert _ask(router, "narrative", intraday=True).model == DEEPSEEK
    # Reasoning roles -> their primary (the reasoning model).
    assert _ask(router, "meta_orchestrator").model == DEEPSEEK
    assert _models(server) == [QWENVL, KIMI, QWEN7, DEEPSEEK, DEEPSEEK]
    # Precedence: an image wins over a long context; without a vision model the primary.
    assert router.choose("narrative", has_image=True, prompt_tokens=10**6)[0] == QWENVL
    plain = _router(
        server, tmp_path, _routing(tree=_routing().tree.model_copy(update={"vision": None}))
    )
    assert plain.choose("chart_analysis", has_image=True)[0] == QWENVL  # seed primary
    assert plain.choose("narrative", has_image=True) == [DEEPSEEK, QWEN72]


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (Fault.RATE_LIMIT, "rate_limit"),
        (Fault.SERVER_ERROR, "server_error"),
        (Fault.HANG, "timeout"),
        (Fault.MALFORMED_JSON, "malformed"),
    ],
)
def test_anything_failing_goes_to_the_next_fallback(
    server: LLMTestServer, tmp_path: Path, fault: Fault, kind: str
) -> None:
    server.inject(DEEPSEEK, fault, times=None, retry_after_s=0.01)
    run = _ask(_router(server, tmp_path), "narrative")
    assert run.model == QWEN72 and run.result is not None
    failed, answered = run.calls
    assert failed.model_requested == DEEPSEEK and failed.error.startswith(kind)
    assert answered.fallback_from == DEEPSEEK and answered.error == ""


def test_every_model_failing_is_an_abstain_with_every_call_recorded(
    server: LLMTestServer, tmp_path: Path
) -> None:
    server.inject("*", Fault.BAD_GATEWAY, times=None)
    run = _ask(_router(server, tmp_path), "narrative")
    assert run.result is None and "every model for narrative failed" in run.abstain_reason
    assert [c.model_requested for c in run.calls] == [DEEPSEEK, QWEN72]


# ------------------------------------------------------------- circuit breaker


def test_the_circuit_breaker_skips_then_retries_and_replays_exactly(
    server: LLMTestServer, tmp_path: Path
) -> None:
    config = _routing(breaker_failures=2, breaker_window_bars=5, breaker_cooldown_bars=3)
    server.inject(DEEPSEEK, Fault.SERVER_ERROR, times=2)

    def trace(router: Router) -> list[tuple[int, tuple[str, ...], str]]:
        out = []
        for bar in range(6):
            day = f"2016-01-{4 + bar:02d}"
            # Each bar's prompt names its day, as the strategy's do (one cassette key each).
            ask = [{"role": "user", "content": f"Regime on {day}?"}]
            run = _ask(router, "narrative", ask, bar=bar, day=day)
            out.append((bar, tuple(c.model_requested for c in run.calls), run.model))
        return out

    recorded = trace(_router(server, tmp_path, config, mode="all"))
    assert recorded == [
        (0, (DEEPSEEK, QWEN72), QWEN72),  # failure 1
        (1, (DEEPSEEK, QWEN72), QWEN72),  # failure 2 within 5 bars: open until bar 4
        (2, (QWEN72,), QWEN72),  # skipped
        (3, (QWEN72,), QWEN72),  # skipped
        (4, (DEEPSEEK,), DEEPSEEK),  # cool-down over: retried, and it answers
        (5, (DEEPSEEK,), DEEPSEEK),
    ]
    sent = len(server.requests)
    # A replay from the cassette takes the same path without a single request.
    assert trace(_router(server, tmp_path, config, mode="none")) == recorded
    assert len(server.requests) == sent


def test_failures_outside_the_window_do_not_open_the_breaker(
    server: LLMTestServer, tmp_path: Path
) -> None:
    config = _routing(breaker_failures=2, breaker_window_bars=3, breaker_cooldown_bars=10)
    router = _router(server, tmp_path, config)
    server.inject(DEEPSEEK, Fault.SERVER_ERROR, times=1)
    _ask(router, "narrative", bar=0)
    server.inject(DEEPSEEK, Fault.SERVER_ERROR, times=1)
    _ask(router, "narrative", bar=3)  # 3 bars later: the first failure left the window
    assert _ask(router, "narrative", bar=4).model == DEEPSEEK


# ---------------------------------------------------------------------- budget


def _priced_server(monkeypatch: pytest.MonkeyPatch) -> LLMTestServer:
    # Every answer reports a cost of about a cent, far above the worst-case estimate of
    # ~$0.0007 a narrative call: budgets then bind after a few calls.
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test-router")
    return LLMTestServer(models={"*": '{"signal": 0.1}'}, prices={"*": (1000.0, 1000.0)})


def test_over_the_daily_budget_the_cheapest_model_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    budget = _routing().budget.model_copy(update={"daily_usd": 0.05, "alert_usd": 0.03})
    with _priced_server(monkeypatch) as server:
        router = _router(server, tmp_path, _routing(budget=budget))
        models, spent = [], 0.0
        for bar in range(12):
            ask = [{"role": "user", "content": f"Regime at bar {bar}?"}]
            plan = router.plan(
                "narrative",
                ask,
                context=CallContext(strategy="t"),
                day="2016-01-04",
                bar=bar,
            )
            over = spent + plan.estimate > 0.05
            run = router.commit(plan, router.execute(plan))
            models.append(run.model)
            # Over the day's budget the cheapest model goes first; under it the primary.
            assert run.model == (QWEN7 if over else DEEPSEEK), (bar, spent)
            spent += run.calls[-1].cost_usd
        assert DEEPSEEK in models and QWEN7 in models
        kinds = [e.kind for e in router.budget.events]
        assert "alert" in kinds and "downgrade" in kinds
        # A new simulated day starts afresh.
        assert _ask(router, "narrative", day="2016-01-05").model == DEEPSEEK


def test_the_hard_cap_stops_the_call_before_it_is_made(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test-router")
    # Answers priced as the table prices them, so each worst-case estimate bounds its call.
    table = PriceTable.load(table="openrouter")
    prices = {
        m: (table.price(m).input_per_million, table.price(m).output_per_million)
        for m in (DEEPSEEK, QWEN72)
    }
    with LLMTestServer(models={"*": '{"signal": 0.1}'}, prices=prices) as server:
        first = _router(server, tmp_path).plan(
            "narrative", TEXT, context=CallContext(strategy="t"), day="2016-01-04", bar=0
        )
        cap = first.estimate * 1.2
        budget = _routing().budget.model_copy(update={"max_run_usd": cap})
        router = _router(server, tmp_path / "capped", _routing(budget=budget))
        spent = []
        for bar in range(200):
            ask = [{"role": "user", "content": f"Regime at bar {bar}?"}]
            run = _ask(router, "narrative", ask, bar=bar)
            spent += [c.cost_usd for c in run.calls]
            if run.result is None:
                assert run.calls == () and run.abstain_reason.startswith("budget")
                break
        else:
            pytest.fail("the cap never stopped a call")
        assert 0 < sum(spent) <= cap
        assert len(_models(server)) == len(spent)  # the stopped call never reached the server
    assert [e.kind for e in router.budget.events].count("stop") == 1


def test_models_that_cannot_see_get_the_text_prompt(server: LLMTestServer, tmp_path: Path) -> None:
    def plan(router: Router) -> Any:
        return router.plan(
            "chart_analysis",
            IMAGE,
            context=CallContext(strategy="t"),
            day="2016-01-04",
            bar=0,
            prompt_version="image-v1",
            text_messages=TEXT,
            text_prompt_version="text-v1",
        )

    requests = plan(_router(server, tmp_path)).requests
    assert [(r.model, r.prompt_version) for r in requests] == [
        (QWENVL, "image-v1"),
        (DEEPSEEK, "text-v1"),
    ]
    assert requests[0].messages == tuple(IMAGE) and requests[1].messages == tuple(TEXT)
    tree = _routing().tree.model_copy(update={"vision_models": (DEEPSEEK,)})
    both = plan(_router(server, tmp_path, _routing(tree=tree))).requests
    assert [r.prompt_version for r in both] == ["image-v1", "image-v1"]
    # Without a declared vision model nothing is rewritten (the caller forced images).
    blind = _routing(tree=_routing().tree.model_copy(update={"vision": None}))
    assert {r.prompt_version for r in plan(_router(server, tmp_path, blind)).requests} == {
        "image-v1"
    }
