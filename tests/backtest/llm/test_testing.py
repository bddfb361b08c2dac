"""The loopback LLM test server, exercised through the real ``openai`` SDK.

How the SDK (openai 3.x, pydantic models with ``extra="allow"``) exposes fields the OpenAI
schema does not declare, such as OpenRouter's ``provider`` and ``usage.cost``: they are kept on
the parsed object, readable as attributes (``completion.provider``, so ``getattr`` works), listed
in ``model_extra`` (``completion.model_extra == {"provider": ...}``) and included in
``model_dump()``. Type checkers do not know them, so the tests read them via ``model_extra``.

What the SDK does with each fault (found by running it, asserted below):

- 429, 500, 502: ``openai.RateLimitError`` / ``openai.InternalServerError`` (both
  ``APIStatusError``); ``exc.response.headers`` holds ``Retry-After``.
- A request that hangs past the client timeout: ``openai.APITimeoutError``.
- A 200 whose body is not JSON (malformed or truncated, Content-Type ``application/json``):
  a bare ``json.JSONDecodeError`` from ``httpx2.Response.json``, *not* an ``openai`` error. The
  same for a streamed event whose data is not JSON.
- A stream that ends without ``data: [DONE]``: nothing at all; iteration just stops. Only the
  missing ``finish_reason`` (and usage) tells a client the answer was cut.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from backtest.llm.testing import (
    IMAGE_PROMPT_TOKENS,
    NOT_JSON_TEXT,
    REFUSAL_TEXT,
    Fault,
    LLMTestServer,
    count_completion_tokens,
    count_prompt_tokens,
)

DEEPSEEK = "deepseek/deepseek-chat"
QWEN = "qwen/qwen-2.5-72b-instruct"
DECISION = '{"action": "BUY", "size": 0.5, "confidence": 0.8}'
MESSAGES: list[Any] = [
    {"role": "system", "content": "You are a trading analyst. Answer in JSON."},
    {"role": "user", "content": "BTC closed at 64000, up 2%. Decide."},
]


def make_client(server: LLMTestServer, **options: Any) -> openai.OpenAI:
    options = {"max_retries": 0, "timeout": 5.0, **options}
    return openai.OpenAI(base_url=server.base_url, api_key="test-key", **options)


def ask(client: openai.OpenAI, model: str = DEEPSEEK, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=model, messages=MESSAGES, **kwargs)


@pytest.fixture
def server() -> Iterator[LLMTestServer]:
    models = {DEEPSEEK: DECISION, QWEN: ["first", "second", "third"]}
    with LLMTestServer(models=models, prices={DEEPSEEK: (0.27, 1.10)}) as running:
        yield running
    assert running.errors == []


@pytest.fixture
def client(server: LLMTestServer) -> Iterator[openai.OpenAI]:
    with make_client(server) as sdk_client:
        yield sdk_client


# -- public API ------------------------------------------------------------------------------


def test_base_url_before_start_and_double_start_are_errors() -> None:
    server = LLMTestServer(models={DEEPSEEK: "x"})
    with pytest.raises(RuntimeError, match="start"):
        _ = server.base_url
    server.start()
    try:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.base_url.endswith("/v1")
        with pytest.raises(RuntimeError, match="already started"):
            server.start()
    finally:
        server.stop()
    server.stop()  # idempotent


def test_bad_configuration_is_rejected_with_a_fix() -> None:
    with pytest.raises(TypeError, match="a reply string, a non-empty list"):
        LLMTestServer(models={DEEPSEEK: 42})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="unknown keys"):
        LLMTestServer(models={DEEPSEEK: {"text": "hi"}})
    with pytest.raises(TypeError, match="non-negative numbers"):
        LLMTestServer(models={DEEPSEEK: "x"}, prices={DEEPSEEK: (1.0,)})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="latency_ms"):
        LLMTestServer(models={DEEPSEEK: "x"}, latency_ms=-1)


# -- plain completions -----------------------------------------------------------------------


def test_plain_completion_reports_content_usage_cost_provider_and_model() -> None:
    with (
        LLMTestServer(
            models={DEEPSEEK: DECISION},
            prices={DEEPSEEK: (0.27, 1.10)},
            served_as={DEEPSEEK: "deepseek/deepseek-chat-v3-0324"},
        ) as server,
        make_client(server) as client,
    ):
        completion = ask(client)

    prompt_tokens = count_prompt_tokens(MESSAGES)
    completion_tokens = count_completion_tokens(DECISION)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("gen-")
    assert completion.model == "deepseek/deepseek-chat-v3-0324"
    assert completion.model_extra == {"provider": "DeepSeek"}
    assert completion.provider == "DeepSeek"  # extras are attributes too
    choice = completion.choices[0]
    assert choice.message.content == DECISION
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt_tokens, completion_tokens)
    assert usage.total_tokens == prompt_tokens + completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0
    expected_cost = (prompt_tokens * 0.27 + completion_tokens * 1.10) / 1_000_000
    assert usage.model_extra == {"cost": pytest.approx(expected_cost, rel=1e-12)}
    assert usage.model_dump()["cost"] == pytest.approx(expected_cost, rel=1e-12)


def test_token_counts_follow_the_documented_rule() -> None:
    messages: list[Any] = [
        {"role": "system", "content": "x" * 9},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "y" * 3},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
    ]
    assert count_prompt_tokens(messages) == 3 + 2 * 4 + IMAGE_PROMPT_TOKENS  # ceil(12 / 4)
    assert count_completion_tokens("") == 0
    assert count_completion_tokens("abcde") == 2
    with LLMTestServer(models={QWEN: "ok"}) as server, make_client(server) as client:
        usage = client.chat.completions.create(model=QWEN, messages=messages).usage
    assert usage is not None
    assert usage.prompt_tokens == count_prompt_tokens(messages)
    assert usage.model_extra == {"cost": 0.0}  # no price given: free, but still reported


def test_report_cost_false_leaves_cost_out_of_usage() -> None:
    with (
        LLMTestServer(
            models={DEEPSEEK: DECISION}, prices={"*": (1.0, 2.0)}, report_cost=False
        ) as server,
        make_client(server) as client,
    ):
        usage = ask(client).usage
    assert usage is not None
    assert usage.model_extra == {}
    assert "cost" not in usage.model_dump()


def test_list_script_cycles_per_model(server: LLMTestServer, client: openai.OpenAI) -> None:
    answers = [ask(client, QWEN).choices[0].message.content for _ in range(4)]
    assert answers == ["first", "second", "third", "first"]
    assert server.calls(QWEN) == 4
    assert server.calls(DEEPSEEK) == 0


def test_callable_script_sees_the_request_and_overrides_fields() -> None:
    def script(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "content": f"{len(body['messages'])} messages, temperature {body['temperature']}",
            "finish_reason": "length",
            "usage": {"prompt_tokens_details": {"cached_tokens": 7}, "cost": 0.5},
            "model": "deepseek/deepseek-chat-v3.1",
            "provider": "Together",
        }

    with LLMTestServer(models={DEEPSEEK: script}) as server, make_client(server) as client:
        completion = ask(client, temperature=0.3)
    assert completion.choices[0].message.content == "2 messages, temperature 0.3"
    assert completion.choices[0].finish_reason == "length"
    assert completion.model == "deepseek/deepseek-chat-v3.1"
    assert completion.model_extra == {"provider": "Together"}
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 7
    assert usage.prompt_tokens == count_prompt_tokens(MESSAGES)  # the rest is still computed
    assert usage.model_extra == {"cost": 0.5}


def test_default_script_answers_any_model() -> None:
    with LLMTestServer(models={"*": "default", QWEN: "qwen"}) as server, make_client(server) as c:
        assert ask(c, "moonshotai/kimi-k2").choices[0].message.content == "default"
        assert ask(c, "moonshotai/kimi-k2").model_extra == {"provider": "Moonshot AI"}
        assert ask(c, QWEN).choices[0].message.content == "qwen"
        assert [m.id for m in c.models.list()] == [QWEN]  # "*" is not a model id


def test_failing_script_is_a_500_and_is_kept_in_errors() -> None:
    def script(body: dict[str, Any]) -> str:
        raise ZeroDivisionError("bug in the test's script")

    with LLMTestServer(models={DEEPSEEK: script}) as server, make_client(server) as client:
        with pytest.raises(openai.InternalServerError, match="script error"):
            ask(client)
        assert [type(e) for e in server.errors] == [ZeroDivisionError]


def test_responses_are_deterministic() -> None:
    def raw_bodies(seed: int) -> list[bytes]:
        with (
            LLMTestServer(models={QWEN: ["a", "b"]}, prices={QWEN: (0.1, 0.2)}, seed=seed) as s,
            make_client(s) as client,
        ):
            create = client.chat.completions.with_raw_response.create
            plain = [create(model=QWEN, messages=MESSAGES).http_response.content for _ in range(2)]
            streamed = create(model=QWEN, messages=MESSAGES, stream=True)
            return [*plain, streamed.http_response.read()]

    first = raw_bodies(seed=0)
    assert first == raw_bodies(seed=0)
    assert first != raw_bodies(seed=1)  # the seed goes into the ids
    assert json.loads(first[0])["created"] != json.loads(first[1])["created"]


# -- streaming -------------------------------------------------------------------------------


def test_stream_with_include_usage_sends_usage_last(client: openai.OpenAI) -> None:
    stream = ask(client, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)

    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == DECISION
    assert len(chunks) > 3  # the content arrives in pieces
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks[:-1]][-1] == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == count_prompt_tokens(MESSAGES)
    assert last.usage.completion_tokens == count_completion_tokens(DECISION)
    assert last.usage.model_extra is not None and last.usage.model_extra["cost"] > 0
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.model_extra == {"provider": "DeepSeek"} for c in chunks)


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(ask(client, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


# -- models ----------------------------------------------------------------------------------


def test_models_list_and_retrieve(server: LLMTestServer, client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models] == [DEEPSEEK, QWEN]
    assert [m.owned_by for m in models] == ["DeepSeek", "Alibaba"]
    assert client.models.retrieve(DEEPSEEK).id == DEEPSEEK
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nobody/nothing")


def test_unknown_model_is_an_openai_style_404(server: LLMTestServer, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        ask(client, "nobody/nothing")
    error = caught.value
    assert error.status_code == 404
    assert error.code == "model_not_found"
    assert error.type == "invalid_request_error"
    assert "nobody/nothing" in error.message
    assert json.loads(error.response.content)["error"]["code"] == "model_not_found"
    assert server.calls("nobody/nothing") == 1


def test_removed_model_disappears_mid_run(server: LLMTestServer, client: openai.OpenAI) -> None:
    assert ask(client).choices[0].message.content == DECISION
    server.remove_model(DEEPSEEK)
    with pytest.raises(openai.NotFoundError, match="not served"):
        ask(client)
    assert [m.id for m in client.models.list()] == [QWEN]
    with pytest.raises(KeyError):
        server.remove_model("nobody/nothing")


# -- faults ----------------------------------------------------------------------------------


def test_rate_limit_is_a_429_with_retry_after(server: LLMTestServer, client: openai.OpenAI) -> None:
    server.inject(DEEPSEEK, Fault.RATE_LIMIT, retry_after_s=0.05)
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "0.05"
    assert caught.value.code == "rate_limit_exceeded"
    assert ask(client).choices[0].message.content == DECISION  # times=1 by default


def test_not_found_after_k_answers_is_a_model_that_vanishes(
    server: LLMTestServer, client: openai.OpenAI
) -> None:
    server.inject(DEEPSEEK, Fault.NOT_FOUND, times=None, after=2)
    assert [ask(client).choices[0].message.content for _ in range(2)] == [DECISION, DECISION]
    for _ in range(3):
        with pytest.raises(openai.NotFoundError) as caught:
            ask(client)
        assert caught.value.code == "model_not_found"
    assert ask(client, QWEN).choices[0].message.content == "first"  # other models unaffected
    with pytest.raises(ValueError, match="after"):
        server.inject(DEEPSEEK, Fault.NOT_FOUND, after=-1)


def test_unauthorized_echoes_the_presented_key(server: LLMTestServer) -> None:
    server.inject(DEEPSEEK, Fault.UNAUTHORIZED)
    with make_client(server) as sdk, pytest.raises(openai.AuthenticationError) as caught:
        ask(sdk)
    assert caught.value.status_code == 401 and "test-key" in str(caught.value)


@pytest.mark.parametrize(("fault", "status"), [(Fault.SERVER_ERROR, 500), (Fault.BAD_GATEWAY, 502)])
def test_server_errors_are_internal_server_errors(
    server: LLMTestServer, client: openai.OpenAI, fault: Fault, status: int
) -> None:
    server.inject(DEEPSEEK, fault)
    with pytest.raises(openai.InternalServerError) as caught:
        ask(client)
    assert caught.value.status_code == status
    assert caught.value.type == "server_error"


@pytest.mark.parametrize("stream", [False, True])
def test_hang_is_a_client_timeout(
    server: LLMTestServer, client: openai.OpenAI, stream: bool
) -> None:
    server.inject(DEEPSEEK, Fault.HANG)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        ask(client, stream=stream, timeout=0.2)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_json_is_a_bare_json_decode_error(
    server: LLMTestServer, client: openai.OpenAI, stream: bool
) -> None:
    server.inject(DEEPSEEK, Fault.MALFORMED_JSON)
    # The SDK does not wrap it: not an openai.APIError, not retried.
    with pytest.raises(json.JSONDecodeError):
        list(ask(client, stream=True)) if stream else ask(client)


def test_truncated_body_is_a_json_decode_error(
    server: LLMTestServer, client: openai.OpenAI
) -> None:
    server.inject(DEEPSEEK, Fault.TRUNCATED_STREAM)
    raw = client.chat.completions.with_raw_response.create(model=DEEPSEEK, messages=MESSAGES)
    body = raw.http_response.content
    assert int(raw.http_response.headers["content-length"]) == len(body)
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    server.inject(DEEPSEEK, Fault.TRUNCATED_STREAM)
    with pytest.raises(json.JSONDecodeError):
        ask(client)


def test_truncated_stream_ends_silently_without_finish_reason(
    server: LLMTestServer, client: openai.OpenAI
) -> None:
    server.inject(DEEPSEEK, Fault.TRUNCATED_STREAM)
    chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))  # no raise
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content and DECISION.startswith(content) and content != DECISION
    assert all(c.choices and c.choices[0].finish_reason is None for c in chunks)
    assert all(c.usage is None for c in chunks)


@pytest.mark.parametrize(
    ("fault", "content"),
    [
        (Fault.EMPTY_CONTENT, ""),
        (Fault.REFUSAL, REFUSAL_TEXT),
        (Fault.NOT_JSON_CONTENT, NOT_JSON_TEXT),
    ],
)
def test_content_faults_are_successful_answers(
    server: LLMTestServer, client: openai.OpenAI, fault: Fault, content: str
) -> None:
    server.inject(DEEPSEEK, fault, times=2)
    plain = ask(client)
    assert plain.choices[0].message.content == content
    assert plain.choices[0].finish_reason == "stop"
    assert plain.usage is not None
    assert plain.usage.completion_tokens == count_completion_tokens(content)
    streamed = "".join(c.choices[0].delta.content or "" for c in ask(client, stream=True))
    assert streamed == content
    assert ask(client).choices[0].message.content == DECISION


def test_not_json_content_does_not_parse() -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(NOT_JSON_TEXT)


def test_times_counts_requests_then_answers_normally(
    server: LLMTestServer, client: openai.OpenAI
) -> None:
    server.inject(QWEN, Fault.SERVER_ERROR, times=2)
    server.inject(QWEN, Fault.RATE_LIMIT, times=1, retry_after_s=0.05)
    outcomes = []
    for _ in range(4):
        try:
            outcomes.append(ask(client, QWEN).choices[0].message.content)
        except openai.APIStatusError as error:
            outcomes.append(error.status_code)
    # Faulted requests do not use up a scripted reply.
    assert outcomes == [500, 500, 429, "first"]
    assert server.calls(QWEN) == 4


def test_times_none_faults_until_cleared(server: LLMTestServer, client: openai.OpenAI) -> None:
    server.inject("*", Fault.BAD_GATEWAY, times=None)
    for model in (DEEPSEEK, QWEN, DEEPSEEK):
        with pytest.raises(openai.InternalServerError):
            ask(client, model)
    server.clear_faults()
    assert ask(client).choices[0].message.content == DECISION
    with pytest.raises(KeyError, match="not served"):
        server.inject("nobody/nothing", Fault.HANG)


def test_sdk_retries_honour_retry_after(server: LLMTestServer) -> None:
    server.inject(DEEPSEEK, Fault.RATE_LIMIT, times=1, retry_after_s=0.05)
    with make_client(server, max_retries=2) as client:
        started = time.monotonic()
        completion = ask(client)
        elapsed = time.monotonic() - started
    assert completion.choices[0].message.content == DECISION
    # Without Retry-After the SDK would back off 0.375-0.5 s.
    assert 0.05 <= elapsed < 0.3
    retry_counts = [r.headers["x-stainless-retry-count"] for r in server.requests]
    assert retry_counts == ["0", "1"]
    assert server.calls(DEEPSEEK) == 2


# -- threads, shutdown, secrets --------------------------------------------------------------


def test_independent_requests_overlap() -> None:
    with LLMTestServer(models={DEEPSEEK: DECISION}, latency_ms=100) as server:
        client = make_client(server)
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(5):
                    ask(client)
            except BaseException as error:  # surfaced below
                errors.append(error)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        client.close()
    assert errors == []
    assert server.calls(DEEPSEEK) == 20
    assert elapsed < 1.2  # serial would take 20 x 100 ms = 2 s; 4 overlapping need 0.5 s


def test_stop_returns_promptly_with_a_hung_request_pending() -> None:
    server = LLMTestServer(models={DEEPSEEK: DECISION}, hang_s=30).start()
    server.inject(DEEPSEEK, Fault.HANG)
    client = make_client(server, timeout=10.0)
    outcome: list[BaseException | None] = []

    def hung_call() -> None:
        try:
            ask(client)
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    caller = threading.Thread(target=hung_call)
    caller.start()
    deadline = time.monotonic() + 2
    while server.calls(DEEPSEEK) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.calls(DEEPSEEK) == 1

    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0
    caller.join(timeout=2.0)
    assert not caller.is_alive()
    # The hung request is dropped unanswered: the SDK sees a broken connection.
    assert len(outcome) == 1 and type(outcome[0]) is openai.APIConnectionError
    client.close()


def test_requests_keep_headers_in_memory_but_never_print_them(
    server: LLMTestServer, client: openai.OpenAI, capfd: pytest.CaptureFixture[str]
) -> None:
    ask(client, temperature=0.0)
    client.models.list()
    with pytest.raises(openai.NotFoundError):
        ask(client, "nobody/nothing")

    requests = server.requests
    assert [(r.method, r.path) for r in requests] == [
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ]
    first = requests[0]
    assert first.model == DEEPSEEK
    assert first.body is not None and first.body["messages"] == MESSAGES
    assert first.body["temperature"] == 0.0
    assert first.headers["authorization"] == "Bearer test-key"
    assert "test-key" not in repr(first)
    requests[0].body["model"] = "mutated"  # type: ignore[index]  # a copy
    assert server.requests[0].model == DEEPSEEK
    out, err = capfd.readouterr()
    assert "test-key" not in out + err
    assert "POST" not in out + err
