"""`POST /v1/chat/completions` and `GET /v1/models`: the OpenAI-compatible hot path.

The chat route reads its raw body itself (`_read_body`, at most `max_body_bytes`) and parses it
with `parse_chat_body`, faster than a pydantic body parameter; its OpenAPI request body and
replies are declared with `openapi_extra`. The client key is checked by the gate in front of
every route (`guard.py`) before any body is read.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import anyio
import orjson
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from larrylab.db import utcnow
from larrylab.requestlog import RequestRecord
from larrylab.router._deps import RouterState, StateDep
from larrylab.router._errors import (
    ApiError,
    body_too_large,
    error_body,
    error_response,
    error_responses,
)
from larrylab.router._ids import request_id
from larrylab.router._relay import RelayResponse
from larrylab.router._routing import Resolution, Target
from larrylab.router._schemas import parse_chat_body
from larrylab.router._upstream import (
    ChunkStream,
    Completion,
    UpstreamClient,
    UpstreamError,
    complete,
    open_stream,
)

log = logging.getLogger(__name__)


class RawRoute(APIRoute):
    """A route whose endpoint takes the Request and returns the Response itself: FastAPI's
    request handler (dependencies, body fields, response model) is skipped, its OpenAPI
    operation kept (`CHAT_OPENAPI`). The chat route reads and parses its body by hand."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The endpoint itself."""
        return cast(Callable[[Request], Coroutine[Any, Any, Response]], self.endpoint)


router = APIRouter(
    tags=["openai"],
    responses=error_responses(400, 401, 404, 413, 422, 429, 502, 504),
)

T = TypeVar("T")
# (client, target, body, start): `start` is when the call to the target began (`loop.time()`)
Call = Callable[[UpstreamClient, Target, dict[str, Any], float], Awaitable[T]]


@dataclass(slots=True)
class Attempt:
    """Bookkeeping for one request as it moves through the router."""

    id: str
    t0: float
    created: Any
    body: dict[str, Any]
    unit: str
    unit_source: str
    res: Resolution
    served: Target | None = None
    fallback_from: str | None = None
    fallback_reason: tuple[str, str] | None = None
    upstream_s: float = 0.0

    def headers(self) -> dict[str, str]:
        """The x-larrylab-* response headers."""
        served = self.served.name if self.served else (self.res.target.name)
        return {
            "x-larrylab-request-id": self.id,
            "x-larrylab-arm": served,
            "x-larrylab-experiment": self.res.experiment.name if self.res.experiment else "none",
        }

    def record(
        self,
        *,
        status: str,
        http_status: int,
        error: UpstreamError | None = None,
        ttft_s: float | None = None,
        tokens: dict[str, Any] | None = None,
        reply: dict[str, Any] | None = None,
    ) -> RequestRecord:
        """The log row for this request, finished now."""
        latency = time.perf_counter() - self.t0
        served = self.served or self.res.target
        tokens = tokens or {}
        error_class, error_message = (error.error_class, error.message) if error else (None, None)
        if error is None and self.fallback_reason is not None:
            error_class, error_message = self.fallback_reason
        return RequestRecord(
            id=self.id,
            thread_id=self.unit,
            unit_source=self.unit_source,
            route=self.res.route,
            experiment=self.res.experiment.name if self.res.experiment else None,
            arm=self.res.arm,
            model=served.name,
            upstream_model=served.upstream_model,
            stream=bool(self.body.get("stream")),
            status=status,
            http_status=http_status,
            error_class=error_class,
            error_message=error_message,
            fallback_from=self.fallback_from,
            latency_ms=latency * 1000,
            ttft_ms=ttft_s * 1000 if ttft_s is not None else None,
            upstream_ms=self.upstream_s * 1000,
            overhead_ms=max(0.0, latency - self.upstream_s) * 1000,
            prompt_tokens=_int(tokens.get("prompt_tokens")),
            completion_tokens=_int(tokens.get("completion_tokens")),
            created_at=self.created,
            finished_at=utcnow(),
            prompt=self.body["messages"],
            reply=reply,
        )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _thread_unit(body: dict[str, Any], request: Request) -> tuple[str, str]:
    user = body.get("user")
    if isinstance(user, str) and user:
        return user, "user"
    header = request.headers.get("x-thread-id", "").strip()
    if header:
        if len(header) > 256:
            raise ApiError(400, "X-Thread-Id must be at most 256 characters", param="X-Thread-Id")
        return header, "header"
    return f"rnd-{uuid.uuid4().hex}", "random"


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, up to `limit` bytes; a longer one is a 413 that closes the connection."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _call_target(state: RouterState, att: Attempt, target: Target, call: Call[T]) -> T:
    """Call one model, retrying once on a connect error (refused, unreachable: nothing was
    sent); feed its breaker; log a failure with its cause.

    The model's deadlines count from here, once: the retry shares them."""
    start = asyncio.get_running_loop().time()
    for attempt in range(2):
        try:
            out = await call(state.client, target, att.body, start)
        except UpstreamError as err:
            if err.error_class == "connect" and attempt == 0:
                await asyncio.sleep(0.05)
                continue
            log.warning(
                "request %s: model %r failed (%s): %s",
                att.id,
                target.name,
                err.error_class,
                err.message,
            )
            if err.fallback_ok:
                state.breakers.failure(target.name)
            else:  # the model answered (e.g. 400 for a bad parameter): it is up
                state.breakers.success(target.name)
            raise
        state.breakers.success(target.name)
        return out
    raise AssertionError("unreachable")


