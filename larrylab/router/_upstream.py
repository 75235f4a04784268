"""Calling upstream models: the hot path for OpenAI-compatible APIs, litellm for the rest.

Upstreams with `api: openai` (Ollama's and vLLM's `/v1`, Gemini's OpenAI-compatible endpoint)
are called directly through one shared aiohttp session per router process (`UpstreamClient`):
keep-alive connections pooled per origin, up to `max_connections` open at once. litellm costs
about ten times more CPU per call (DESIGN.md), so any other provider goes through litellm,
imported only when first needed.

Per model, computed once per client and reused by every call (`_Endpoint`): the parsed URL,
the TLS settings (`ca_file`, `verify`; one `ssl.SSLContext` per distinct pair) and the proxy
the environment names for it (`HTTPS_PROXY` / `HTTP_PROXY`, unless `NO_PROXY` matches; an
https upstream is reached through the proxy with CONNECT, and verified end to end). The
environment is read when a client first calls a model, not per request: aiohttp's own
`trust_env` reads it (and `~/.netrc`) on a worker thread for every request.

Timeouts: each call to a model fixes its deadlines once, when it starts, on the event loop's
monotonic clock (`Deadlines`): its first byte (a JSON reply's status line, a stream's first
chunk) by `first_token_timeout_s`, connecting included; its end by `total_timeout_s`. Every
wait runs under one `asyncio.timeout_at` of one of them, so a model at the limit has no race
of two timers to win. `connect_timeout_s` bounds each TCP connect (aiohttp's `sock_connect`).

Failures are classified by cause (`UpstreamError.error_class`, see `_network_error`): `dns`,
`connect`, `tls`, `proxy`, `timeout`, `protocol`, `config`, and for HTTP errors from the model
`server_error`, `rate_limited`, `client_error`; the message names the model, the host and the
cause (the resolver's, the socket's or the certificate verifier's reason).
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from larrylab.router._routing import Target

# The classes of failures before anything reached the client that another arm may serve
# instead (and that count against the model's circuit breaker).
FALLBACK_CLASSES = frozenset(
    {
        "dns",
        "connect",
        "tls",
        "proxy",
        "timeout",
        "server_error",
        "rate_limited",
        "protocol",
        "config",
    }
)


class UpstreamError(Exception):
    """An upstream failure, classified for logging, fallback and the client's status code."""

    def __init__(self, error_class: str, message: str, status: int) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.status = status

    @property
    def fallback_ok(self) -> bool:
        """Whether another arm may serve the request instead (nothing reached the client)."""
        return self.error_class in FALLBACK_CLASSES


@dataclass(slots=True)
class Completion:
    """A whole (non-streaming) reply."""

    data: dict[str, Any]


@dataclass(slots=True)
class StreamEnd:
    """Whether a stream's source has seen its end: set before the last batch is handed on,
    so that the relay sends that batch and the end of the reply in one write."""

    seen: bool = False


@dataclass(slots=True)
class ChunkStream:
    """An open streaming reply whose first chunks have already arrived (in batches per read)."""

    first: list[dict[str, Any]]
    rest: AsyncIterator[list[dict[str, Any]]]
    first_at: float
    closer: Any = None
    end: StreamEnd = field(default_factory=StreamEnd)

    async def aclose(self) -> None:
        """Release the upstream connection."""
        if self.closer is not None:
            await self.closer()


def _status_error(status: int, text: str) -> UpstreamError:
    message = text
    try:
        payload = orjson.loads(text)
        if isinstance(payload, dict):
            err = payload.get("error", payload)
            message = err.get("message", text) if isinstance(err, dict) else str(err)
    except orjson.JSONDecodeError:
        pass
    message = f"upstream returned HTTP {status}: {str(message)[:500]}"
    if status == 429:
        return UpstreamError("rate_limited", message, 429)
    if status >= 500:
        return UpstreamError("server_error", message, 502)
    return UpstreamError("client_error", message, status if status in (400, 404, 413, 422) else 400)


def _headers(target: Target) -> dict[str, str]:
    """The request headers: JSON, and the model's key as its API expects it (Gemini's
    `x-goog-api-key`, a bearer token otherwise)."""
    headers = {"content-type": "application/json"}
    key = target.api_key()
    if key:
        if target.api == "gemini":
            headers["x-goog-api-key"] = key
        else:
            headers["authorization"] = f"Bearer {key}"
    return headers


