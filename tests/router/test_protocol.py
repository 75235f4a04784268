"""The router's server protocol sends a response's head and body in one write."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from larrylab.router._protocol import CoalescingHttpToolsProtocol, CoalescingTransport


class RecordingTransport:
    """Just enough of a transport for uvicorn's protocol: it records what is written."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def writelines(self, pieces: Any) -> None:
        self.write(b"".join(pieces))  # one write, as uvloop's writev

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def write_eof(self) -> None:
        self.writes.append(b"<eof>")

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8400)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _json_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers like the router's JSON path: a start message, then the whole body."""
    assert scope["type"] == "http"
    body = b'{"object": "chat.completion"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _stream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers like the router's streaming path: chunks with waits between them."""
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for i in range(3):
        await asyncio.sleep(0.01)  # the next chunk comes from upstream later
        await send({"type": "http.response.body", "body": b"data: %d\n\n" % i, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def _serve_one(protocol_class: type[HttpToolsProtocol], app: Any) -> RecordingTransport:
    """Feed one keep-alive request to a protocol over a recording transport; what it wrote."""

    async def go() -> RecordingTransport:
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        transport = RecordingTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        protocol.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n")
        for _ in range(200):
            await asyncio.sleep(0.005)
            if any(w.endswith((b"}", b"\r\n0\r\n\r\n")) for w in transport.writes):
                break
        await asyncio.sleep(0.01)
        return transport

    return asyncio.run(go())


def test_a_json_reply_goes_out_in_one_write_head_and_body() -> None:
    plain = _serve_one(HttpToolsProtocol, _json_app)
    assert len(plain.writes) == 2  # uvicorn alone: the head, then the body

    coalesced = _serve_one(CoalescingHttpToolsProtocol, _json_app)
    assert len(coalesced.writes) == 1
    (reply,) = coalesced.writes
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.endswith(b'\r\n\r\n{"object": "chat.completion"}')
    assert reply.count(b"HTTP/1.1") == 1
    assert not coalesced.closed  # keep-alive: the connection stays open


def test_a_stream_sends_each_chunk_when_it_comes_the_head_with_the_first() -> None:
    transport = _serve_one(CoalescingHttpToolsProtocol, _stream_app)
    # The head waits at most one step of the loop: it leaves alone, before the first chunk
    # (which comes 10 ms later); every chunk leaves as it comes, the last with the stream's end.
    head, *chunks = transport.writes
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert chunks == [
        b"9\r\ndata: 0\n\n\r\n",
        b"9\r\ndata: 1\n\n\r\n",
        b"9\r\ndata: 2\n\n\r\n0\r\n\r\n",
    ]


def test_the_transport_holds_at_most_one_write_for_less_than_one_loop_step() -> None:
    async def go() -> None:
        inner = RecordingTransport()
        t = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"a")
        assert inner.writes == [] and t.get_write_buffer_size() == 1 + 7
        t.write(b"b")
        t.write(b"c")
        assert inner.writes == [b"ab"]  # two writes in one, the third held
        await asyncio.sleep(0)
        assert inner.writes == [b"ab", b"c"]  # the step ended: sent
        t.writelines([b"d", b"e"])
        t.write_eof()
        assert inner.writes == [b"ab", b"c", b"de", b"<eof>"]
        t.write(b"f")
        t.close()  # sends what it holds first
        assert inner.writes[-1] == b"f" and inner.closed
        await asyncio.sleep(0)
        assert inner.writes[-1] == b"f"  # the scheduled send found nothing left

        dropped = RecordingTransport()
        t = CoalescingTransport(dropped, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"g")
        t.abort()
        await asyncio.sleep(0)
        assert dropped.writes == [] and dropped.aborted
        assert t.get_extra_info("peername") == ("127.0.0.1", 50000)  # the rest is the inner's

    asyncio.run(go())


def test_nothing_is_written_to_a_transport_that_closed_meanwhile() -> None:
    async def go() -> list[bytes]:
        inner = RecordingTransport()
        t = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"late")
        inner.closed = True  # the peer went away before the step ended
        await asyncio.sleep(0)
        return inner.writes

    assert asyncio.run(go()) == []