async def _with_fallback(state: RouterState, att: Attempt, call: Call[T]) -> T:
    """Call the assigned model; a candidate arm that fails before any byte, or whose circuit
    breaker is open, is replaced by the control arm."""
    started = time.perf_counter()
    target, control = att.res.target, att.res.control
    try:
        if control is not None and not state.breakers.allow(target.name):
            att.fallback_from, att.fallback_reason = (
                target.name,
                ("circuit_open", "circuit breaker open"),
            )
            att.served = control
            return await _call_target(state, att, control, call)
        att.served = target
        try:
            return await _call_target(state, att, target, call)
        except UpstreamError as err:
            if control is None or not err.fallback_ok:
                raise
            att.fallback_from, att.fallback_reason = target.name, (err.error_class, err.message)
            att.served = control
            return await _call_target(state, att, control, call)
    finally:
        att.upstream_s += time.perf_counter() - started


async def _log(state: RouterState, att: Attempt, rec: RequestRecord, *, wait: bool = True) -> None:
    state.metrics.observe(
        route=rec.route,
        arm=rec.arm or rec.model or "",
        status=rec.status,
        latency_s=rec.latency_ms / 1000,
        ttft_s=rec.ttft_ms / 1000 if rec.ttft_ms is not None else None,
        fallback=att.fallback_from is not None,
    )
    if not state.settings.log_requests:
        return
    if wait:
        await state.writer.submit(rec)
    else:
        state.writer.submit_nowait(rec)


async def _fail(state: RouterState, att: Attempt, err: UpstreamError) -> Response:
    await _log(state, att, att.record(status="error", http_status=err.status, error=err))
    return error_response(err.status, err.message, code=err.error_class, headers=att.headers())


def _sse_event_schema() -> dict[str, Any]:
    """One server-sent event of a streamed chat completion (OpenAPI 3.1: `schema` is one
    event)."""
    data = "a `chat.completion.chunk` or an `{error: ...}` as JSON, or `[DONE]` at the end"
    return {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"type": "string", "description": data}},
    }


# The chat route's body and reply in its OpenAPI operation (`ChatCompletionRequest` is added to
# the schema's components by `app._openapi`).
CHAT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}
        },
    },
    "responses": {
        "200": {
            "description": "A chat completion; with `stream: true`, its chunks as server-sent "
            "events",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/event-stream": {"schema": _sse_event_schema()},
            },
        }
    },
}


