"""Calling upstream models: the hot path for OpenAI-compatible APIs, litellm for the rest.

Upstreams with `api: openai` (Ollama's and vLLM's `/v1`, Gemini's OpenAI-compatible endpoint)
are called directly with one shared keep-alive HTTP/1.1 client (`http1`): litellm costs about ten
times more CPU per call (DESIGN.md); on this 2-core machine httpx's async client measured
1.9-2.0 ms of CPU per call at concurrency 20 against 0.11 ms for aiohttp, and aiohttp's client
was still the largest item of the router's loop profile (bench/results/router_overhead.md). Any
other provider goes through litellm, imported only when first needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from larrylab.platform.http1 import ConnectError, Http1Client, HttpError, Response
from larrylab.platform.routing import Target


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


async def complete(client: Http1Client, target: Target, body: dict[str, Any]) -> Completion:
    """Call `target` for a whole reply; raise UpstreamError on any failure."""
    if target.api != "openai":
        return await _litellm_complete(target, body)
    payload = orjson.dumps({**body, "model": target.upstream_model, "stream": False})
    try:
        async with asyncio.timeout(target.total_timeout_s):
            resp = await client.post(
                f"{target.base_url}/chat/completions",
                payload,
                _headers(target),
                connect_timeout_s=target.connect_timeout_s,
            )
            try:
                status, content = resp.status, await resp.read()
            finally:
                resp.release()
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


async def _sse_batches(resp: Response, target: Target) -> AsyncIterator[list[dict[str, Any]]]:
    """The stream's chunks, one list per network read (what arrived together goes on together).

    Each read waits at most the first-token timeout (a stalled stream), the whole stream at
    most the total timeout."""
    deadline = time.perf_counter() + target.total_timeout_s
    tail = b""
    try:
        while (data := await resp.next_chunk(target.first_token_timeout_s)) is not None:
            if time.perf_counter() > deadline:
                raise UpstreamError(
                    "timeout", f"model {target.name!r} exceeded its total timeout", 504
                )
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
                    # read to the end so the connection goes back to the pool
                    while await resp.next_chunk(target.first_token_timeout_s) is not None:
                        pass
                    return
                event = _event(payload, target)
                if event is not None:
                    batch.append(event)
            if batch:
                yield batch
    except _NETWORK_ERRORS as exc:
        raise _network_error(exc, target) from exc
    raise UpstreamError("protocol", f"model {target.name!r} ended the stream without [DONE]", 502)


async def open_stream(client: Http1Client, target: Target, body: dict[str, Any]) -> ChunkStream:
    """Start a streaming call and wait for its first chunk; raise UpstreamError before that."""
    if target.api != "openai":
        return await _litellm_stream(target, body)
    upstream_body = {
        **body,
        "model": target.upstream_model,
        "stream": True,
        "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
    }
    resp: Response | None = None
    try:
        async with asyncio.timeout(target.first_token_timeout_s + target.connect_timeout_s):
            resp = await client.post(
                f"{target.base_url}/chat/completions",
                orjson.dumps(upstream_body),
                _headers(target),
                connect_timeout_s=target.connect_timeout_s,
            )
            if resp.status >= 400:
                text = (await resp.read()).decode("utf-8", "replace")
                raise _status_error(resp.status, text)
            events = _sse_batches(resp, target)
            first = await anext(events)
    except StopAsyncIteration as exc:
        _release(resp)
        raise UpstreamError("protocol", f"model {target.name!r} sent an empty stream", 502) from exc
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
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status >= 400:
        return _status_error(status, str(exc))
    name = type(exc).__name__.lower()
    if "timeout" in name:
        return UpstreamError("timeout", f"model {target.name!r} timed out", 504)
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


async def _litellm_complete(target: Target, body: dict[str, Any]) -> Completion:
    import litellm

    try:
        resp = await litellm.acompletion(**_litellm_kwargs(target, body))
    except Exception as exc:
        raise _litellm_error(exc, target) from exc
    return Completion(resp.model_dump(exclude_none=True))


async def _litellm_stream(target: Target, body: dict[str, Any]) -> ChunkStream:
    import litellm

    kwargs = _litellm_kwargs(target, body) | {
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    try:
        stream = await litellm.acompletion(**kwargs)
        iterator = aiter(stream)
        first = await anext(iterator)
    except StopAsyncIteration as exc:
        raise UpstreamError("protocol", f"model {target.name!r} sent an empty stream", 502) from exc
    except Exception as exc:
        raise _litellm_error(exc, target) from exc

    async def rest() -> AsyncIterator[list[dict[str, Any]]]:
        try:
            async for chunk in iterator:
                yield [chunk.model_dump(exclude_none=True)]
        except Exception as exc:
            raise _litellm_error(exc, target) from exc

    return ChunkStream([first.model_dump(exclude_none=True)], rest(), time.perf_counter())
