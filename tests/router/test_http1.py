"""The router's HTTP/1.1 client against raw loopback servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from larrylab.router._http1 import ConnectError, Http1Client, ResponseError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length)


async def _serve(
    handler: Handler, client_body: Callable[[Http1Client, str], Awaitable[None]]
) -> int:
    """Run `handler` as a server on loopback while `client_body` uses a client; returns how many
    connections the server accepted."""
    accepted = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, Http1Client() as client:
        await client_body(client, f"http://127.0.0.1:{port}/v1/chat/completions")
    return accepted


def _json_reply(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def _post(client: Http1Client, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    resp = await client.post(url, body, {"content-type": "application/json"}, connect_timeout_s=2)
    try:
        return resp.status, await resp.read()
    finally:
        resp.release()


def test_keep_alive_reuses_one_connection_and_echoes_the_body() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(_json_reply(await _read_request(reader)))

    async def use(client: Http1Client, url: str) -> None:
        for i in range(5):
            assert await _post(client, url, b'{"n": %d}' % i) == (200, b'{"n": %d}' % i)

    assert asyncio.run(_serve(echo, use)) == 1


def test_chunked_body_arrives_piece_by_piece() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")
        await reader.read()  # keep the connection open

    async def use(client: Http1Client, url: str) -> None:
        resp = await client.post(url, b"{}", {}, connect_timeout_s=2)
        pieces = []
        while (piece := await resp.next_chunk(timeout=2)) is not None:
            pieces.append(piece)
        resp.release()
        assert len(pieces) == 3 and b"".join(pieces).endswith(b"data: [DONE]\n\n")

    asyncio.run(_serve(chunked, use))


def test_a_stalled_stream_times_out_per_read() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await reader.read()

    async def use(client: Http1Client, url: str) -> None:
        resp = await client.post(url, b"{}", {}, connect_timeout_s=2)
        assert await resp.next_chunk(timeout=2) == b"hello"
        with pytest.raises(TimeoutError):
            await resp.next_chunk(timeout=0.1)
        resp.release()

    asyncio.run(_serve(stall, use))


def test_a_read_waits_until_its_deadline_and_no_longer() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await reader.read()

    async def use(client: Http1Client, url: str) -> None:
        loop = asyncio.get_running_loop()
        resp = await client.post(url, b"{}", {}, connect_timeout_s=2)
        await asyncio.sleep(0.05)
        # what has arrived is returned even past the deadline; waiting for more is not
        assert await resp.next_chunk(deadline=loop.time() - 1) == b"hello"
        started = loop.time()
        with pytest.raises(TimeoutError):
            await resp.next_chunk(timeout=5, deadline=started + 0.15)  # the earlier one counts
        assert 0.14 < loop.time() - started < 0.5
        resp.release()

    asyncio.run(_serve(stall, use))


def test_a_body_ended_by_close_is_read_whole_and_a_cut_one_is_an_error() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nthe whole body")
        await writer.drain()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()

    async def whole(client: Http1Client, url: str) -> None:
        assert await _post(client, url) == (200, b"the whole body")

    async def broken(client: Http1Client, url: str) -> None:
        with pytest.raises(ResponseError, match="closed before the response ended"):
            await _post(client, url)

    asyncio.run(_serve(until_close, whole))
    asyncio.run(_serve(cut, broken))


def test_a_pooled_connection_the_server_closed_is_replaced() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_json_reply(await _read_request(reader)))
        await writer.drain()  # then close: keep-alive was offered but the server hangs up

    async def use(client: Http1Client, url: str) -> None:
        assert await _post(client, url, b"1") == (200, b"1")
        await asyncio.sleep(0.05)  # the close reaches the pooled connection
        assert await _post(client, url, b"2") == (200, b"2")

    assert asyncio.run(_serve(once, use)) == 2


def test_malformed_response_and_refused_connection_are_clear_errors() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await reader.read()

    async def use(client: Http1Client, url: str) -> None:
        with pytest.raises(ResponseError, match="malformed"):
            await _post(client, url)

    asyncio.run(_serve(garbage, use))

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def refused() -> None:
        async with Http1Client() as client:
            with pytest.raises(ConnectError):
                await _post(client, f"http://127.0.0.1:{port}/v1/chat/completions")

    asyncio.run(refused())


def test_a_large_body_is_read_completely_with_reading_paused_between() -> None:
    size = 5 * (1 << 20)

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()
        await reader.read()

    async def use(client: Http1Client, url: str) -> None:
        resp = await client.post(url, b"{}", {}, connect_timeout_s=2)
        await asyncio.sleep(0.3)  # let the unread body pile up past the pause mark
        total = 0
        while (piece := await resp.next_chunk(timeout=5)) is not None:
            total += len(piece)
        resp.release()
        assert total == size

    asyncio.run(_serve(big, use))


def test_a_large_body_read_whole_is_not_paused() -> None:
    size = 3 * (1 << 20)

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"y" * size)
        await writer.drain()
        await reader.read()

    async def use(client: Http1Client, url: str) -> None:
        resp = await client.post(url, b"{}", {}, connect_timeout_s=2)
        await asyncio.sleep(0.2)  # past the pause mark before anyone reads
        async with asyncio.timeout(10):
            assert len(await resp.read()) == size
        resp.release()

    asyncio.run(_serve(big, use))


def test_header_values_with_line_breaks_are_refused() -> None:
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async def use(client: Http1Client, url: str) -> None:
        with pytest.raises(ValueError, match="line break"):
            await client.post(
                url, b"{}", {"authorization": "Bearer x\r\nX-Evil: 1"}, connect_timeout_s=2
            )

    asyncio.run(_serve(never, use))


def test_max_connections_bounds_open_exchanges_and_cancelled_waiters_free_nothing() -> None:
    open_now = 0
    most = 0

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, most
        while True:
            body = await _read_request(reader)
            open_now += 1
            most = max(most, open_now)
            await asyncio.sleep(0.3)  # long beside the 0.01 s steps below
            open_now -= 1
            writer.write(_json_reply(body))

    async def use(_: Http1Client, url: str) -> None:
        nonlocal most
        async with Http1Client(max_connections=2) as client:
            first = asyncio.gather(*(_post(client, url, b"%d" % i) for i in range(2)))
            await asyncio.sleep(0.01)
            waiting = asyncio.create_task(_post(client, url, b"gone"))  # no slot free
            await asyncio.sleep(0.01)
            waiting.cancel()
            rest = asyncio.gather(*(_post(client, url, b"%d" % i) for i in range(2, 6)))
            assert sorted(await first + await rest) == [(200, b"%d" % i) for i in range(6)]
            assert most == 2
            most = 0  # every slot came back: two more run side by side again
            await asyncio.gather(_post(client, url), _post(client, url))
            assert most == 2

    asyncio.run(_serve(slow, use))
