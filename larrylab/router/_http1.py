"""A small keep-alive HTTP/1.1 client for the router's calls to OpenAI-type upstreams.

Written by hand because the upstream call was the largest item left in the router's event-loop
profile: aiohttp's client, socket write included, took about 27% of the loop's samples at
concurrency 20 (py-spy, `bench/results/router_overhead.md`). This client does only what those
calls need: a POST with a JSON body over pooled keep-alive connections (plain TCP or TLS), the
response parsed by httptools (llhttp, the parser uvicorn uses), its body read whole or piece by
piece as it arrives (Content-Length, chunked, or until the server closes).

Timeouts other than connecting are the caller's (`asyncio.timeout_at` around the awaits, or
`next_chunk`'s deadline).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import httptools

_PAUSE_AT = 1 << 20  # stop reading a response whose unread body reaches 1 MiB


class HttpError(Exception):
    """A failed exchange: the request did not get a complete, well-formed response."""


class ConnectError(HttpError):
    """No connection could be made (nothing was sent)."""


class ResponseError(HttpError):
    """The connection broke or the response was malformed."""

    def __init__(self, message: str, *, nothing_received: bool = False) -> None:
        super().__init__(message)
        self.nothing_received = nothing_received


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @property
    def authority(self) -> bytes:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (host if self.port == default else f"{host}:{self.port}").encode("ascii")


class Response:
    """A response whose status has arrived; its body is read with `read()` or `next_chunk()`.

    Always `release()` it: the connection goes back to the pool when the body was read to the
    end, and is closed otherwise.
    """

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self._head: asyncio.Future[None] = conn.loop.create_future()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._error: HttpError | None = None
        self._received = False
        self._released = False
        self._pausable = True

    @property
    def ended(self) -> bool:
        """Whether the whole body has arrived (`read()` will not wait)."""
        return self._complete

    async def read(self) -> bytes:
        """The whole body."""
        self._pausable = False  # the body is wanted whole: never stop reading it
        if self._buffered >= _PAUSE_AT:
            self._conn.resume()
        while not self._complete:
            await self._wait()
        return self._take()

    async def next_chunk(
        self, timeout: float | None = None, *, deadline: float | None = None
    ) -> bytes | None:
        """The body bytes that arrived since the last call; None once the body has ended.

        Waits for some at most `timeout` seconds, or until `deadline` (the event loop's
        monotonic clock, `loop.time()`), whichever comes first; TimeoutError after that."""
        if timeout is not None:
            until = self._conn.loop.time() + timeout
            deadline = until if deadline is None else min(deadline, until)
        while not self._chunks:
            if self._complete:
                return None
            if deadline is None:
                await self._wait()
            else:
                async with asyncio.timeout_at(deadline):
                    await self._wait()
        return self._take()

    def release(self) -> None:
        """Give the connection back: to the pool if this response was read to its end."""
        if not self._released:
            self._released = True
            self._conn.finished(self, reusable=self._complete and not self._chunks)

    def _take(self) -> bytes:
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        if self._buffered >= _PAUSE_AT:
            self._conn.resume()
        self._buffered = 0
        return data

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self._conn.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None and not self._chunks:
            raise self._error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # Called by the connection's parser.

    def _headers_done(self, status: int) -> None:
        self.status = status
        if not self._head.done():
            self._head.set_result(None)

    def _body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered >= _PAUSE_AT and self._pausable:
            self._conn.pause()
        self._wake()

    def _end(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: HttpError) -> None:
        if self._complete:
            return
        self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved here: post() may no longer be waiting on it
        self._wake()


class _Slots:
    """A counting limit on open exchanges (asyncio.Semaphore's acquire measured about 3% of the
    router's loop samples at concurrency 20; this one's free path is a compare and a subtract)."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # a releaser hands its slot straight to this waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1


class _Connection(asyncio.Protocol):
    """One keep-alive connection, serving one response at a time."""

    def __init__(self, client: Http1Client, origin: _Origin) -> None:
        self.client = client
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self.keep_alive = True
        self.delimited = False  # the body has a length or is chunked (else it ends at close)

    def send(self, request: bytes) -> Response:
        assert self.transport is not None
        self.response = Response(self)
        self.keep_alive = True
        self.delimited = False
        self.transport.write(request)
        return self.response

    def finished(self, response: Response, *, reusable: bool) -> None:
        """The caller is done with `response`."""
        if self.response is response:
            self.response = None
        if reusable and self.keep_alive and not self.closed:
            self.client._put_back(self)
        else:
            self.close()
        self.client._slots.release()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # nothing was asked: a server talking out of turn
            self.close()
            return
        response._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(ResponseError(f"malformed HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return False  # close the transport; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is None or response._complete:
            return
        if response._head.done() and not self.delimited and response._error is None:
            response._end()  # a body with neither length nor chunks ends when the server closes
            return
        received = response._received
        reason = f": {exc}" if exc else ""
        response._fail(
            ResponseError(
                f"connection closed before the response ended{reason}",
                nothing_received=not received,
            )
        )

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or (
            name == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self.delimited = True

    def on_headers_complete(self) -> None:
        if self.response is not None:
            self.response._headers_done(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._body(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.response is not None:
            self.response._end()


class Http1Client:
    """Pooled keep-alive HTTP/1.1 connections, per origin, for POSTs of JSON bodies."""

    def __init__(
        self,
        *,
        max_connections: int = 1000,
        max_idle_per_origin: int = 256,
        idle_timeout_s: float = 30.0,
    ) -> None:
        self._slots = _Slots(max_connections)
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._max_idle = max_idle_per_origin
        self._idle_timeout = idle_timeout_s
        self._urls: dict[str, tuple[_Origin, bytes]] = {}
        self._tls: ssl.SSLContext | None = None

    async def __aenter__(self) -> Http1Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        connect_timeout_s: float,
    ) -> Response:
        """Send `body` and wait for the response's status and headers.

        A pooled connection the server had already closed is replaced once (nothing of the
        request was processed: no byte came back).
        """
        origin, path = self._parse(url)
        request = _request(origin, path, body, headers)
        await self._slots.acquire()
        try:
            for _ in range(2):
                conn = self._take_idle(origin)
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(origin, connect_timeout_s)
                response = conn.send(request)
                try:
                    await response._head
                except ResponseError as exc:
                    conn.response = None
                    conn.close()
                    if reused and exc.nothing_received:
                        continue
                    raise
                except BaseException:
                    conn.response = None
                    conn.close()
                    raise
                return response  # the slot is released with the response
            raise ResponseError("the upstream closed two connections in a row without answering")
        except BaseException:
            self._slots.release()
            raise

    async def close(self) -> None:
        """Close every idle connection (responses still held close when released)."""
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def _parse(self, url: str) -> tuple[_Origin, bytes]:
        known = self._urls.get(url)
        if known is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            known = (_Origin(parts.scheme, parts.hostname, port), path.encode("ascii"))
            self._urls[url] = known
        return known

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        conns = self._idle.get(origin)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if not conn.closed and now - conn.idle_since < self._idle_timeout:
                return conn
            conn.close()
        return None

    def _put_back(self, conn: _Connection) -> None:
        conns = self._idle.setdefault(conn.origin, [])
        if len(conns) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conns.append(conn)

    async def _connect(self, origin: _Origin, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if origin.scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except OSError as exc:
            raise ConnectError(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
        return conn


def _request(origin: _Origin, path: bytes, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [
        b"POST " + path + b" HTTP/1.1",
        b"Host: " + origin.authority,
        b"Content-Length: " + str(len(body)).encode(),
    ]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(f"{name}: {value}".encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
