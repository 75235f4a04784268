"""Gemini's native REST protocol, exercised with the real google-genai SDK and raw httpx."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx
import httpx2
import jsonschema
import openai
import orjson
import pytest
from google import genai
from google.genai import errors, types
from pydantic import BaseModel, Field

from larrylab.sim import PWS_REPLIES, BackgroundSim, SimConfig

QUESTION = "What job do customers hire our product for?"
SYSTEM = "You are Larry, a coach."
PROMPT_WORDS = 8 + 5
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
USER_CONTENT: dict[str, Any] = {"role": "user", "parts": [{"text": QUESTION}]}

SimServer = Callable[[SimConfig], AbstractContextManager[BackgroundSim]]


def client(url: str, **options: Any) -> genai.Client:
    return genai.Client(api_key="k", http_options=types.HttpOptions(base_url=url, **options))


def config(**extra: Any) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(system_instruction=SYSTEM, **extra)


@pytest.fixture
def gemini(instant_sim: BackgroundSim) -> genai.Client:
    """A google-genai client of the shared instant simulator (keep it referenced: a collected
    client closes its connections)."""
    return client(instant_sim.url)


def instant(**extra: Any) -> SimConfig:
    return SimConfig(ttft_ms=0, tokens_per_s=0, **extra)


class Step(BaseModel):
    title: str = Field(min_length=3, max_length=40)
    minutes: int = Field(ge=1, le=30)


class Plan(BaseModel):
    steps: list[Step] = Field(min_length=2)
    confidence: int = Field(ge=1, le=5)
    note: str | None = None


def test_generate_content(gemini: genai.Client) -> None:
    response = gemini.models.generate_content(
        model="gemini-2.5-flash",
        contents=[types.Content(role="user", parts=[types.Part(text=QUESTION)])],
        config=config(temperature=0.2, max_output_tokens=50),
    )
    assert response.text in PWS_REPLIES["jtbd"]
    candidate = (response.candidates or [])[0]
    assert candidate.finish_reason == types.FinishReason.STOP
    assert candidate.content is not None and candidate.content.role == "model"
    assert response.model_version == "gemini-2.5-flash"
    assert response.response_id
    usage = response.usage_metadata
    assert usage is not None
    assert usage.prompt_token_count == PROMPT_WORDS
    assert usage.candidates_token_count == len(response.text.split())
    assert usage.total_token_count == PROMPT_WORDS + usage.candidates_token_count
    assert response.sdk_http_response is not None
    assert (response.sdk_http_response.headers or {})["x-larrylab-sim"] == "test"


def test_max_output_tokens_truncates(gemini: genai.Client) -> None:
    response = gemini.models.generate_content(
        model="gemini-2.5-flash", contents=QUESTION, config=config(max_output_tokens=4)
    )
    candidate = (response.candidates or [])[0]
    assert candidate.finish_reason == types.FinishReason.MAX_TOKENS
    assert response.text is not None and len(response.text.split()) == 4
    assert response.usage_metadata is not None
    assert response.usage_metadata.candidates_token_count == 4


def test_stream_concatenates_to_the_reply(gemini: genai.Client) -> None:
    chunks = list(
        gemini.models.generate_content_stream(
            model="gemini-2.5-flash", contents="Let's trend this to the absurd", config=config()
        )
    )
    assert len(chunks) > 3
    text = "".join(chunk.text or "" for chunk in chunks)
    assert text in PWS_REPLIES["tta"]
    *head, last = chunks
    assert all(c.usage_metadata is None for c in head)
    assert all((c.candidates or [])[0].finish_reason is None for c in head)
    assert (last.candidates or [])[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None
    assert last.usage_metadata.candidates_token_count == len(text.split()) == len(chunks)
    assert last.usage_metadata.prompt_token_count == 6 + 5
    assert len({c.response_id for c in chunks}) == 1


def test_api_version_v1(instant_sim: BackgroundSim) -> None:
    api = client(instant_sim.url, api_version="v1")
    response = api.models.generate_content(model="larry-v1", contents="Explain the DIKW ladder")
    assert response.text in PWS_REPLIES["ackoff_dikw"]
    assert [m.name for m in api.models.list()] == ["models/gemini-2.5-flash", "models/larry-v1"]


def test_count_tokens_matches_the_prompt_usage(instant_sim: BackgroundSim) -> None:
    api = client(instant_sim.url)
    counted = api.models.count_tokens(model="gemini-2.5-flash", contents=QUESTION)
    usage = api.models.generate_content(model="gemini-2.5-flash", contents=QUESTION).usage_metadata
    assert counted.total_tokens == 8
    assert usage is not None and usage.prompt_token_count == 8


def test_list_and_get_models_say_simulated(instant_sim: BackgroundSim) -> None:
    api = client(instant_sim.url)
    models = list(api.models.list())
    assert [m.name for m in models] == ["models/gemini-2.5-flash", "models/larry-v1"]
    for model in models:
        assert "SIMULATED" in (model.description or "")
        assert model.supported_actions == ["generateContent", "countTokens"]
    one = api.models.get(model="larry-v1")
    assert one.name == "models/larry-v1" and "SIMULATED" in (one.display_name or "")


def test_openai_clients_still_get_openai_models(instant_sim: BackgroundSim) -> None:
    api = openai.OpenAI(base_url=f"{instant_sim.url}/v1", api_key="sim", max_retries=0)
    assert [m.id for m in api.models.list()] == ["gemini-2.5-flash", "larry-v1"]
    listing = httpx.get(f"{instant_sim.url}/v1/models", params={"key": "k"}, timeout=10).json()
    assert [m["name"] for m in listing["models"]] == ["models/gemini-2.5-flash", "models/larry-v1"]


def test_response_schema_gives_parseable_json(gemini: genai.Client) -> None:
    response = gemini.models.generate_content(
        model="gemini-2.5-flash",
        contents="Plan my week",
        config=config(response_mime_type="application/json", response_schema=Plan),
    )
    assert isinstance(response.parsed, Plan)
    assert Plan.model_validate_json(response.text or "") == response.parsed


def test_response_json_schema_conforms(gemini: genai.Client) -> None:
    schema = Plan.model_json_schema()
    response = gemini.models.generate_content(
        model="gemini-2.5-flash",
        contents="Plan my week",
        config=config(response_mime_type="application/json", response_json_schema=schema),
    )
    jsonschema.validate(json.loads(response.text or ""), schema)


def test_json_mime_type_without_schema_gives_json(gemini: genai.Client) -> None:
    response = gemini.models.generate_content(
        model="gemini-2.5-flash",
        contents=QUESTION,
        config=config(response_mime_type="application/json"),
    )
    body = json.loads(response.text or "")
    assert body["category"] == "jtbd" and body["reply"] in PWS_REPLIES["jtbd"]


@pytest.mark.parametrize(
    ("status", "error", "name"),
    [
        (503, errors.ServerError, "UNAVAILABLE"),
        (500, errors.ServerError, "INTERNAL"),
        (429, errors.ClientError, "RESOURCE_EXHAUSTED"),
    ],
)
def test_injected_fault_raises_the_sdk_error(
    sim_server: SimServer, status: int, error: type[errors.APIError], name: str
) -> None:
    with sim_server(instant(error_rate=1.0, error_status=status)) as sim:
        api = client(sim.url)
        with pytest.raises(error) as raised:
            api.models.generate_content(model="gemini-2.5-flash", contents=QUESTION)
        assert raised.value.code == status
        assert raised.value.status == name
        assert "simulat" in (raised.value.message or "")
        with pytest.raises(error):
            list(api.models.generate_content_stream(model="gemini-2.5-flash", contents=QUESTION))


def test_injected_fault_in_the_async_client(sim_server: SimServer) -> None:
    async def main(api: genai.Client) -> None:
        await api.aio.models.generate_content(model="m", contents=QUESTION)

    with sim_server(instant(error_rate=1.0, error_status=503)) as sim:
        api = client(sim.url)
        with pytest.raises(errors.ServerError, match="failed on purpose"):
            asyncio.run(main(api))


def test_async_client(gemini: genai.Client) -> None:
    async def main() -> tuple[str | None, str]:
        api = gemini.aio
        whole = await api.models.generate_content(model="m", contents=QUESTION, config=config())
        stream = await api.models.generate_content_stream(model="m", contents=QUESTION)
        return whole.text, "".join([chunk.text or "" async for chunk in stream])

    whole, streamed = asyncio.run(main())
    assert whole in PWS_REPLIES["jtbd"]
    assert streamed in PWS_REPLIES["jtbd"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", "'contents' must be a non-empty array"),
        (b'{"contents": [{"role": "user"}]}', "'contents[0]' must be a Content object"),
        (b'{"contents": [{"role": "system", "parts": [{"text": "x"}]}]}', "valid role"),
        (b'{"contents": [{"parts": [{"text": 3}]}]}', "'contents[0].parts[0].text'"),
        (
            b'{"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": 0}}',
            "maxOutputTokens' must be a positive integer",
        ),
        (
            b'{"contents": [{"parts": [{"text": "x"}]}], "generationConfig": []}',
            "'generationConfig' must be an object",
        ),
        (
            b'{"contents": [{"parts": [{"text": "x"}]}],'
            b' "generationConfig": {"responseMimeType": "text/csv"}}',
            "not supported",
        ),
        (
            b'{"contents": [{"parts": [{"text": "x"}]}],'
            b' "generationConfig": {"responseSchema": {"type": "OBJECT"}}}',
            "needs responseMimeType",
        ),
    ],
)
def test_malformed_body_is_a_400_in_gemini_shape(
    instant_sim: BackgroundSim, body: bytes, words: str
) -> None:
    response = httpx.post(instant_sim.url + GENERATE, content=body, timeout=10)
    assert response.status_code == 400
    assert response.headers["x-larrylab-sim"] == "test"
    error = response.json()["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert words in error["message"]


def test_malformed_body_raises_client_error_in_the_sdk(instant_sim: BackgroundSim) -> None:
    api = client(instant_sim.url)
    with pytest.raises(errors.ClientError, match="valid role") as raised:
        api.models.generate_content(
            model="m", contents=[types.Content(role="coach", parts=[types.Part(text="hi")])]
        )
    assert raised.value.code == 400


def test_unknown_paths_and_methods_are_404_in_gemini_shape(instant_sim: BackgroundSim) -> None:
    url = instant_sim.url
    for response in (
        httpx.post(f"{url}/v1beta/models/m:embedContent", json={}, timeout=10),
        httpx.get(f"{url}/v1beta/models/m:generateContent", timeout=10),
        httpx.get(f"{url}/v1beta/tunedModels", timeout=10),
    ):
        assert response.status_code == 404
        assert response.headers["x-larrylab-sim"] == "test"
        assert response.json()["error"]["status"] == "NOT_FOUND"


def test_snake_case_fields_and_key_param(instant_sim: BackgroundSim) -> None:
    body = {
        "system_instruction": {"parts": [{"text": SYSTEM}]},
        "contents": [{"parts": [{"text": QUESTION}, {"inline_data": {"data": "AAAA"}}]}],
        "generation_config": {"max_output_tokens": 3, "stop_sequences": ["\n"], "top_p": 0.9},
        "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "tools": [{"googleSearch": {}}],
        "cached_content": "cachedContents/abc",
    }
    url = f"{instant_sim.url}/v1/models/larry-v1:generateContent"
    response = httpx.post(url, params={"key": "any"}, json=body, timeout=10)
    assert response.status_code == 200
    body_out = response.json()
    assert body_out["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert body_out["usageMetadata"] == {
        "promptTokenCount": PROMPT_WORDS,
        "candidatesTokenCount": 3,
        "totalTokenCount": PROMPT_WORDS + 3,
    }


def test_raw_sse_framing(instant_sim: BackgroundSim) -> None:
    response = httpx.post(
        instant_sim.url + STREAM,
        params={"alt": "sse"},
        headers={"x-goog-api-key": "k"},
        json={"contents": [USER_CONTENT]},
        timeout=10,
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-larrylab-sim"] == "test"
    events = response.text.split("\r\n\r\n")
    assert events[-1] == ""
    assert all(e.startswith("data: {") for e in events[:-1])
    chunks = [orjson.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert [list(c) for c in chunks[:-1]] == [["candidates", "modelVersion", "responseId"]] * (
        len(chunks) - 1
    )
    final = chunks[-1]
    assert final["candidates"][0]["finishReason"] == "STOP"
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert final["usageMetadata"]["candidatesTokenCount"] == len(text.split()) == len(chunks)


def test_stream_without_sse_is_one_json_array(instant_sim: BackgroundSim) -> None:
    response = httpx.post(instant_sim.url + STREAM, json={"contents": [USER_CONTENT]}, timeout=10)
    assert response.status_code == 200
    assert response.text.startswith("[{") and response.text.endswith("}]")
    assert ",\r\n{" in response.text
    chunks = json.loads(response.text)
    assert (
        "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
        in (PWS_REPLIES["jtbd"])
    )
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_seed_gives_the_same_replies_as_openai(sim_server: SimServer) -> None:
    questions = ["I want to build an app", "Is solar mature?", "Red team my plan"] * 2
    with sim_server(instant(seed=11)) as first, sim_server(instant(seed=11)) as second:
        api = client(first.url)
        gemini = [api.models.generate_content(model="m", contents=q).text for q in questions]
        chat = openai.OpenAI(base_url=f"{second.url}/v1", api_key="sim", max_retries=0)
        replies = [
            chat.chat.completions.create(model="m", messages=[{"role": "user", "content": q}])
            .choices[0]
            .message.content
            for q in questions
        ]
    assert gemini == replies


def test_stream_is_paced_by_ttft_and_decode_speed(sim_server: SimServer) -> None:
    settings = SimConfig(ttft_ms=100, latency_sigma=0, tokens_per_s=50, seed=1)
    with sim_server(settings) as sim:
        api = client(sim.url)
        started = time.monotonic()
        arrivals = [
            time.monotonic() - started
            for _ in api.models.generate_content_stream(
                model="m", contents=QUESTION, config=config(max_output_tokens=6)
            )
        ]
    assert len(arrivals) == 6
    assert arrivals[0] >= 0.095
    assert arrivals[-1] >= 0.1 + 5 / 50 - 0.01


def test_dropped_stream_surfaces_in_the_sdk(sim_server: SimServer) -> None:
    with sim_server(instant(drop_rate=1.0, seed=3)) as sim:
        api = client(sim.url)
        received: list[types.GenerateContentResponse] = []
        with pytest.raises(httpx2.RemoteProtocolError):
            received.extend(api.models.generate_content_stream(model="m", contents=QUESTION))
        assert received, "some chunks arrive before the drop"
        assert all(c.usage_metadata is None for c in received)


def test_gemini_schema_dialect_is_honoured(instant_sim: BackgroundSim) -> None:
    schema = {
        "type": "OBJECT",
        "properties": {
            "first_name": {"type": "STRING", "max_length": "12"},
            "tags": {
                "type": "ARRAY",
                "items": {"type": "STRING"},
                "minItems": "2",
                "maxItems": "2",
            },
            "score": {"type": "INTEGER", "minimum": 1, "maximum": 5, "nullable": True},
        },
        "required": ["first_name", "tags", "score"],
        "property_ordering": ["first_name", "tags", "score"],
    }
    body = {
        "contents": [USER_CONTENT],
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema},
    }
    response = httpx.post(instant_sim.url + GENERATE, json=body, timeout=10)
    assert response.status_code == 200, response.text
    value = json.loads(response.json()["candidates"][0]["content"]["parts"][0]["text"])
    assert set(value) == {"first_name", "tags", "score"}
    assert isinstance(value["first_name"], str) and len(value["first_name"]) <= 12
    assert len(value["tags"]) == 2 and all(isinstance(t, str) for t in value["tags"])
    assert value["score"] is None or value["score"] in range(1, 6)
