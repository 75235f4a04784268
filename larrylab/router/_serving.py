"""Serving one model request, whatever its protocol: pick the arm, decide eligibility, call the
model (the control instead of a failing candidate), answer, log.

The protocol-specific parts (parsing, reply shapes, stream framing, errors) live in the
routes (`_chat.py` for OpenAI's protocol, `_gemini.py` for Gemini's) and in `Wire`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import orjson
from starlette.responses import Response

from larrylab.db import utcnow
from larrylab.requestlog import RequestRecord
from larrylab.router._deps import RouterState
from larrylab.router._errors import ApiError
from larrylab.router._ids import request_id
from larrylab.router._inbound import Inbound, complete_for, stream_for, thread_unit
from larrylab.router._relay import RelayResponse
from larrylab.router._routing import Resolution, Target
from larrylab.router._upstream import ChunkStream, Completion, UpstreamClient, UpstreamError

log = logging.getLogger(__name__)

T = TypeVar("T")
# (client, target, request, start): `start` is when the call to the target began (`loop.time()`)
Call = Callable[[UpstreamClient, Target, Inbound, float], Awaitable[T]]


@dataclass(slots=True)
class Attempt:
    """Bookkeeping for one request as it moves through the router."""

    id: str
    t0: float
    created: Any
    inbound: Inbound
    unit: str
    unit_source: str
    res: Resolution
    ineligible: str | None = None  # features a candidate of the experiment cannot serve
    stripped: Inbound | None = None  # the request without them, for the assigned candidate
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
        tokens: Mapping[str, Any] | None = None,
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
            stream=self.inbound.stream,
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
            protocol=self.inbound.protocol,
            ineligible=self.ineligible,
            stripped=self.stripped is not None and served is self.res.target,
            created_at=self.created,
            finished_at=utcnow(),
            prompt=self.inbound.messages(),
            reply=reply,
        )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _cannot_serve(target: Target, features: list[str], protocol: str) -> ApiError:
    kind = "Gemini's API" if target.api == "gemini" else "an OpenAI-compatible API"
    return ApiError(
        400,
        f"model {target.name!r} ({kind}) cannot serve this {protocol} request faithfully: it "
        f"uses {', '.join(features)}; send it to a route whose experiment has a control that "
        "can, or without those features",
        code="unsupported_feature",
    )


def plan(state: RouterState, inbound: Inbound, headers: Mapping[str, str], t0: float) -> Attempt:
    """Resolve the request's route and arm, and decide before any model answers who serves it:
    a candidate that cannot serve its features leaves it to the control (`unsupported:
    control`) or gets it without them (`strip`). Raises ApiError (unknown model, or a model
    with no alternative that cannot serve the request)."""
    created = utcnow()
    unit, unit_source = thread_unit(inbound, headers)
    table = state.routing.table
    res = table.resolve(inbound.model, unit)
    if res is None:
        names = ", ".join(table.names()[:20]) or "none configured"
        raise ApiError(
            404,
            f"unknown model or route {inbound.model!r}; available: {names}",
            param="model",
            code="model_not_found",
        )
    att = Attempt(request_id(), t0, created, inbound, unit, unit_source, res)
    plan_ = res.experiment
    if plan_ is None:
        if features := inbound.features_for(res.target):
            raise _cannot_serve(res.target, features, inbound.protocol)
        return att
    by_candidate = {
        name: inbound.features_for(table.models[name])
        for name in plan_.ranges.names
        if name != plan_.control
    }
    reasons = {reason for found in by_candidate.values() for reason in found}
    if not reasons:
        return att
    att.ineligible = ",".join(sorted(reasons))
    if res.control is None:  # assigned to the control, which serves the request as sent
        if control_features := inbound.features_for(res.target):
            raise _cannot_serve(res.target, control_features, inbound.protocol)
        return att
    if not by_candidate[res.target.name]:
        return att
    if plan_.unsupported == "strip":
        att.stripped = inbound.without_features()
    else:
        att.served = res.control
    return att


async def _call_target(state: RouterState, att: Attempt, target: Target, call: Call[T]) -> T:
    """Call one model, retrying once on a connect error (refused, unreachable: nothing was
    sent); feed its breaker; log a failure with its cause.

    The model's deadlines count from here, once: the retry shares them."""
    start = asyncio.get_running_loop().time()
    stripped = att.stripped is not None and target is att.res.target
    inbound = att.stripped if stripped and att.stripped is not None else att.inbound
    for attempt in range(2):
        try:
            out = await call(state.client, target, inbound, start)
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


async def with_fallback(state: RouterState, att: Attempt, call: Call[T]) -> T:
    """Call the serving model; a candidate arm that fails before any byte, or whose circuit
    breaker is open, is replaced by the control arm."""
    started = time.perf_counter()
    target, control = att.res.target, att.res.control
    try:
        if att.served is not None and att.served is control:  # not eligible: the control serves
            return await _call_target(state, att, control, call)
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


