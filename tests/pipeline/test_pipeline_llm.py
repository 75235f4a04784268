"""The LLM client: cache, retries with backoff, fatal errors, validation, bounded ordered map."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import openai
import pytest

from larrylab.pipeline.llm import (
    LLMClient,
    LLMError,
    LLMOptions,
    ReplyError,
    RequestCache,
    map_ordered,
    parse_json_reply,
    public_url,
)
from tests.pipeline.factories import ScriptedCompleter

SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
    "required": ["score"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "rate this"}]


def _client(tmp_path: Path, script: list, **opts: object) -> tuple[LLMClient, ScriptedCompleter]:
    completer = ScriptedCompleter(script)
    options = LLMOptions(model="openai/test", backoff_s=0.001, **opts)  # type: ignore[arg-type]
    return LLMClient(options, RequestCache(tmp_path / "cache"), completer), completer


def _ask(client: LLMClient) -> object:
    return asyncio.run(client.structured(name="rate", messages=MESSAGES, schema=SCHEMA))


def test_answers_are_cached_on_disk_and_never_paid_twice(tmp_path: Path) -> None:
    client, completer = _client(tmp_path, ['{"score": 4}'])
    assert _ask(client) == {"score": 4}
    again, completer2 = _client(tmp_path, ['{"score": 1}'])  # a fresh process, same cache
    assert _ask(again) == {"score": 4}
    assert len(completer.calls) == 1 and completer2.calls == []
    assert again.stats.cache_hits == 1 and again.stats.requests == 0


def test_the_request_sent_asks_for_json_schema_output(tmp_path: Path) -> None:
    client, completer = _client(tmp_path, ['{"score": 2}'], api_base="http://x/v1")
    _ask(client)
    call = completer.calls[0]
    assert call["model"] == "openai/test" and call["api_base"] == "http://x/v1"
    assert call["response_format"]["json_schema"]["schema"] == SCHEMA
    assert call["num_retries"] == 0


def test_malformed_answers_are_retried_and_not_cached(tmp_path: Path) -> None:
    client, completer = _client(
        tmp_path, ["not json", '{"score": 9}', '```json\n{"score": 3}\n```']
    )
    assert _ask(client) == {"score": 3}
    assert len(completer.calls) == 3
    assert client.stats.malformed == 2 and client.stats.retries == 2
    cached = list((tmp_path / "cache").glob("*/*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["value"] == {"score": 3}


def test_an_answer_that_stays_malformed_raises_reply_error(tmp_path: Path) -> None:
    client, completer = _client(tmp_path, ['{"score": "five"}'], retries=2)
    with pytest.raises(ReplyError) as info:
        _ask(client)
    assert info.value.malformed
    assert "score" in str(info.value) and "3 attempts" in str(info.value)
    assert len(completer.calls) == 3
    assert not list((tmp_path / "cache").glob("*/*.json"))


def test_transient_errors_are_retried(tmp_path: Path) -> None:
    request = httpx.Request("POST", "http://x")
    busy = openai.InternalServerError(
        "busy", response=httpx.Response(503, request=request), body=None
    )
    client, completer = _client(
        tmp_path, [busy, openai.APIConnectionError(request=request), '{"score": 5}']
    )
    assert _ask(client) == {"score": 5}
    assert len(completer.calls) == 3 and client.stats.retries == 2


def test_unavailable_after_all_retries_is_not_malformed(tmp_path: Path) -> None:
    request = httpx.Request("POST", "http://x")
    client, _ = _client(tmp_path, [openai.APIConnectionError(request=request)], retries=1)
    with pytest.raises(ReplyError) as info:
        _ask(client)
    assert not info.value.malformed and client.stats.failures == 1


def test_credential_errors_fail_at_once(tmp_path: Path) -> None:
    request = httpx.Request("POST", "http://x")
    denied = openai.AuthenticationError(
        "bad key", response=httpx.Response(401, request=request), body=None
    )
    client, completer = _client(tmp_path, [denied, '{"score": 5}'])
    with pytest.raises(LLMError, match="bad key"):
        _ask(client)
    assert len(completer.calls) == 1


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    running = peak = 0

    async def slow(**kwargs: object) -> object:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        from tests.pipeline.factories import reply

        return reply('{"score": 1}')

    client = LLMClient(LLMOptions(model="m", concurrency=3), RequestCache(tmp_path), slow)

    async def many() -> None:
        await asyncio.gather(
            *(
                client.structured(
                    name="rate", messages=[{"role": "user", "content": str(i)}], schema=SCHEMA
                )
                for i in range(12)
            )
        )

    asyncio.run(many())
    assert peak == 3


def test_map_ordered_keeps_input_order_with_a_bounded_window() -> None:
    started: list[int] = []

    async def work(i: int) -> int:
        started.append(i)
        await asyncio.sleep(0.001 * (10 - i % 10))
        return i * 2

    async def collect() -> list[int]:
        out = []
        async for value in map_ordered(range(30), work, window=4):
            assert len(started) <= len(out) + 4
            out.append(value)
        return out

    assert asyncio.run(collect()) == [i * 2 for i in range(30)]


def test_parse_json_reply_names_the_problem() -> None:
    assert parse_json_reply('  {"a": 1} ') == {"a": 1}
    with pytest.raises(ValueError, match="empty"):
        parse_json_reply("")
    with pytest.raises(ValueError, match="not JSON"):
        parse_json_reply("{'a': 1}")


def test_options_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        LLMOptions(concurrency=0)
    with pytest.raises(ValueError, match="model"):
        LLMOptions(model=" ")


def test_public_url_leaves_out_credentials() -> None:
    url = "https://user:hunter2@LLM.example.com:8443/v1/?api_key=abc&api-version=2024-06-01"
    assert public_url(url) == "https://llm.example.com:8443/v1?api-version=2024-06-01"
    assert public_url("http://127.0.0.1:9000/v1/") == "http://127.0.0.1:9000/v1"
    assert public_url("http://[::1]:9000/v1?token=x&key=y") == "http://[::1]:9000/v1"


def test_the_cache_key_names_the_endpoint_and_sampling_but_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_KEY", "sk-secret-1")

    def key(**opts: object) -> str:
        options = LLMOptions(model="openai/test", api_key_env="TEST_KEY", **opts)  # type: ignore[arg-type]
        client = LLMClient(options, RequestCache(tmp_path), ScriptedCompleter([]))
        return client.key(name="rate", messages=MESSAGES, schema=SCHEMA, temperature=0.0)

    here = key(api_base="http://a.example/v1")
    assert key(api_base="http://b.example/v1") != here != key()
    assert key(api_base="http://u:other-password@a.example/v1/") == here  # same endpoint
    monkeypatch.setenv("TEST_KEY", "sk-secret-2")
    assert key(api_base="http://a.example/v1") == here  # another key, the same answers
    for setting in ({"top_p": 0.5}, {"max_tokens": 100}, {"seed": 7}):
        assert key(api_base="http://a.example/v1", **setting) != here


def test_an_answer_from_another_endpoint_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_KEY", "sk-secret-1")
    client, _ = _client(
        tmp_path, ['{"score": 4}'], api_base="http://u:pw-9@a.example/v1", api_key_env="TEST_KEY"
    )
    assert _ask(client) == {"score": 4}
    other, second = _client(
        tmp_path, ['{"score": 2}'], api_base="http://b.example/v1", api_key_env="TEST_KEY"
    )
    assert _ask(other) == {"score": 2} and len(second.calls) == 1
    assert other.stats.cache_hits == 0 and other.stats.requests == 1
    (entry,) = [
        json.loads(p.read_text())
        for p in (tmp_path / "cache").glob("*/*.json")
        if "a.example" in p.read_text()
    ]
    assert entry["endpoint"] == "http://a.example/v1"
    assert not any(
        "pw-9" in p.read_text() or "sk-secret" in p.read_text()
        for p in (tmp_path / "cache").glob("*/*.json")
    )


def test_sampling_settings_are_sent_when_set(tmp_path: Path) -> None:
    client, completer = _client(tmp_path, ['{"score": 2}'], seed=3, max_tokens=50)
    _ask(client)
    call = completer.calls[0]
    assert (call["seed"], call["max_tokens"]) == (3, 50) and "top_p" not in call
    with pytest.raises(ValueError, match="top_p"):
        LLMOptions(top_p=0)
