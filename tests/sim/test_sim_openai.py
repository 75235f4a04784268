"""The OpenAI wire protocol, exercised with the official `openai` client and raw httpx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Literal

import httpx
import jsonschema
import openai
import orjson
import pytest
from pydantic import BaseModel, Field

from larrylab.sim import PWS_REPLIES, BackgroundSim, SimConfig

USER: list[Any] = [{"role": "user", "content": "What job do customers hire our product for?"}]
USER_WORDS = 8

SimServer = Callable[[SimConfig], AbstractContextManager[BackgroundSim]]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="sim", max_retries=0, timeout=10)


def post(url: str, body: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)


class Step(BaseModel):
    title: str = Field(min_length=3, max_length=40)
    minutes: int = Field(ge=1, le=30)


class Plan(BaseModel):
    tool: Literal["tta", "jtbd", "s_curve"]
    steps: list[Step] = Field(min_length=2)
    confidence: int = Field(ge=1, le=5)


def test_non_streaming_completion(instant_sim: BackgroundSim) -> None:
    raw = client(instant_sim.url).chat.completions.with_raw_response.create(
        model="larry-v1", messages=USER
    )
    completion = raw.parse()
    assert raw.headers["x-larrylab-sim"] == "test"
    assert completion.id.startswith("chatcmpl-sim-")
    assert completion.object == "chat.completion"
    assert completion.model == "larry-v1"
    assert completion.system_fingerprint == "larrylab-sim:test"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content in PWS_REPLIES["jtbd"]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == USER_WORDS
    assert completion.usage.completion_tokens == len(choice.message.content.split())
    assert completion.usage.total_tokens == USER_WORDS + completion.usage.completion_tokens


def test_streaming_with_usage(instant_sim: BackgroundSim) -> None:
    chunks = list(
        client(instant_sim.url).chat.completions.create(
            model="gemini-2.5-flash",
            messages=[{"role": "user", "content": "Let's trend this to the absurd"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text in PWS_REPLIES["tta"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage is not None
    assert usage.completion_tokens == len(text.split()) == len(chunks) - 3
    assert usage.prompt_tokens == 6
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.model == "gemini-2.5-flash" for c in chunks)


def test_raw_sse_framing_without_usage(instant_sim: BackgroundSim) -> None:
    response = post(instant_sim.url, {"model": "m", "messages": USER, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-larrylab-sim"] == "test"
    events = response.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: ") for e in events[:-2])
    chunks = [orjson.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all("usage" not in c and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }


def test_async_client_streams(instant_sim: BackgroundSim) -> None:
    async def main() -> str:
        api = openai.AsyncOpenAI(base_url=f"{instant_sim.url}/v1", api_key="sim", max_retries=0)
        stream = await api.chat.completions.create(model="m", messages=USER, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    assert asyncio.run(main()) in PWS_REPLIES["jtbd"]


def test_list_of_parts_content_counts_as_prompt(instant_sim: BackgroundSim) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "You are Larry."},
        {"role": "user", "content": [{"type": "text", "text": "Explain the DIKW ladder"}]},
    ]
    completion = client(instant_sim.url).chat.completions.create(model="m", messages=messages)
    assert completion.usage is not None and completion.usage.prompt_tokens == 7
    assert completion.choices[0].message.content in PWS_REPLIES["ackoff_dikw"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_truncates(instant_sim: BackgroundSim, stream: bool, key: str) -> None:
    api = client(instant_sim.url)
    args: dict[str, Any] = {"model": "m", "messages": USER, key: 4}
    if stream:
        chunks = list(api.chat.completions.create(stream=True, **args))
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        choice = api.chat.completions.create(**args).choices[0]
        text, finish = choice.message.content or "", choice.finish_reason
    assert len(text.split()) == 4
    assert finish == "length"


def test_structured_output_with_parse(instant_sim: BackgroundSim) -> None:
    for _ in range(5):
        completion = client(instant_sim.url).chat.completions.parse(
            model="m", messages=USER, response_format=Plan
        )
        plan = completion.choices[0].message.parsed
        assert isinstance(plan, Plan)
        assert len(plan.steps) >= 2


@pytest.mark.parametrize("stream", [False, True])
def test_structured_output_json_schema(instant_sim: BackgroundSim, stream: bool) -> None:
    schema = Plan.model_json_schema()
    body = {
        "model": "m",
        "messages": USER,
        "stream": stream,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "plan", "schema": schema},
        },
    }
    response = post(instant_sim.url, body)
    if stream:
        chunks = [orjson.loads(line[6:]) for line in response.text.split("\n\n")[:-2]]
        content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    else:
        content = response.json()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), schema)


def test_json_object_mode(instant_sim: BackgroundSim) -> None:
    completion = client(instant_sim.url).chat.completions.create(
        model="m", messages=USER, response_format={"type": "json_object"}
    )
    value = json.loads(completion.choices[0].message.content or "")
    assert value["category"] == "jtbd"
    assert value["reply"] in PWS_REPLIES["jtbd"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [{"content": "no role"}]}, "messages"),
        ({"messages": USER}, "model"),
        ({"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": USER, "stream": "yes"}, "stream"),
        ({"model": "m", "messages": USER, "response_format": {"type": "xml"}}, "response_format"),
        ([1, 2], None),
    ],
)
def test_bad_requests_get_openai_400(
    instant_sim: BackgroundSim, body: Any, param: str | None
) -> None:
    response = post(instant_sim.url, body)
    assert response.status_code == 400
    assert response.headers["x-larrylab-sim"] == "test"
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["code"] is None
    assert error["message"]


def test_non_json_body_gets_400(instant_sim: BackgroundSim) -> None:
    response = httpx.post(f"{instant_sim.url}/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_openai_client_raises_bad_request(instant_sim: BackgroundSim) -> None:
    with pytest.raises(openai.BadRequestError):
        client(instant_sim.url).chat.completions.create(model="m", messages=[])


def test_models_health_and_unknown_paths(instant_sim: BackgroundSim) -> None:
    models = client(instant_sim.url).models.list()
    assert [m.id for m in models.data] == ["gemini-2.5-flash", "larry-v1"]
    health = httpx.get(f"{instant_sim.url}/healthz")
    assert health.json() == {"status": "ok", "simulated": True, "label": "test"}
    missing = httpx.get(f"{instant_sim.url}/v1/nothing")
    assert missing.status_code == 404
    assert missing.headers["x-larrylab-sim"] == "test"
    assert missing.json()["error"]["message"]
    assert httpx.get(f"{instant_sim.url}/v1/chat/completions").status_code == 405


@pytest.mark.parametrize(
    ("status", "error_type", "exc"),
    [
        (500, "server_error", openai.InternalServerError),
        (429, "rate_limit_error", openai.RateLimitError),
        (503, "server_error", openai.InternalServerError),
    ],
)
def test_injected_errors(
    sim_server: SimServer, status: int, error_type: str, exc: type[Exception]
) -> None:
    config = SimConfig(error_rate=1.0, error_status=status, ttft_ms=0, tokens_per_s=0)
    with sim_server(config) as sim:
        for stream in (False, True):
            response = post(sim.url, {"model": "m", "messages": USER, "stream": stream})
            assert response.status_code == status
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"]["type"] == error_type
        with pytest.raises(exc):
            client(sim.url).chat.completions.create(model="m", messages=USER)
