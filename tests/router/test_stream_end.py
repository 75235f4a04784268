"""How an upstream's OpenAI stream may end: `[DONE]`, or the body's end after the chunk that
gave a `finish_reason` (what `transformers serve` sends); a stream cut before either is an
error the client is told of."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tests.conftest import served
from tests.router.factories import CHAT, router_client


def _chunk(content: str | None, finish: str | None = None, usage: bool = False) -> bytes:
    delta = {} if content is None else {"content": content}
    choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
    chunk: dict[str, Any] = {"id": "up", "object": "chat.completion.chunk", "choices": choices}
    if usage:
        chunk["usage"] = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _upstream(
    events: list[bytes], pause_after_first_s: float = 0.0, pause_at_end_s: float = 0.0
) -> Starlette:
    async def completions(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for i, event in enumerate(events):
                if i == 1 and pause_after_first_s:
                    await asyncio.sleep(pause_after_first_s)
                yield event
            await asyncio.sleep(pause_at_end_s)  # the body's end comes after [DONE]

        return StreamingResponse(body(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@pytest.fixture
def router_on(tmp_path: Path) -> Iterator[Any]:
    def start(
        events: list[bytes], pause_after_first_s: float = 0.0, pause_at_end_s: float = 0.0
    ) -> Iterator[TestClient]:
        with served(_upstream(events, pause_after_first_s, pause_at_end_s)) as url:
            yield from router_client(tmp_path, SimpleNamespace(url=url))  # type: ignore[arg-type]

    return start


def _events(client: TestClient) -> list[bytes]:
    with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
        assert resp.status_code == 200
        body = b"".join(resp.iter_bytes())
    return [e.removeprefix(b"data: ") for e in body.split(b"\n\n") if e]


def test_a_stream_ending_after_its_finish_chunk_without_done_is_whole(router_on: Any) -> None:
    finished = [_chunk("Who "), _chunk("asked?"), _chunk(None, "stop"), _chunk(None, usage=True)]
    for client in router_on(finished):
        events = _events(client)
        assert events[-1] == b"[DONE]"
        text = "".join(
            c["delta"].get("content") or "" for e in events[:-1] for c in orjson.loads(e)["choices"]
        )
        assert text == "Who asked?"
        assert all("error" not in orjson.loads(e) for e in events[:-1])


def test_a_stream_cut_before_its_finish_chunk_ends_with_an_error(router_on: Any) -> None:
    for client in router_on([_chunk("Who "), _chunk("asked?")]):
        events = _events(client)
        assert events[-1] != b"[DONE]"
        error = orjson.loads(events[-1])["error"]
        assert "without [DONE]" in error["message"]


def test_time_to_first_token_is_the_first_chunk_with_text(router_on: Any, tmp_path: Path) -> None:
    opening = _chunk("")  # an empty first chunk, as transformers serve sends before any token
    events = [opening, _chunk("Who?"), _chunk(None, "stop"), b"data: [DONE]\n\n"]
    for client in router_on(events, pause_after_first_s=0.3):
        assert _events(client)[-1] == b"[DONE]"
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        ttft_ms, latency_ms = conn.execute("SELECT ttft_ms, latency_ms FROM request").fetchone()
    assert 300 <= ttft_ms <= latency_ms


def test_a_reply_whose_upstream_body_ends_after_done_is_logged_as_served(
    router_on: Any, tmp_path: Path
) -> None:
    events = [_chunk("Who?"), _chunk(None, "stop"), b"data: [DONE]\n\n"]
    for client in router_on(events, pause_at_end_s=0.3):
        assert _events(client)[-1] == b"[DONE]"  # the client has it all, and goes
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        (status,) = conn.execute("SELECT status FROM request").fetchone()
    assert status == "ok"
