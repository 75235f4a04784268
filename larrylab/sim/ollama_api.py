"""Ollama wire protocol: `POST /api/chat` (JSON or NDJSON) and `GET /api/tags`."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from larrylab.sim.engine import (
    BadRequest,
    Plan,
    Reply,
    SimStream,
    Simulator,
    check_messages,
    optional_bool,
    pace,
)

_JSON = "application/json"
_NDJSON = "application/x-ndjson"


@dataclass(frozen=True, slots=True)
class OllamaChat:
    """The parts of an Ollama chat request that the simulator looks at."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    num_predict: int | None
    schema: dict[str, Any] | None
    json_object: bool


def ollama_error(status: int, message: str, *, headers: Mapping[str, str]) -> Response:
    """An error response in Ollama's shape: `{"error": message}`."""
    return Response(orjson.dumps({"error": message}), status, headers=headers, media_type=_JSON)


def parse_ollama_chat(raw: bytes) -> OllamaChat:
    """Read an `/api/chat` body (`stream` defaults to true, as in Ollama); BadRequest if invalid."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("invalid JSON body") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required", "model")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise BadRequest("options must be an object", "options")
    num_predict = options.get("num_predict")
    if num_predict is not None and (
        isinstance(num_predict, bool) or not isinstance(num_predict, int)
    ):
        raise BadRequest("options.num_predict must be an integer", "options")
    fmt = body.get("format")
    if fmt not in (None, "", "json") and not isinstance(fmt, dict):
        raise BadRequest('invalid format: expected "json" or a JSON schema', "format")
    return OllamaChat(
        model=model,
        messages=check_messages(body.get("messages")),
        stream=optional_bool(body, "stream", True),
        num_predict=num_predict if num_predict is not None and num_predict > 0 else None,
        schema=fmt if isinstance(fmt, dict) else None,
        json_object=fmt == "json",
    )


def _now() -> datetime:
    """The current time; orjson writes it as RFC 3339 (`..._UTC_Z` gives the `Z` suffix)."""
    return datetime.now(UTC)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)


def _tags(models: tuple[str, ...]) -> bytes:
    entries = []
    for name in models:
        digest = hashlib.sha256(name.encode()).hexdigest()
        details = {
            "parent_model": "",
            "format": "gguf",
            "family": "larrylab-sim",
            "families": ["larrylab-sim"],
            "parameter_size": "0B",
            "quantization_level": "none",
        }
        entries.append(
            {
                "name": name,
                "model": name,
                "modified_at": _now(),
                "size": 0,
                "digest": digest,
                "details": details,
            }
        )
    return _dumps({"models": entries})


@dataclass(slots=True)
class _Clock:
    """Monotonic nanosecond marks of one request, for Ollama's duration fields."""

    start: int
    ready: int = 0
    first: int = 0

    def stats(self, reply: Reply) -> dict[str, Any]:
        end = time.perf_counter_ns()
        first = self.first or end
        return {
            "total_duration": end - self.start,
            "load_duration": self.ready - self.start,
            "prompt_eval_count": reply.prompt_tokens,
            "prompt_eval_duration": first - self.ready,
            "eval_count": reply.completion_tokens,
            "eval_duration": end - first,
        }


def ollama_routes(sim: Simulator) -> list[Route]:
    """The Ollama routes of one simulated upstream."""
    headers = sim.headers
    tags = _tags(sim.config.models)

    async def list_tags(request: Request) -> Response:
        return Response(tags, headers=headers, media_type=_JSON)

    async def chat(request: Request) -> Response:
        clock = _Clock(time.perf_counter_ns())
        try:
            req = parse_ollama_chat(await request.body())
            reply = sim.reply(
                req.messages,
                schema=req.schema,
                json_object=req.json_object,
                max_tokens=req.num_predict,
            )
        except BadRequest as exc:
            return ollama_error(400, exc.message, headers=headers)
        plan = sim.plan(stream=req.stream, tokens=reply.completion_tokens)
        if await sim.wait(request.receive, plan.wait_s):
            return _abandoned(headers)
        if plan.fail:
            message = f"simulated upstream failure (error_rate={sim.config.error_rate})"
            return ollama_error(sim.config.error_status, message, headers=headers)
        clock.ready = time.perf_counter_ns()
        if req.stream:
            lines = _ndjson(req.model, plan, reply, clock)
            complete = plan.drop_after is None
            return SimStream(lines, media_type=_NDJSON, headers=headers, complete=complete)
        total_s = plan.generation_s(reply.completion_tokens)
        if await sim.wait(request.receive, total_s):
            return _abandoned(headers)
        clock.first = clock.ready + int(plan.ttft_s * 1e9)
        body = _final(req.model, reply, clock, content=reply.text)
        return Response(_dumps(body), headers=headers, media_type=_JSON)

    return [
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/tags", list_tags, methods=["GET"]),
    ]


def _abandoned(headers: Mapping[str, str]) -> Response:
    """The answer to a request whose wait was cut short (nobody reads it if the client left)."""
    return ollama_error(503, "simulated upstream is shutting down", headers=headers)


def _final(model: str, reply: Reply, clock: _Clock, *, content: str) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": _now(),
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": reply.finish_reason,
        **clock.stats(reply),
    }


async def _ndjson(model: str, plan: Plan, reply: Reply, clock: _Clock) -> AsyncIterator[bytes]:
    """The NDJSON lines of a streamed reply; stops early (no `done` line) for a dropped one."""
    if plan.ttft_s > 0:
        await asyncio.sleep(plan.ttft_s)
    clock.first = time.perf_counter_ns()
    tokens = reply.tokens if plan.drop_after is None else reply.tokens[: plan.drop_after]
    start = time.monotonic()
    for index, token in enumerate(tokens):
        if plan.interval_s:
            await pace(start, index, plan.interval_s)
        line = {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": token},
            "done": False,
        }
        yield _dumps(line) + b"\n"
    if plan.drop_after is None:
        yield _dumps(_final(model, reply, clock, content="")) + b"\n"
