"""The cassette store: keys, record modes, durability, concurrency, secrets, maintenance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtest.errors import CassetteError, ConfigError
from backtest.llm.cassette import (
    SESSION,
    Cassette,
    Recording,
    canonical_request,
    request_key,
    scrub,
)
from backtest.llm.testing import LLMTestServer

REPO = Path(__file__).resolve().parents[3]


def _request(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "model": "deepseek/deepseek-chat",
        "messages": [{"role": "user", "content": "Regime of the S&P 500 today?"}],
        "temperature": 0.3,
        "max_tokens": 400,
        "sample": 0,
        "attempt": 0,
    }
    base.update(overrides)
    return base


def _recording(request: dict[str, object], content: str = "bull") -> Recording:
    return Recording(
        key=request_key(request),
        request=canonical_request(request),
        outcome="ok",
        response={"model": request["model"], "choices": [{"message": {"content": content}}]},
        latency_ms=12.5,
    )


# --------------------------------------------------------------------------------- keys


def test_key_depends_on_what_decides_the_answer_and_nothing_else() -> None:
    base = request_key(_request())
    for change in (
        {"temperature": 0.0},
        {"max_tokens": 401},
        {"seed": 1},
        {"top_p": 0.9},
        {"sample": 1},
        {"attempt": 1},
        {"model": "qwen/qwen-2.5-7b-instruct"},
        {"response_format": {"type": "json_object"}},
        {"stop": ["\n"]},
        {"provider": {"order": ["DeepSeek"]}},
        {"models": ["a", "b"]},
    ):
        assert request_key(_request(**change)) != base, change
    # Secrets and transport never enter the key.
    noisy = _request(
        api_key="sk-or-v1-abcdefabcdefabcdef",
        base_url="https://x",
        extra_headers={"Authorization": "Bearer sk-123"},
        timeout=5,
    )
    assert request_key(noisy) == base
    assert "api_key" not in json.dumps(canonical_request(noisy))


def test_images_are_keyed_by_their_source_not_their_pixels() -> None:
    def with_image(url: str, source: dict[str, str]) -> dict[str, object]:
        return _request(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Chart?"},
                        {"type": "image_url", "image_url": {"url": url}, "x_source": source},
                    ],
                }
            ]
        )

    source = {"bars_sha256": "ab" * 32, "renderer": "candles-1"}
    a = request_key(with_image("data:image/png;base64,AAAA", source))
    b = request_key(with_image("data:image/png;base64,BBBB", source))
    c = request_key(with_image("data:image/png;base64,AAAA", {**source, "renderer": "candles-2"}))
    assert a == b != c


@settings(max_examples=50)
@given(
    st.dictionaries(
        st.sampled_from(["temperature", "top_p", "seed", "max_tokens"]),
        st.integers(0, 1000),
        min_size=1,
    )
)
def test_key_ignores_dict_order(params: dict[str, int]) -> None:
    forward = _request(**params)
    backward = dict(reversed(list(forward.items())))
    assert request_key(forward) == request_key(backward)


# -------------------------------------------------------------------------- modes


def test_record_then_replay_in_every_mode(tmp_path: Path) -> None:
    path = tmp_path / "c"
    first = _recording(_request())
    with Cassette(path, "once") as cassette:
        assert cassette.can_record and cassette.get(first.key) is None
        cassette.record(first)
        assert cassette.get(first.key) == first
    replay = Cassette(path, "none")
    assert not replay.can_record and replay.get(first.key) == first
    with pytest.raises(CassetteError, match="does not record"):
        replay.record(_recording(_request(seed=3)))
    assert not Cassette(path, "once").can_record  # not empty any more: replay only
    with Cassette(path, "new_episodes") as more:
        assert more.get(first.key) == first
        more.record(_recording(_request(seed=3)))
    assert len(Cassette(path, "none")) == 2
    everything = Cassette(path, "all")
    assert everything.get(first.key) is None and everything.can_record
    with pytest.raises(ConfigError, match="record_mode"):
        Cassette(path, "sometimes")  # type: ignore[arg-type]


def test_errors_are_recorded_and_replayed(tmp_path: Path) -> None:
    request = _request()
    error = Recording(
        key=request_key(request),
        request=canonical_request(request),
        outcome="error",
        error={"kind": "rate_limit", "status": 429, "retry_after_s": 2.0, "message": "slow down"},
    )
    with Cassette(tmp_path, "new_episodes") as cassette:
        cassette.record(error)
    replayed = Cassette(tmp_path, "none").get(error.key)
    assert replayed is not None and (replayed.request, replayed.outcome, replayed.error) == (
        error.request,
        "error",
        error.error,
    )
    assert replayed.meta["session"] == SESSION  # which run saw it fail


# --------------------------------------------------------------------- durability


def test_damaged_lines_are_reported_with_file_and_line(tmp_path: Path) -> None:
    with Cassette(tmp_path, "new_episodes") as cassette:
        for seed in range(3):
            cassette.record(_recording(_request(seed=seed)))
    shard = next(tmp_path.glob("shard-*.tsv"))
    lines = shard.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"bull", b"bear")  # same length, wrong checksum
    shard.write_bytes(b"\n".join(lines))
    with pytest.raises(CassetteError, match=rf"{shard.name}:2: checksum mismatch"):
        Cassette(tmp_path, "none").verify()
    lines[1] = b"not a recording"
    shard.write_bytes(b"\n".join(lines))
    with pytest.raises(CassetteError, match=rf"{shard.name}:2: damaged recording"):
        Cassette(tmp_path, "none")


def test_a_torn_last_line_is_the_call_in_flight(tmp_path: Path) -> None:
    with Cassette(tmp_path, "new_episodes") as cassette:
        for seed in range(3):
            cassette.record(_recording(_request(seed=seed)))
    shard = next(tmp_path.glob("shard-*.tsv"))
    data = shard.read_bytes()
    shard.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 40])  # cut the 3rd record
    cassette = Cassette(tmp_path, "none")
    assert len(cassette) == 2
    notes = cassette.verify()
    assert len(notes) == 1 and f"{shard}:3: torn last line" in notes[0]


_WRITER = textwrap.dedent(
    """
    import sys
    from backtest.llm.cassette import Cassette
    from backtest.llm.client import CallContext, ChatRequest, LLMClient
    path, worker, count, base_url = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    client = LLMClient(Cassette(path, "new_episodes", fsync=False), profile="openai_compatible",
                       base_url=base_url, max_retries=0)
    for i in range(count):
        request = ChatRequest(model="m", messages=({"role": "user", "content": f"{worker}-{i}"},))
        result = client.chat(request, CallContext(role="narrative"))
        print(result.content, flush=True)
    """
)


def _server() -> LLMTestServer:
    return LLMTestServer(models={"m": lambda body: body["messages"][0]["content"]})


def test_four_processes_record_into_one_cassette_without_loss(tmp_path: Path) -> None:
    with _server() as server:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _WRITER, str(tmp_path), str(w), "60", server.base_url],
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
            )
            for w in range(4)
        ]
        answered = set()
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0
            answered |= set(out.split())
    cassette = Cassette(tmp_path, "none")
    assert len(answered) == 240 and len(cassette) == 240
    assert {r.response["choices"][0]["message"]["content"] for r in cassette.recordings()} == (
        answered
    )
    assert cassette.verify() == []
    assert len(list(tmp_path.glob("shard-*.tsv"))) == 4


def test_sigkill_loses_at_most_the_call_in_flight(tmp_path: Path) -> None:
    with _server() as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), "9", "100000", server.base_url],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert proc.stdout is not None
        confirmed = []
        deadline = time.monotonic() + 60
        while len(confirmed) < 100 and time.monotonic() < deadline:
            confirmed.append(proc.stdout.readline().strip())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        confirmed += proc.stdout.read().split()  # answers printed before the kill landed
    cassette = Cassette(tmp_path, "none")
    cassette.verify()  # no damaged line; at most a torn last one
    recorded = {r.response["choices"][0]["message"]["content"] for r in cassette.recordings()}
    assert set(confirmed) <= recorded  # every call whose chat() returned survived
    assert len(recorded) - len(set(confirmed)) <= 1  # at most the one recorded, not returned


# ------------------------------------------------------------------------ secrets


def test_no_secret_is_ever_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-or-v1-" + "7f3a9c" * 8
    monkeypatch.setenv("OPENROUTER_API_KEY", secret)
    monkeypatch.setenv("MY_PROVIDER_KEY", "plain-secret-value-123")
    request = _request(messages=[{"role": "user", "content": f"echo {secret}"}])
    recording = Recording(
        key=request_key(request),
        request=canonical_request(request),
        outcome="error",
        error={
            "kind": "client_error",
            "status": 401,
            "message": f"Incorrect API key provided: {secret}; plain-secret-value-123",
            "headers": {"Authorization": f"Bearer {secret}"},
        },
        meta={"note": "Bearer abcdefgh12345678"},
    )
    with Cassette(tmp_path, "new_episodes", secret_env=["MY_PROVIDER_KEY"]) as cassette:
        stored = cassette.record(recording)
    assert secret not in json.dumps(stored.payload())
    out = tmp_path / "export.jsonl"
    Cassette(tmp_path, "none").export(out)
    for path in [*tmp_path.glob("shard-*.tsv"), out]:
        text = path.read_text()
        assert secret not in text and "plain-secret-value-123" not in text
        assert "abcdefgh12345678" not in text
        assert "[REDACTED]" in text
    assert scrub({"Authorization": "x"}) == {"Authorization": "[REDACTED]"}


# -------------------------------------------------------------------- maintenance


def test_merge_compacts_shards_and_export_sorts(tmp_path: Path) -> None:
    for batch in range(3):
        with Cassette(tmp_path, "new_episodes") as cassette:
            for seed in range(batch * 5, batch * 5 + 6):  # one key overlaps each batch
                if request_key(_request(seed=seed)) not in cassette:
                    cassette.record(_recording(_request(seed=seed)))
    before = Cassette(tmp_path, "none")
    keys = set(before.keys())
    target, _ = before.merge()
    assert [p.name for p in tmp_path.glob("shard-*.tsv")] == [target.name]
    after = Cassette(tmp_path, "none")
    assert set(after.keys()) == keys and after.verify() == []
    out = tmp_path / "all.jsonl"
    assert after.export(out) == len(keys)
    exported = [json.loads(line)["key"] for line in out.read_text().splitlines()]
    assert exported == sorted(keys)
    stats = after.stats()
    assert stats.recordings == len(keys) and stats.errors == 0
    assert stats.models_requested == {"deepseek/deepseek-chat": len(keys)}
    assert stats.mixed_snapshots == {}


def test_stats_flag_mixed_snapshots(tmp_path: Path) -> None:
    with Cassette(tmp_path, "new_episodes") as cassette:
        for seed, served in (
            (0, "deepseek/deepseek-chat-v3-0324"),
            (1, "deepseek/deepseek-chat-v3.1"),
        ):
            request = _request(seed=seed)
            cassette.record(
                Recording(
                    key=request_key(request),
                    request=canonical_request(request),
                    outcome="ok",
                    response={"model": served, "choices": []},
                )
            )
    mixed = Cassette(tmp_path, "none").stats().mixed_snapshots
    assert mixed == {
        "deepseek/deepseek-chat": {"deepseek/deepseek-chat-v3-0324", "deepseek/deepseek-chat-v3.1"}
    }


def test_a_file_is_not_a_cassette(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(CassetteError, match="directory"):
        Cassette(tmp_path / "c.json")


def test_cassette_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from backtest.cli import main

    path = tmp_path / "c"
    with Cassette(path, "new_episodes") as cassette:
        for seed in range(3):
            cassette.record(_recording(_request(seed=seed)))
    for args in (
        ["stats", str(path)],
        ["verify", str(path)],
        ["merge", str(path)],
        ["export", str(path), "--out", str(tmp_path / "x.jsonl")],
    ):
        with pytest.raises(SystemExit) as info:
            main(["cassette", *args])
        assert info.value.code == 0, args
    out = capsys.readouterr().out
    assert "3 recordings" in out and "deepseek/deepseek-chat" in out
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 3
    shard = next(path.glob("shard-*.tsv"))
    shard.write_bytes(shard.read_bytes().replace(b"bull", b"bear", 1))
    with pytest.raises(SystemExit) as info:
        main(["cassette", "verify", str(path)])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:
        main(["cassette", "stats", str(tmp_path / "nope")])
    assert info.value.code == 1


@pytest.mark.parametrize("name", ["OPENAI_COMPATIBLE_API_KEY", "MY_GATEWAY_API_KEY"])
def test_every_api_key_variable_is_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    value = "local-" + "7f3a" * 6  # not key-shaped: only its variable's name marks it
    monkeypatch.setenv(name, value)
    leaked = Recording(
        key=request_key(_request()),
        request=canonical_request(_request()),
        outcome="error",
        error={"kind": "client_error", "status": 401, "message": f"bad key {value}"},
    )
    with Cassette(tmp_path / "c", "new_episodes") as cassette:
        stored = cassette.record(leaked)
    assert value not in json.dumps(stored.payload())
    for shard in (tmp_path / "c").glob("shard-*.tsv"):
        text = shard.read_text()
        assert value not in text and "[REDACTED]" in text
