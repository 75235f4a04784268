"""Per-model timeouts against real loopback servers that hang, answer late or connect slowly.

The rule (README, Resilience): `first_token_timeout_s` bounds the time from the start of a call
to a model (connect and its one retry included) until the first byte of its answer (a stream's
first chunk; a JSON reply's status line), `total_timeout_s` the whole call; a candidate that
misses its first-token deadline falls back to the control and counts as a breaker failure.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from larrylab.config import Settings
from larrylab.localproc import LocalProcess
from larrylab.release._prepare import prepare_store
from larrylab.router._app import create_app
from larrylab.router._routing import Target
from larrylab.router._upstream import UpstreamError, complete, new_client, open_stream
from larrylab.sim import SimConfig, run_in_background

CHAT = {"model": "larry", "messages": [{"role": "user", "content": "What problem am I solving?"}]}
BODY = {"messages": CHAT["messages"]}
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _target(url: str, *, first: float, total: float, connect: float = 1.0, **kw: Any) -> Target:
    return Target(
        name=kw.get("name", "cand"),
        api=kw.get("api", "openai"),
        base_url=f"{url}/v1",
        upstream_model="cand",
        api_key_env=kw.get("api_key_env"),
        litellm_model=kw.get("litellm_model"),
        connect_timeout_s=connect,
        first_token_timeout_s=first,
        total_timeout_s=total,
    )


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)


def _chunked(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@asynccontextmanager
async def _server(handler: Handler) -> AsyncIterator[str]:
    """Serve `handler` (after reading each request) on a free loopback port."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _read_request(reader)
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client left, or the test ended
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def _timed(coro: Awaitable[Any]) -> tuple[UpstreamError, float]:
    started = time.monotonic()
    with pytest.raises(UpstreamError) as caught:
        await coro
    return caught.value, time.monotonic() - started


@contextmanager
def _unconnectable_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a connect to it hangs (its SYN is dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        with suppress(BlockingIOError):  # a non-blocking connect completes later
            s.connect(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.05)
    try:
        yield port
    finally:
        for s in fillers:
            s.close()
        listener.close()


# The upstream layer on its own.


def test_a_hanging_json_call_times_out_at_its_first_token_deadline() -> None:
    async def go() -> tuple[UpstreamError, float]:
        async with _server(_hang) as url, new_client() as client:
            return await _timed(complete(client, _target(url, first=0.4, total=3), BODY))

    err, took = asyncio.run(go())
    assert err.error_class == "timeout" and err.status == 504 and err.fallback_ok
    assert "first-token timeout" in err.message
    assert 0.35 < took < 1.5


def test_the_first_token_deadline_counts_from_the_start_not_from_the_headers() -> None:
    async def late_chunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.3)
        writer.write(SSE_HEAD)
        await asyncio.sleep(0.4)  # first chunk at 0.7 s: after the 0.5 s deadline
        writer.write(_chunked(CHUNK))
        await asyncio.sleep(30)

    async def go() -> tuple[UpstreamError, float]:
        async with _server(late_chunk) as url, new_client() as client:
            target = _target(url, first=0.5, total=3)
            return await _timed(open_stream(client, target, {**BODY, "stream": True}))

    err, took = asyncio.run(go())
    assert err.error_class == "timeout" and "first-token timeout" in err.message
    assert 0.45 < took < 0.68


def test_a_json_body_may_take_longer_than_the_first_token_timeout_but_not_the_total() -> None:
    reply = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}'

    def slow_body(stall_s: float) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(reply))
            writer.write(reply[:10])
            await asyncio.sleep(stall_s)
            writer.write(reply[10:])
            await asyncio.sleep(30)

        return handler

    async def go() -> tuple[dict[str, Any], UpstreamError, float]:
        async with new_client() as client:
            async with _server(slow_body(0.5)) as url:
                done = await complete(client, _target(url, first=0.3, total=2), BODY)
            async with _server(slow_body(30)) as url:
                err, took = await _timed(complete(client, _target(url, first=0.3, total=0.7), BODY))
        return done.data, err, took

    data, err, took = asyncio.run(go())
    assert data["choices"][0]["message"]["content"] == "hi"
    assert err.error_class == "timeout" and "total timeout" in err.message
    assert 0.65 < took < 1.3


def test_the_total_timeout_ends_a_stream_that_never_ends() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD)
        while True:
            writer.write(_chunked(CHUNK))
            await asyncio.sleep(0.05)

    async def go() -> tuple[UpstreamError, float]:
        async with _server(endless) as url, new_client() as client:
            started = time.monotonic()
            target = _target(url, first=0.3, total=0.6)
            stream = await open_stream(client, target, {**BODY, "stream": True})
            with pytest.raises(UpstreamError) as caught:
                async for _ in stream.rest:
                    pass
            await stream.aclose()
            return caught.value, time.monotonic() - started

    err, took = asyncio.run(go())
    assert err.error_class == "timeout" and "total timeout" in err.message
    assert 0.55 < took < 1.0


def test_a_stream_whose_end_stalls_after_done_is_still_whole() -> None:
    async def no_last_chunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + _chunked(CHUNK) + _chunked(b"data: [DONE]\n\n"))
        await asyncio.sleep(30)  # the chunked body's terminator never comes

    async def go() -> int:
        async with _server(no_last_chunk) as url, new_client() as client:
            target = _target(url, first=0.2, total=5)
            stream = await open_stream(client, target, {**BODY, "stream": True})
            rest = [batch async for batch in stream.rest]  # no error: the reply is whole
            await stream.aclose()
            return len(stream.first) + sum(len(b) for b in rest)

    assert asyncio.run(go()) == 1