async def log_request(
    state: RouterState, att: Attempt, rec: RequestRecord, *, wait: bool = True
) -> None:
    """Count the request in the metrics and append its row to the request log."""
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


class Wire(Protocol):
    """A client protocol's shapes for one request: replies, errors, stream framing, and what
    the log keeps of a streamed reply (gathered as its chunks pass)."""

    media_type: str

    def error(
        self, status: int, message: str, code: str | None, headers: dict[str, str]
    ) -> Response:
        """An error response."""
        ...

    def finish_json(
        self, data: dict[str, Any], att: Attempt
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Set the request id in a whole reply; the reply message and token counts to log."""
        ...

    def chunk(self, chunk: dict[str, Any], att: Attempt) -> bytes | None:
        """One chunk of a stream as sent (None: not sent), gathered for the log."""
        ...

    def gathered(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The streamed reply so far as an assistant message, and its token counts."""
        ...

    def first_content_at(self) -> float | None:
        """When the first text (or tool call) of the stream came (perf_counter), if it has."""
        ...

    def start(self) -> bytes:
        """What opens the stream."""
        ...

    def end(self) -> bytes:
        """What ends the stream."""
        ...

    def error_event(self, err: UpstreamError) -> bytes:
        """A failure mid-stream, as an event."""
        ...


async def fail(state: RouterState, att: Attempt, err: UpstreamError, wire: Wire) -> Response:
    """Log a request no model answered; the error in the client's protocol."""
    await log_request(state, att, att.record(status="error", http_status=err.status, error=err))
    return wire.error(err.status, err.message, err.error_class, att.headers())


async def serve(state: RouterState, att: Attempt, wire: Wire) -> Response:
    """Answer the planned request: a whole reply, or a relayed stream."""
    if att.inbound.stream:
        try:
            stream: ChunkStream = await with_fallback(state, att, stream_for)
        except UpstreamError as err:
            return await fail(state, att, err, wire)
        headers = {**att.headers(), "cache-control": "no-cache"}
        return RelayResponse(_relay(state, att, stream, wire), headers, wire.media_type)
    try:
        done: Completion = await with_fallback(state, att, complete_for)
    except UpstreamError as err:
        return await fail(state, att, err, wire)
    reply, tokens = wire.finish_json(done.data, att)
    rec = att.record(
        status="ok",
        http_status=200,
        ttft_s=time.perf_counter() - att.t0,
        tokens=tokens,
        reply=reply,
    )
    await log_request(state, att, rec)
    body = orjson.dumps(done.data)
    return Response(body, media_type="application/json", headers=att.headers())


async def _batches(stream: ChunkStream) -> AsyncIterator[list[dict[str, Any]]]:
    yield stream.first
    async for batch in stream.rest:
        yield batch


async def _relay(
    state: RouterState, att: Attempt, stream: ChunkStream, wire: Wire
) -> AsyncIterator[tuple[bytes, bool]]:
    """Pass the upstream's chunks through with our request id, each piece with whether more
    follows (the last batch goes with the end of the reply); log when the stream ends."""
    error: UpstreamError | None = None
    status = "ok"
    ended = False  # whether the end of the reply has been handed on
    try:
        opening = wire.start()
        async for batch in _batches(stream):
            out = [b for chunk in batch if (b := wire.chunk(chunk, att)) is not None]
            if ended:
                continue
            if stream.end.seen:  # the upstream's end came with this batch
                ended = True
                yield opening + b"".join(out) + wire.end(), False
            elif out:  # chunks that arrived together are sent together
                yield opening + b"".join(out), True
                opening = b""
        if not ended:
            ended = True
            yield opening + wire.end(), False
    except UpstreamError as err:
        error, status = err, "error"
        if att.served is not None:
            state.breakers.failure(att.served.name)
        if not ended:
            ended = True
            yield wire.error_event(err), False
    except (asyncio.CancelledError, GeneratorExit):
        status = "cancelled"
        raise
    except Exception as exc:  # a bug mid-stream: say so in the client's protocol, end cleanly
        log.exception("unexpected error while relaying a stream")
        message = f"internal error ({type(exc).__name__}); see the server log"
        error, status = UpstreamError("internal_error", message, 500), "error"
        if not ended:
            ended = True
            yield wire.error_event(error), False
    finally:
        att.upstream_s += time.perf_counter() - stream.first_at
        with anyio.CancelScope(shield=True):
            await stream.aclose()
        reply, usage = wire.gathered()
        # time to first token: the first chunk with content (a server may open its stream
        # with an empty chunk), else the first chunk
        ttft_s = (wire.first_content_at() or stream.first_at) - att.t0
        rec = att.record(
            status=status, http_status=200, error=error, ttft_s=ttft_s, tokens=usage, reply=reply
        )
        await log_request(state, att, rec, wait=False)
