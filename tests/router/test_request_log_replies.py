"""What the request log keeps of a reply is what the model answered: a streamed reply's tool
calls (not an empty message), and only the first of several streamed choices."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from larrylab.config import Settings
from larrylab.release._prepare import prepare_store
from larrylab.router._app import create_app
from tests.conftest import served


def _chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
    body: dict[str, Any] = {"id": "up", "object": "chat.completion.chunk", "choices": choices}
    if usage:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"


TOOL_STREAM = b"".join(
    [
        _chunk([{"index": 0, "delta": {"role": "assistant", "content": None}}]),
        _chunk(
            [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "search_pws", "arguments": '{"qu'},
                            }
                        ]
                    },
                }
            ]
        ),
        _chunk(
            [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [{"index": 0, "function": {"arguments": 'ery": "TTA"}'}}]
                    },
                }
            ]
        ),
        _chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        _chunk([], {"prompt_tokens": 9, "completion_tokens": 7}),
        b"data: [DONE]\n\n",
    ]
)

TWO_CHOICES_STREAM = b"".join(
    [
        _chunk([{"index": 0, "delta": {"role": "assistant", "content": "What "}}]),
        _chunk([{"index": 1, "delta": {"role": "assistant", "content": "Which "}}]),
        _chunk([{"index": 0, "delta": {"content": "problem?"}}]),
        _chunk([{"index": 1, "delta": {"content": "job?"}}]),
        _chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        _chunk([{"index": 1, "delta": {}, "finish_reason": "stop"}]),
        b"data: [DONE]\n\n",
    ]
)


@pytest.fixture
def upstream() -> Iterator[tuple[str, dict[str, bytes]]]:
    """An OpenAI-compatible upstream streaming whatever `streams[model]` holds."""
    streams: dict[str, bytes] = {}

    async def chat(request: Request) -> Response:
        model = json.loads(await request.body())["model"]
        return Response(streams[model], media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    with served(app) as url:
        yield f"{url}/v1", streams


def _stored_reply(tmp_path: Path, config: str, model: str, body: dict[str, Any]) -> Any:
    (tmp_path / "larrylab.yaml").write_text(config)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        config=tmp_path / "larrylab.yaml",
        journal_dir=str(tmp_path / "journal"),
    )
    prepare_store(settings)
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/chat/completions", json={**body, "model": model, "stream": True})
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        (reply,) = conn.execute(
            "SELECT m.body FROM request r JOIN message m ON m.id = r.reply_message_id"
        ).fetchone()
        tokens = conn.execute("SELECT prompt_tokens, completion_tokens FROM request").fetchone()
    return json.loads(reply), tokens


BODY = {"messages": [{"role": "user", "content": "Find me the TTA notes."}]}


def test_a_streamed_tool_call_is_stored_as_the_call(
    tmp_path: Path, upstream: tuple[str, dict[str, bytes]]
) -> None:
    url, streams = upstream
    streams["tooly"] = TOOL_STREAM
    config = f"models: {{tooly: {{base_url: '{url}', model: tooly}}}}\n"
    reply, tokens = _stored_reply(tmp_path, config, "tooly", BODY)
    assert reply["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "search_pws", "arguments": '{"query": "TTA"}'},
        }
    ]
    assert tokens == (9, 7)


def test_only_the_first_of_two_streamed_choices_is_the_reply(
    tmp_path: Path, upstream: tuple[str, dict[str, bytes]]
) -> None:
    url, streams = upstream
    streams["twice"] = TWO_CHOICES_STREAM
    config = f"models: {{twice: {{base_url: '{url}', model: twice}}}}\n"
    reply, _ = _stored_reply(tmp_path, config, "twice", {**BODY, "n": 2})
    assert reply == {"role": "assistant", "content": "What problem?"}
