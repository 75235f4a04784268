"""The Ollama wire protocol (`/api/chat` NDJSON and JSON, `/api/tags`), parsed with httpx."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx
import jsonschema
import orjson
import pytest

from larrylab.sim import PWS_REPLIES, BackgroundSim, SimConfig

MESSAGES = [
    {"role": "system", "content": "You are Larry."},
    {"role": "user", "content": "Where is this technology on its S-curve?"},
]
PROMPT_WORDS = 10
DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")

SimServer = Callable[[SimConfig], AbstractContextManager[BackgroundSim]]


def chat(url: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/api/chat", json={"model": "larry-v1", **body}, timeout=10)


def test_streams_ndjson_by_default(instant_sim: BackgroundSim) -> None:
    response = chat(instant_sim.url, messages=MESSAGES)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["x-larrylab-sim"] == "test"
    lines = [orjson.loads(line) for line in response.text.splitlines()]
    *parts, final = lines
    assert all(p["done"] is False and p["model"] == "larry-v1" for p in parts)
    assert all(p["message"]["role"] == "assistant" for p in parts)
    assert all(p["created_at"].endswith("Z") for p in lines)
    text = "".join(p["message"]["content"] for p in parts)
    assert text in PWS_REPLIES["s_curve"]
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["eval_count"] == len(parts) == len(text.split())
    assert final["prompt_eval_count"] == PROMPT_WORDS
    assert all(isinstance(final[k], int) and final[k] >= 0 for k in DURATIONS)
    assert final["total_duration"] >= final["eval_duration"]


def test_non_streaming_reply(instant_sim: BackgroundSim) -> None:
    response = chat(instant_sim.url, messages=MESSAGES, stream=False)
    body = response.json()
    assert body["done"] is True
    assert body["done_reason"] == "stop"
    assert body["message"]["role"] == "assistant"
    assert body["message"]["content"] in PWS_REPLIES["s_curve"]
    assert body["eval_count"] == len(body["message"]["content"].split())
    assert all(isinstance(body[k], int) for k in DURATIONS)


@pytest.mark.parametrize("stream", [False, True])
def test_num_predict_truncates(instant_sim: BackgroundSim, stream: bool) -> None:
    response = chat(instant_sim.url, messages=MESSAGES, stream=stream, options={"num_predict": 3})
    final = orjson.loads(response.text.splitlines()[-1])
    assert final["done_reason"] == "length"
    assert final["eval_count"] == 3


def test_format_json_and_schema(instant_sim: BackgroundSim) -> None:
    body = chat(instant_sim.url, messages=MESSAGES, stream=False, format="json").json()
    assert isinstance(json.loads(body["message"]["content"]), dict)
    schema = {
        "type": "object",
        "properties": {
            "stage": {"enum": ["early", "growth", "mature"]},
            "evidence": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "required": ["stage", "evidence"],
        "additionalProperties": False,
    }
    response = chat(instant_sim.url, messages=MESSAGES, format=schema)
    lines = [orjson.loads(line) for line in response.text.splitlines()]
    content = "".join(line["message"]["content"] for line in lines)
    jsonschema.validate(json.loads(content), schema)


@pytest.mark.parametrize(
    "body",
    [
        {"messages": MESSAGES, "model": ""},
        {"messages": []},
        {"messages": MESSAGES, "format": "yaml"},
        {"messages": MESSAGES, "options": {"num_predict": "ten"}},
        {"messages": MESSAGES, "stream": "no"},
    ],
)
def test_bad_requests_get_ollama_400(instant_sim: BackgroundSim, body: dict[str, Any]) -> None:
    response = chat(instant_sim.url, **body)
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


def test_non_json_body_gets_400(instant_sim: BackgroundSim) -> None:
    response = httpx.post(f"{instant_sim.url}/api/chat", content=b"nope")
    assert response.status_code == 400
    assert response.json()["error"]


def test_tags_and_unknown_path(instant_sim: BackgroundSim) -> None:
    tags = httpx.get(f"{instant_sim.url}/api/tags").json()
    assert [m["name"] for m in tags["models"]] == ["gemini-2.5-flash", "larry-v1"]
    assert all(m["details"]["family"] == "larrylab-sim" for m in tags["models"])
    missing = httpx.get(f"{instant_sim.url}/api/nothing")
    assert missing.status_code == 404
    assert set(missing.json()) == {"error"}


def test_injected_error(sim_server: SimServer) -> None:
    config = SimConfig(error_rate=1.0, error_status=502, ttft_ms=0, tokens_per_s=0)
    with sim_server(config) as sim:
        for stream in (False, True):
            response = chat(sim.url, messages=MESSAGES, stream=stream)
            assert response.status_code == 502
            assert "error" in response.json()