@dataclass(frozen=True, slots=True)
class Deadlines:
    """When one call to a model must have its first byte and its end (`loop.time()`)."""

    first_byte: float
    end: float


def deadlines(target: Target, start: float | None = None) -> Deadlines:
    """The deadlines of a call to `target` that started at `start` (`loop.time()`; now if None)."""
    if start is None:
        start = asyncio.get_running_loop().time()
    end = start + target.total_timeout_s
    return Deadlines(min(start + target.first_token_timeout_s, end), end)


def _timeout(target: Target, *, first_byte: bool) -> UpstreamError:
    """The error of a call that missed its first-byte deadline, or its end."""
    if first_byte and target.first_token_timeout_s <= target.total_timeout_s:
        limit = f"its first-token timeout of {target.first_token_timeout_s:g} s"
        return UpstreamError("timeout", f"model {target.name!r} sent nothing within {limit}", 504)
    limit = f"its total timeout of {target.total_timeout_s:g} s"
    return UpstreamError("timeout", f"model {target.name!r} did not finish within {limit}", 504)


def _stalled(target: Target) -> UpstreamError:
    limit = f"{target.first_token_timeout_s:g} s (its first-token timeout)"
    return UpstreamError("timeout", f"model {target.name!r} sent nothing for {limit}", 504)


def _address(target: Target) -> tuple[str, str]:
    """The upstream's host, and its `host:port`, for messages."""
    url = URL(target.base_url or "")
    host = url.host or "?"
    return host, f"{host}:{url.port}" if url.port else host


def _reason(exc: BaseException) -> str:
    """A socket or TLS error's own words (`strerror`, the verifier's message), else its text."""
    return (
        getattr(exc, "verify_message", None)
        or getattr(exc, "reason", None)
        or getattr(exc, "strerror", None)
        or str(exc)
        or type(exc).__name__
    )