async def chat_completions(request: Request) -> Response | RelayResponse:
    """Route a chat completion to the model its route and thread select."""
    t0 = time.perf_counter()
    created = utcnow()
    state: RouterState = request.app.state.router
    body = parse_chat_body(await _read_body(request, state.settings.max_body_bytes))
    unit, unit_source = _thread_unit(body, request)
    res = state.routing.table.resolve(body["model"], unit)
    if res is None:
        names = ", ".join(state.routing.table.names()[:20]) or "none configured"
        raise ApiError(
            404,
            f"unknown model or route {body['model']!r}; available: {names}",
            param="model",
            code="model_not_found",
        )
    att = Attempt(request_id(), t0, created, body, unit, unit_source, res)
    if body.get("stream"):
        return await _stream(state, att)
    try:
        done: Completion = await _with_fallback(state, att, complete)
    except UpstreamError as err:
        return await _fail(state, att, err)
    data = done.data
    data["id"] = att.id
    reply = _reply_message(data)
    await _log(
        state,
        att,
        att.record(
            status="ok",
            http_status=200,
            ttft_s=time.perf_counter() - t0,
            tokens=data.get("usage") or {},
            reply=reply,
        ),
    )
    return Response(orjson.dumps(data), media_type="application/json", headers=att.headers())


router.add_api_route(
    "/v1/chat/completions",
    chat_completions,
    methods=["POST"],
    summary="Create a chat completion (OpenAI-compatible)",
    response_model=None,
    openapi_extra=CHAT_OPENAPI,
    route_class_override=RawRoute,
)


def _reply_message(data: dict[str, Any]) -> dict[str, Any] | None:
    choices = data.get("choices") or []
    message = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        return None
    return {
        k: v
        for k, v in message.items()
        if v is not None and k in ("role", "content", "tool_calls", "name")
    }


async def _stream(state: RouterState, att: Attempt) -> Response | RelayResponse:
    try:
        stream: ChunkStream = await _with_fallback(state, att, open_stream)
    except UpstreamError as err:
        return await _fail(state, att, err)
    want_usage = bool((att.body.get("stream_options") or {}).get("include_usage"))
    return RelayResponse(
        _relay(state, att, stream, want_usage),
        headers={**att.headers(), "cache-control": "no-cache"},
    )


async def _batches(stream: ChunkStream) -> AsyncIterator[list[dict[str, Any]]]:
    yield stream.first
    async for batch in stream.rest:
        yield batch


async def _relay(
    state: RouterState, att: Attempt, stream: ChunkStream, want_usage: bool
) -> AsyncIterator[bytes]:
    """Pass the upstream's chunks through with our request id; log when the stream ends."""
    ttft_s = stream.first_at - att.t0
    parts: list[str] = []
    usage: dict[str, Any] | None = None
    error: UpstreamError | None = None
    status = "ok"
    try:
        async for batch in _batches(stream):
            out: list[bytes] = []
            for chunk in batch:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                choices = chunk.get("choices") or []
                if not want_usage:
                    if not choices:
                        continue
                    chunk.pop("usage", None)
                for choice in choices:
                    piece = (choice.get("delta") or {}).get("content")
                    if isinstance(piece, str):
                        parts.append(piece)
                chunk["id"] = att.id
                out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if out:  # chunks that arrived together are sent together
                yield b"".join(out)
        yield b"data: [DONE]\n\n"
    except UpstreamError as err:
        error, status = err, "error"
        if att.served is not None:
            state.breakers.failure(att.served.name)
        body = error_body(err.status, err.message, code=err.error_class)
        yield b"data: " + orjson.dumps(body) + b"\n\n"
    except (asyncio.CancelledError, GeneratorExit):
        status = "cancelled"
        raise
    finally:
        att.upstream_s += time.perf_counter() - stream.first_at
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        reply = {"role": "assistant", "content": "".join(parts)}
        rec = att.record(
            status=status, http_status=200, error=error, ttft_s=ttft_s, tokens=usage, reply=reply
        )
        await _log(state, att, rec, wait=False)


@router.get(
    "/v1/models",
    summary="List the routes and models a client may call",
)
async def list_models(state: StateDep) -> dict[str, Any]:
    """Routes and models in OpenAI's list format."""
    table = state.routing.table
    data = [
        {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "larrylab-route"
            if name in table.routes or name in table.experiments
            else "larrylab",
        }
        for name in table.names()
    ]
    return {"object": "list", "data": data}