def test_litellm_models_keep_the_same_first_token_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import litellm  # noqa: F401  (imported before the clock starts: it takes seconds)

    monkeypatch.setenv("LARRYLAB_TEST_UPSTREAM_KEY", "sk-test")

    async def go() -> list[tuple[UpstreamError, float]]:
        async with _server(_hang) as url:
            target = _target(
                url,
                first=0.4,
                total=5,
                api="litellm",
                litellm_model="openai/cand",
                api_key_env="LARRYLAB_TEST_UPSTREAM_KEY",
            )
            return [
                await _timed(complete(new_client(), target, BODY)),
                await _timed(open_stream(new_client(), target, {**BODY, "stream": True})),
            ]

    for err, took in asyncio.run(go()):
        assert err.error_class == "timeout" and "first-token timeout" in err.message
        assert took < 2.0


# Through the router: fallback, breaker, log rows.


def _config(path: Path, control: str, hangs: str, slow: str) -> Path:
    limits = "first_token_timeout_s: 0.5, total_timeout_s: 5, connect_timeout_s: 2"
    path.write_text(
        "models:\n"
        f"  gemini-flash: {{api: openai, base_url: {control}/v1, model: gemini-2.5-flash}}\n"
        f"  hangs: {{api: openai, base_url: {hangs}/v1, model: larry-v1, {limits}}}\n"
        f"  slow: {{api: openai, base_url: {slow}/v1, model: larry-v1, {limits}}}\n"
        "experiments:\n"
        "  - {name: hang, route: larry, arms: [{model: gemini-flash, weight: 0, control: true},"
        " {model: hangs, weight: 100}]}\n"
        "  - {name: slow, route: slowly, arms: [{model: gemini-flash, weight: 0, control: true},"
        " {model: slow, weight: 100}]}\n"
    )
    return path


@contextmanager
def _router(tmp_path: Path, control: LocalProcess) -> Iterator[TestClient]:
    """The router in-process: `hangs` never answers, `slow` cannot be connected to; both give
    up after 0.5 s (connect 2 s, total 5 s); two failures in a row open a breaker."""
    hanging = SimConfig(hang_rate=1.0, hang_s=30, ttft_ms=0, tokens_per_s=0)
    with run_in_background(hanging) as sim, _unconnectable_port() as port:
        config = _config(tmp_path / "c.yaml", control.url, sim.url, f"http://127.0.0.1:{port}")
        s = Settings(
            database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
            config=config,
            breaker_failures=2,
            breaker_cooldown_s=600,
        )
        prepare_store(s)
        with TestClient(create_app(s), raise_server_exceptions=False) as client:
            yield client


def _rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    """The log's rows, once the router has stopped (it stores them all by then)."""
    sql = "SELECT model, stream, status, http_status, error_class, fallback_from FROM request"
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        return conn.execute(sql + " ORDER BY created_at").fetchall()


def test_a_hanging_candidate_falls_back_within_its_first_token_timeout_and_trips_its_breaker(
    tmp_path: Path, fast_sim: LocalProcess
) -> None:
    with _router(tmp_path, fast_sim) as router:
        for i, stream in enumerate([False, True, False]):
            started = time.monotonic()
            body = {**CHAT, "user": f"h{i}", "stream": stream}
            r = router.post("/v1/chat/completions", json=body)
            took = time.monotonic() - started
            assert r.status_code == 200 and r.headers["x-larrylab-arm"] == "gemini-flash", r.text
            assert took < (1.5 if i < 2 else 1.0), took
        summary = router.get("/admin/experiments/hang/report").json()
        assert summary["breakers"]["hangs"] == "open"
    assert _rows(tmp_path) == [
        ("gemini-flash", 0, "ok", 200, "timeout", "hangs"),
        ("gemini-flash", 1, "ok", 200, "timeout", "hangs"),
        ("gemini-flash", 0, "ok", 200, "circuit_open", "hangs"),
    ]


def test_a_stream_falls_back_within_the_first_token_timeout_when_connecting_hangs(
    tmp_path: Path, fast_sim: LocalProcess
) -> None:
    with _router(tmp_path, fast_sim) as router:
        started = time.monotonic()
        body = {**CHAT, "model": "slowly", "stream": True}
        r = router.post("/v1/chat/completions", json=body)
        took = time.monotonic() - started
        assert r.status_code == 200 and r.headers["x-larrylab-arm"] == "gemini-flash"
        assert r.text.rstrip().endswith("data: [DONE]")
        assert took < 1.5, took  # 0.5 s, not connect (2 s) plus a retry
    assert _rows(tmp_path) == [("gemini-flash", 1, "ok", 200, "timeout", "slow")]


@pytest.mark.parametrize("stream", [False, True])
def test_a_hanging_control_gets_a_504_at_its_first_token_timeout(
    tmp_path: Path, fast_sim: LocalProcess, stream: bool
) -> None:
    with _router(tmp_path, fast_sim) as router:
        started = time.monotonic()
        r = router.post("/v1/chat/completions", json={**CHAT, "model": "hangs", "stream": stream})
        took = time.monotonic() - started
    assert r.status_code == 504
    assert "first-token timeout of 0.5 s" in r.json()["error"]["message"]
    assert took < 1.5, took
    assert _rows(tmp_path) == [("hangs", int(stream), "error", 504, "timeout", None)]