def _network_error(exc: BaseException, target: Target) -> UpstreamError:
    """A failure to reach or read `target`, classified by its cause (see the module)."""
    name = target.name
    host, where = _address(target)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        cause = _reason(exc.os_error)
        message = f"cannot resolve host {host!r} for model {name!r}: {cause}"
        return UpstreamError("dns", message, 502)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = _reason(exc.certificate_error)
        message = f"TLS certificate of {where} for model {name!r} failed verification: {cause}"
        return UpstreamError("tls", message, 502)
    if isinstance(exc, aiohttp.ClientSSLError):
        cause = _reason(exc.os_error)
        message = f"TLS handshake with {where} for model {name!r} failed: {cause}"
        return UpstreamError("tls", message, 502)
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        cause = _reason(exc.os_error)
        message = f"cannot connect to the proxy {exc.host}:{exc.port} for model {name!r}: {cause}"
        return UpstreamError("proxy", message, 502)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        message = (
            f"the proxy refused to tunnel to {where} for model {name!r}: "
            f"HTTP {exc.status} {exc.message}"
        )
        return UpstreamError("proxy", message, 502)
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        refused = (
            isinstance(os_error, ConnectionRefusedError) or os_error.errno == errno.ECONNREFUSED
        )
        cause = "connection refused" if refused else _reason(os_error)
        return UpstreamError(
            "connect", f"cannot connect to model {name!r} at {where}: {cause}", 502
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        limit = f"its connect timeout of {target.connect_timeout_s:g} s"
        message = f"cannot connect to model {name!r} at {where} within {limit}"
        return UpstreamError("connect", message, 502)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        message = f"model {name!r} ({where}) closed the connection before its reply ended"
        return UpstreamError("protocol", message, 502)
    if isinstance(exc, aiohttp.ClientPayloadError):
        message = f"the reply of model {name!r} ({where}) was cut short: {exc}"
        return UpstreamError("protocol", message, 502)
    if isinstance(exc, aiohttp.ClientResponseError):
        message = f"model {name!r} ({where}) sent a malformed HTTP response: {exc.message}"
        return UpstreamError("protocol", message, 502)
    if isinstance(exc, ValueError):  # e.g. an API key with a line break in it
        return UpstreamError("config", f"model {name!r} is misconfigured: {exc}", 502)
    if isinstance(exc, OSError):
        message = f"the connection to model {name!r} ({where}) failed: {_reason(exc)}"
        return UpstreamError("protocol", message, 502)
    return UpstreamError("protocol", f"model {name!r} failed: {exc}", 502)


_NETWORK_ERRORS = (aiohttp.ClientError, OSError, ValueError)


def _env_proxy(url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for `url` (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), and
    its credentials, if any."""
    if url.host is None or urllib.request.proxy_bypass(url.host):
        return None, None
    value = urllib.request.getproxies().get(url.scheme)
    if not value:
        return None, None
    proxy = URL(value if "://" in value else f"http://{value}")
    auth = aiohttp.BasicAuth(proxy.user, proxy.password or "") if proxy.user else None
    return proxy.with_user(None), auth


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """How one model is reached (see the module): its chat completions URL (OpenAI's API) or
    its base URL (Gemini's, where the path names the model and the method)."""

    url: URL
    ssl: ssl.SSLContext | bool
    proxy: URL | None
    proxy_auth: aiohttp.BasicAuth | None
    timeout: aiohttp.ClientTimeout
    paths: dict[str, URL] = field(default_factory=dict)  # `at`'s URLs, one per path

    def at(self, path: str) -> URL:
        """The URL of `path` under the base URL (made once per path: a model has a few)."""
        url = self.paths.get(path)
        if url is None:
            url = self.paths[path] = URL(f"{self.url}{path}", encoded=True)
        return url


class UpstreamClient:
    """The HTTP client a router process shares for its upstream calls: one aiohttp session,
    opened on first use (on the running event loop), with per-model endpoints cached."""

    def __init__(self, *, max_connections: int = 1000, keepalive_s: float = 30.0) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None
        self._endpoints: dict[Target, _Endpoint] = {}
        self._ssl: dict[tuple[str | None, bool], ssl.SSLContext | bool] = {}

    async def __aenter__(self) -> UpstreamClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def post(
        self, target: Target, body: bytes, path: str | None = None
    ) -> aiohttp.ClientResponse:
        """POST `body` to the target's `/chat/completions` (or to `path` under its base URL,
        for Gemini's API: `/v1beta/models/M:generateContent`); return once the status and
        headers have arrived. Release the response when done (the connection goes back to the
        pool if its body was read to the end).

        A connection the server closed before answering (a pooled one it had just dropped) is
        replaced once."""
        endpoint = self._endpoints.get(target) or self._endpoint(target)
        session = self._session or self._open()
        headers = _headers(target)
        url = endpoint.url if path is None else endpoint.at(path)
        for attempt in range(2):
            try:
                return await session.post(
                    url,
                    data=body,
                    headers=headers,
                    ssl=endpoint.ssl,
                    proxy=endpoint.proxy,
                    proxy_auth=endpoint.proxy_auth,
                    timeout=endpoint.timeout,
                )
            except aiohttp.ServerDisconnectedError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_s,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,  # the environment's proxies are read once per model (`_env_proxy`)
        )
        return self._session

    def _endpoint(self, target: Target) -> _Endpoint:
        suffix = "" if target.api == "gemini" else "/chat/completions"
        url = URL(f"{target.base_url}{suffix}")
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url {target.base_url!r} is not an http(s) URL")
        proxy, proxy_auth = _env_proxy(url)
        endpoint = _Endpoint(
            url,
            self._context(target.ca_file, target.verify) if url.scheme == "https" else True,
            proxy,
            proxy_auth,
            aiohttp.ClientTimeout(total=None, sock_connect=target.connect_timeout_s),
        )
        self._endpoints[target] = endpoint
        return endpoint

    def _context(self, ca_file: str | None, verify: bool) -> ssl.SSLContext | bool:
        """The TLS setting for `(ca_file, verify)`: False (no verification), True (aiohttp's
        default context: the system's CAs), or a context trusting the CAs of `ca_file`."""
        key = (ca_file, verify)
        context = self._ssl.get(key)
        if context is None:
            if not verify:
                context = False
            elif ca_file is None:
                context = True
            else:
                try:
                    context = ssl.create_default_context(cafile=ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise ValueError(f"cannot load ca_file {ca_file!r}: {exc}") from exc
            self._ssl[key] = context
        return context


def new_client(*, max_connections: int = 1000) -> UpstreamClient:
    """The one HTTP client a router process shares for its upstream calls."""
    return UpstreamClient(max_connections=max_connections)


def _failure(exc: BaseException, target: Target, *, first_byte: bool) -> UpstreamError:
    """The UpstreamError of an exception a call raised: a deadline it missed (asyncio's
    TimeoutError), or a network failure (aiohttp's, an OSError, a bad value)."""
    if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ClientError):
        return _timeout(target, first_byte=first_byte)
    return _network_error(exc, target)


async def _post_read(
    client: UpstreamClient, target: Target, payload: bytes, limits: Deadlines, path: str | None
) -> bytes:
    """POST and read the whole reply: its status line by the first-byte deadline, its body by
    the end; UpstreamError for a failure or an HTTP error status."""
    resp: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout_at(limits.first_byte):
            resp = await client.post(target, payload, path)
        try:
            if resp.content.is_eof():  # as usual: the whole reply came with its headers
                content = await resp.read()
            else:
                async with asyncio.timeout_at(limits.end):
                    content = await resp.read()
            status = resp.status
        finally:
            resp.release()
    except _NETWORK_ERRORS as exc:
        raise _failure(exc, target, first_byte=resp is None) from exc
    if status >= 400:
        raise _status_error(status, content.decode("utf-8", "replace"))
    return content


def _json_object(content: bytes, target: Target) -> dict[str, Any]:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("protocol", f"model {target.name!r} sent invalid JSON", 502) from exc
    if not isinstance(data, dict):
        raise UpstreamError("protocol", f"model {target.name!r} sent no JSON object", 502)
    return data


async def complete(
    client: UpstreamClient, target: Target, body: dict[str, Any], start: float | None = None
) -> Completion:
    """Call `target` (OpenAI's API, or litellm) for a whole chat completion; raise
    UpstreamError on any failure.

    The response's status line must arrive by the first-byte deadline, its body by the end
    (`deadlines(target, start)`)."""
    limits = deadlines(target, start)
    if target.api == "litellm":
        return await _litellm_complete(target, body, limits)
    payload = orjson.dumps({**body, "model": target.upstream_model, "stream": False})
    data = _json_object(await _post_read(client, target, payload, limits, None), target)
    if not isinstance(data.get("choices"), list):
        raise UpstreamError("protocol", f"model {target.name!r} sent no choices", 502)
    return Completion(data)


def gemini_path(target: Target, method: str, version: str = "v1beta") -> str:
    """The path under an `api: gemini` model's base URL for `method` (`generateContent`,
    `streamGenerateContent` as server-sent events, `countTokens`)."""
    path = f"/{version}/models/{quote(target.upstream_model, safe='')}:{method}"
    return path + "?alt=sse" if method == "streamGenerateContent" else path


async def gemini_complete(
    client: UpstreamClient,
    target: Target,
    payload: bytes,
    start: float | None = None,
    *,
    version: str = "v1beta",
) -> Completion:
    """Call an `api: gemini` model's `generateContent` with `payload` as it is (Gemini's JSON
    body); its GenerateContentResponse, or UpstreamError. Deadlines as in `complete`."""
    limits = deadlines(target, start)
    path = gemini_path(target, "generateContent", version)
    data = _json_object(await _post_read(client, target, payload, limits, path), target)
    if not isinstance(data.get("candidates"), list) and "promptFeedback" not in data:
        raise UpstreamError("protocol", f"model {target.name!r} sent no candidates", 502)
    return Completion(data)


async def gemini_count_tokens(
    client: UpstreamClient, target: Target, payload: bytes, *, version: str = "v1beta"
) -> dict[str, Any]:
    """An `api: gemini` model's `countTokens` answer for `payload`, or UpstreamError."""
    limits = deadlines(target)
    path = gemini_path(target, "countTokens", version)
    return _json_object(await _post_read(client, target, payload, limits, path), target)


def _event(payload: bytes, target: Target) -> dict[str, Any] | None:
    """The chunk in one SSE `data:` payload (None if it is not an object)."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("protocol", f"model {target.name!r} sent invalid JSON", 502) from exc
    if isinstance(event, dict) and "error" in event:
        err = event["error"]
        message = err.get("message") if isinstance(err, dict) else str(err)
        raise UpstreamError("server_error", f"upstream error mid-stream: {message}", 502)
    return event if isinstance(event, dict) else None


def _finished(chunks: list[dict[str, Any]]) -> bool:
    """Whether one of `chunks` (OpenAI stream chunks) gave a choice's `finish_reason`."""
    return any(
        isinstance(c, dict) and c.get("finish_reason")
        for chunk in chunks
        for c in chunk.get("choices") or ()
    )


def _read_deadline(now: float, target: Target, limits: Deadlines) -> float:
    """The deadline of a read of a flowing stream that starts at `now`: a stall, or the end."""
    if now >= limits.end:
        raise _timeout(target, first_byte=False)
    return min(now + target.first_token_timeout_s, limits.end)


async def _read_some(resp: aiohttp.ClientResponse, deadline: float) -> bytes:
    """The body bytes that arrived since the last read (b"" once the body has ended), waiting
    for some until `deadline` (`loop.time()`) at most; TimeoutError after that."""
    async with asyncio.timeout_at(deadline):
        return await resp.content.readany()


async def _drain(resp: aiohttp.ClientResponse, deadline: float) -> None:
    """Read what follows `[DONE]` to its end, so the connection goes back to the pool (if that
    fails or takes past `deadline`, it is closed instead: the reply is whole either way)."""
    try:
        while await _read_some(resp, deadline):
            pass
    except (aiohttp.ClientError, OSError):  # TimeoutError included
        resp.close()


async def _sse_batches(
    resp: aiohttp.ClientResponse,
    target: Target,
    limits: Deadlines,
    end: StreamEnd,
    *,
    done_marker: bool = True,
) -> AsyncIterator[list[dict[str, Any]]]:
    """The stream's chunks, one list per network read (what arrived together goes on together).
    OpenAI's stream ends with `data: [DONE]`, or with the body after a chunk that gave a
    `finish_reason` (as the openai client accepts: `transformers serve` sends no `[DONE]`);
    Gemini's (`done_marker=False`) with the body. `end.seen` is set before the last list is
    yielded, when the read that brought it also brought the end (as usual).

    The first chunk must arrive by the first-byte deadline; after it each read waits at most
    the first-token timeout (a stalled stream), and the stream must end by the end deadline."""
    loop = asyncio.get_running_loop()
    flowing = False  # whether the first chunk has gone on
    until = limits.first_byte  # the one deadline of the read under way
    tail = b""
    recent: list[dict[str, Any]] = []  # the last chunks passed on (a finish, then usage)
    try:
        while True:
            if flowing:
                until = _read_deadline(loop.time(), target, limits)
            data = await _read_some(resp, until)
            last = not done_marker and (not data or resp.content.at_eof())
            if not data and done_marker and _finished(recent):
                return  # ended after its finish chunk, without `[DONE]`
            if not data and not (last and flowing):
                break
            lines = (tail + data).split(b"\n")
            tail = lines.pop()
            if last:  # Gemini's last event may lack its blank line
                lines.append(tail)
            batch: list[dict[str, Any]] = []
            for line in lines:
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    end.seen = True
                    if batch:
                        yield batch
                    await _drain(resp, min(loop.time() + target.first_token_timeout_s, limits.end))
                    return
                event = _event(payload, target)
                if event is not None:
                    batch.append(event)
            if last and (batch or flowing):
                end.seen = True
                if batch:
                    yield batch
                return
            if batch:
                flowing = True
                recent = (recent + batch)[-2:]
                yield batch
            elif last:
                break
    except _NETWORK_ERRORS as exc:
        if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ClientError):
            if flowing and until != limits.end:
                raise _stalled(target) from exc
            raise _timeout(target, first_byte=not flowing) from exc
        raise _network_error(exc, target) from exc
    if done_marker:
        message = f"model {target.name!r} ended the stream without [DONE]"
    else:
        message = f"model {target.name!r} ended the stream before any chunk"
    raise UpstreamError("protocol", message, 502)


async def _open_sse(
    client: UpstreamClient,
    target: Target,
    payload: bytes,
    limits: Deadlines,
    path: str | None,
    *,
    done_marker: bool,
) -> ChunkStream:
    """POST and wait for the first chunk of a server-sent event stream (see `open_stream`)."""
    resp: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout_at(limits.first_byte):
            resp = await client.post(target, payload, path)
            if resp.status >= 400:
                text = (await resp.read()).decode("utf-8", "replace")
                raise _status_error(resp.status, text)
        end = StreamEnd()
        events = _sse_batches(resp, target, limits, end, done_marker=done_marker)
        first = await anext(events)  # waits until the same first-byte deadline
    except StopAsyncIteration as exc:
        _release(resp)
        raise UpstreamError("protocol", f"model {target.name!r} sent an empty stream", 502) from exc
    except _NETWORK_ERRORS as exc:
        _release(resp)
        raise _failure(exc, target, first_byte=True) from exc
    except BaseException:
        _release(resp)
        raise

    async def closer() -> None:
        resp.release()  # back to the pool when fully read, closed otherwise

    return ChunkStream(first, events, time.perf_counter(), closer, end)


async def open_stream(
    client: UpstreamClient, target: Target, body: dict[str, Any], start: float | None = None
) -> ChunkStream:
    """Start a streaming chat completion (OpenAI's API, or litellm) and wait for its first
    chunk; raise UpstreamError before that.

    The first chunk must arrive by the first-byte deadline, the stream's end by the end
    (`deadlines(target, start)`)."""
    limits = deadlines(target, start)
    if target.api == "litellm":
        return await _litellm_stream(target, body, limits)
    upstream_body = {
        **body,
        "model": target.upstream_model,
        "stream": True,
        "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
    }
    payload = orjson.dumps(upstream_body)
    return await _open_sse(client, target, payload, limits, None, done_marker=True)


async def gemini_stream(
    client: UpstreamClient,
    target: Target,
    payload: bytes,
    start: float | None = None,
    *,
    version: str = "v1beta",
) -> ChunkStream:
    """Start an `api: gemini` model's `streamGenerateContent` (server-sent events) with
    `payload` as it is; its GenerateContentResponse chunks. Deadlines as in `open_stream`."""
    limits = deadlines(target, start)
    path = gemini_path(target, "streamGenerateContent", version)
    return await _open_sse(client, target, payload, limits, path, done_marker=False)


def _release(resp: aiohttp.ClientResponse | None) -> None:
    if resp is not None:
        resp.release()


def _litellm_error(exc: Exception, target: Target) -> UpstreamError:
    name = type(exc).__name__.lower()
    if "timeout" in name:  # before the status: litellm's Timeout carries HTTP 408
        return UpstreamError("timeout", f"model {target.name!r} timed out", 504)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 400:
        return _status_error(status, str(exc))
    if "connection" in name:
        return UpstreamError("connect", f"cannot connect to model {target.name!r}", 502)
    return UpstreamError("protocol", f"model {target.name!r} failed: {type(exc).__name__}", 502)


def _litellm_kwargs(target: Target, body: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in body.items() if k not in ("model", "stream", "stream_options")}
    kwargs["model"] = target.litellm_model
    kwargs["timeout"] = target.total_timeout_s
    if target.api_key():
        kwargs["api_key"] = target.api_key()
    if target.base_url:
        kwargs["api_base"] = target.base_url
    return kwargs


async def _litellm_complete(target: Target, body: dict[str, Any], limits: Deadlines) -> Completion:
    """A whole reply through litellm, which shows no status line: the first-byte deadline
    bounds the whole call."""
    import litellm

    try:
        async with asyncio.timeout_at(limits.first_byte):
            resp = await litellm.acompletion(**_litellm_kwargs(target, body))
    except TimeoutError as exc:
        raise _timeout(target, first_byte=True) from exc
    except Exception as exc:
        raise _litellm_error(exc, target) from exc
    return Completion(resp.model_dump(exclude_none=True))


async def _litellm_stream(target: Target, body: dict[str, Any], limits: Deadlines) -> ChunkStream:
    """A stream through litellm, with the deadlines of `_sse_batches`."""
    import litellm

    kwargs = _litellm_kwargs(target, body) | {
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    try:
        async with asyncio.timeout_at(limits.first_byte):
            stream = await litellm.acompletion(**kwargs)
            iterator = aiter(stream)
            first = await anext(iterator)
    except StopAsyncIteration as exc:
        raise UpstreamError("protocol", f"model {target.name!r} sent an empty stream", 502) from exc
    except TimeoutError as exc:
        raise _timeout(target, first_byte=True) from exc
    except Exception as exc:
        raise _litellm_error(exc, target) from exc

    async def rest() -> AsyncIterator[list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        until = limits.end
        try:
            while True:
                until = _read_deadline(loop.time(), target, limits)
                async with asyncio.timeout_at(until):
                    chunk = await anext(iterator, None)
                if chunk is None:
                    return
                yield [chunk.model_dump(exclude_none=True)]
        except TimeoutError as exc:
            stalled = until != limits.end
            raise (_stalled(target) if stalled else _timeout(target, first_byte=False)) from exc
        except UpstreamError:
            raise
        except Exception as exc:
            raise _litellm_error(exc, target) from exc

    return ChunkStream([first.model_dump(exclude_none=True)], rest(), time.perf_counter())
