"""Calling upstream models: the hot path for OpenAI-compatible APIs, litellm for the rest.

Upstreams with `api: openai` (Ollama's and vLLM's `/v1`, Gemini's OpenAI-compatible endpoint)
are called directly with one shared keep-alive HTTP/1.1 client (`http1`): litellm costs about ten
times more CPU per call (DESIGN.md); on this 2-core machine httpx's async client measured
1.9-2.0 ms of CPU per call at concurrency 20 against 0.11 ms for aiohttp, and aiohttp's client
was still the largest item of the router's loop profile (bench/results/router_overhead.md). Any
other provider goes through litellm, imported only when first needed.

Timeouts: each call to a model fixes its deadlines once, when it starts, on the event loop's
monotonic clock (`Deadlines`): its first byte (a JSON reply's status line, a stream's first
chunk) by `first_token_timeout_s`, connecting included; its end by `total_timeout_s`. Every
wait runs under one `asyncio.timeout_at` of one of them, so a model at the limit has no race
of two timers to win.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from larrylab.router._http1 import ConnectError, Http1Client, HttpError, Response
from larrylab.router._routing import Target


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
        return self.error_class in (
            "connect",
            "timeout",
            "server_error",
            "rate_limited",
            "protocol",
            "config",
        )


@dataclass(slots=True)
class Completion:
    """A whole (non-streaming) reply."""

    data: dict[str, Any]


@dataclass(slots=True)
class ChunkStream:
    """An open streaming reply whose first chunks have already arrived (in batches per read)."""

    first: list[dict[str, Any]]
    rest: AsyncIterator[list[dict[str, Any]]]
    first_at: float
    closer: Any = None

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
    headers = {"content-type": "application/json"}
    key = target.api_key()
    if key:
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


def _network_error(exc: BaseException, target: Target) -> UpstreamError:
    if isinstance(exc, TimeoutError):
        return UpstreamError("timeout", f"model {target.name!r} timed out", 504)
    if isinstance(exc, ValueError):  # e.g. an API key with a line break in it
        return UpstreamError("config", f"model {target.name!r} is misconfigured: {exc}", 502)
    if isinstance(exc, ConnectError):
        return UpstreamError("connect", f"cannot connect to model {target.name!r}", 502)
    return UpstreamError("protocol", f"model {target.name!r} failed: {exc}", 502)


_NETWORK_ERRORS = (HttpError, OSError, TimeoutError, ValueError)


def new_client(*, max_connections: int = 1000) -> Http1Client:
    """The one HTTP client a router process shares for its upstream calls."""
    return Http1Client(max_connections=max_connections)


async def complete(
    client: Http1Client, target: Target, body: dict[str, Any], start: float | None = None
) -> Completion:
    """Call `target` for a whole reply; raise UpstreamError on any failure.

    The response's status line must arrive by the first-byte deadline, its body by the end
    (`deadlines(target, start)`)."""
    limits = deadlines(target, start)
    if target.api != "openai":
        return await _litellm_complete(target, body, limits)
    payload = orjson.dumps({**body, "model": target.upstream_model, "stream": False})
    resp: Response | None = None
    try:
        async with asyncio.timeout_at(limits.first_byte):
            resp = await client.post(
                f"{target.base_url}/chat/completions",
                payload,
                _headers(target),
                connect_timeout_s=target.connect_timeout_s,
            )
        try:
            if resp.ended:  # as usual: the whole reply came with its headers
                content = await resp.read()
            else:
                async with asyncio.timeout_at(limits.end):
                    content = await resp.read()
            status = resp.status
        finally:
            resp.release()
    except TimeoutError as exc:
        raise _timeout(target, first_byte=resp is None) from exc
    except _NETWORK_ERRORS as exc:
        raise _network_error(exc, target) from exc
    if status >= 400:
        raise _status_error(status, content.decode("utf-8", "replace"))
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("protocol", f"model {target.name!r} sent invalid JSON", 502) from exc
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        raise UpstreamError("protocol", f"model {target.name!r} sent no choices", 502)
    return Completion(data)


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


def _read_deadline(now: float, target: Target, limits: Deadlines) -> float:
    """The deadline of a read of a flowing stream that starts at `now`: a stall, or the end."""
    if now >= limits.end:
        raise _timeout(target, first_byte=False)
    return min(now + target.first_token_timeout_s, limits.end)


async def _drain(resp: Response, deadline: float) -> None:
    """Read what follows `[DONE]` to its end, so the connection goes back to the pool (if that
    fails or takes past `deadline`, it is closed instead: the reply is whole either way)."""
    try:
        while await resp.next_chunk(deadline=deadline) is not None:
            pass
    except (HttpError, TimeoutError):
        pass


async def _sse_batches(
    resp: Response, target: Target, limits: Deadlines
) -> AsyncIterator[list[dict[str, Any]]]:
    """The stream's chunks, one list per network read (what arrived together goes on together).

    The first chunk must arrive by the first-byte deadline; after it each read waits at most
    the first-token timeout (a stalled stream), and the stream must end by the end deadline."""
    loop = asyncio.get_running_loop()
    flowing = False  # whether the first chunk has gone on
    until = limits.first_byte  # the one deadline of the read under way
    tail = b""
    try:
        while True:
            if flowing:
                until = _read_deadline(loop.time(), target, limits)
            data = await resp.next_chunk(deadline=until)
            if data is None:
                break
            lines = (tail + data).split(b"\n")
            tail = lines.pop()
            batch: list[dict[str, Any]] = []
            for line in lines:
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    if batch:
                        yield batch
                    await _drain(resp, min(loop.time() + target.first_token_timeout_s, limits.end))
                    return
                event = _event(payload, target)
                if event is not None:
                    batch.append(event)
            if batch:
                flowing = True
                yield batch
    except TimeoutError as exc:
        if flowing and until != limits.end:
            raise _stalled(target) from exc
        raise _timeout(target, first_byte=not flowing) from exc
    except _NETWORK_ERRORS as exc:
        raise _network_error(exc, target) from exc
    raise UpstreamError("protocol", f"model {target.name!r} ended the stream without [DONE]", 502)


async def open_stream(
    client: Http1Client, target: Target, body: dict[str, Any], start: float | None = None
) -> ChunkStream:
    """Start a streaming call and wait for its first chunk; raise UpstreamError before that.

    The first chunk must arrive by the first-byte deadline, the stream's end by the end
    (`deadlines(target, start)`)."""
    limits = deadlines(target, start)
    if target.api != "openai":
        return await _litellm_stream(target, body, limits)
    upstream_body = {
        **body,
        "model": target.upstream_model,
        "stream": True,
        "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
    }
    resp: Response | None = None
    try:
        async with asyncio.timeout_at(limits.first_byte):
            resp = await client.post(
                f"{target.base_url}/chat/completions",
                orjson.dumps(upstream_body),
                _headers(target),
                connect_timeout_s=target.connect_timeout_s,
            )
            if resp.status >= 400:
                text = (await resp.read()).decode("utf-8", "replace")
                raise _status_error(resp.status, text)
        events = _sse_batches(resp, target, limits)
        first = await anext(events)  # waits until the same first-byte deadline
    except StopAsyncIteration as exc:
        _release(resp)
        raise UpstreamError("protocol", f"model {target.name!r} sent an empty stream", 502) from exc
    except TimeoutError as exc:
        _release(resp)
        raise _timeout(target, first_byte=True) from exc
    except _NETWORK_ERRORS as exc:
        _release(resp)
        raise _network_error(exc, target) from exc
    except BaseException:
        _release(resp)
        raise

    async def closer() -> None:
        resp.release()  # back to the pool when fully read, closed otherwise

    return ChunkStream(first, events, time.perf_counter(), closer)


def _release(resp: Response | None) -> None:
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
