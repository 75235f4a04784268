"""OpenAI wire protocol: `POST /v1/chat/completions` (JSON or SSE) and `GET /v1/models`."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from larrylab.sim.engine import (
    BadRequest,
    Endpoint,
    Plan,
    Reply,
    SimStream,
    Simulator,
    check_messages,
    optional_bool,
    pace,
)

_JSON = "application/json"
_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a chat completion request that the simulator looks at."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    schema: dict[str, Any] | None
    json_object: bool


def openai_error(
    status: int,
    message: str,
    *,
    headers: Mapping[str, str],
    error_type: str = "invalid_request_error",
    param: str | None = None,
) -> Response:
    """An error response in OpenAI's shape."""
    body = {"error": {"message": message, "type": error_type, "param": param, "code": None}}
    return Response(orjson.dumps(body), status, headers=headers, media_type=_JSON)


def parse_chat_request(raw: bytes) -> ChatRequest:
    """Read a chat completion request body; BadRequest with OpenAI's wording if invalid."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("You must provide a model parameter.", "model")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object.", "stream_options")
    schema, json_object = _response_format(body.get("response_format"))
    return ChatRequest(
        model=model,
        messages=check_messages(body.get("messages")),
        stream=optional_bool(body, "stream", False),
        include_usage=optional_bool(options, "include_usage", False),
        max_tokens=_max_tokens(body),
        schema=schema,
        json_object=json_object,
    )


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"'{key}' must be a positive integer.", key)
        return value
    return None


def _response_format(value: Any) -> tuple[dict[str, Any] | None, bool]:
    """`(schema, json_object)` from `response_format`."""
    if value is None:
        return None, False
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None, False
    if kind == "json_object":
        return None, True
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest(
                "'response_format.json_schema' must be an object with a 'name'.",
                "response_format",
            )
        schema = spec.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise BadRequest(
                "'response_format.json_schema.schema' must be an object.", "response_format"
            )
        return schema, schema is None
    raise BadRequest(
        "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
        "response_format",
    )


def openai_model_list(sim: Simulator) -> Endpoint:
    """The `GET /v1/models` endpoint: the configured models in OpenAI's shape."""
    headers = sim.headers
    created = int(time.time())
    models = orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": created, "owned_by": "larrylab-sim"}
                for m in sim.config.models
            ],
        }
    )

    async def list_models(request: Request) -> Response:
        return Response(models, headers=headers, media_type=_JSON)

    return list_models


def openai_routes(sim: Simulator) -> list[Route]:
    """The OpenAI chat route of one simulated upstream (`openai_model_list` serves the models)."""
    headers = sim.headers
    fingerprint = sim.config.fingerprint

    async def chat_completions(request: Request) -> Response:
        try:
            chat = parse_chat_request(await request.body())
            reply = sim.reply(
                chat.messages,
                schema=chat.schema,
                json_object=chat.json_object,
                max_tokens=chat.max_tokens,
            )
        except BadRequest as exc:
            return openai_error(400, exc.message, headers=headers, param=exc.param)
        plan = sim.plan(stream=chat.stream, tokens=reply.completion_tokens)
        if await sim.wait(request.receive, plan.wait_s):
            return _abandoned(headers)
        if plan.fail:
            return _injected_error(sim, headers)
        head = {
            "id": f"chatcmpl-sim-{secrets.token_hex(12)}",
            "created": int(time.time()),
            "model": chat.model,
            "system_fingerprint": fingerprint,
        }
        if chat.stream:
            chunks = _sse(head, plan, reply, include_usage=chat.include_usage)
            complete = plan.drop_after is None
            return SimStream(
                chunks, media_type="text/event-stream", headers=headers, complete=complete
            )
        total_s = plan.generation_s(reply.completion_tokens)
        if await sim.wait(request.receive, total_s):
            return _abandoned(headers)
        return Response(orjson.dumps(_completion(head, reply)), headers=headers, media_type=_JSON)

    return [Route("/v1/chat/completions", chat_completions, methods=["POST"])]


def _abandoned(headers: Mapping[str, str]) -> Response:
    """The answer to a request whose wait was cut short (nobody reads it if the client left)."""
    message = "The simulated upstream is shutting down."
    return openai_error(503, message, headers=headers, error_type="server_error")


def _injected_error(sim: Simulator, headers: Mapping[str, str]) -> Response:
    status = sim.config.error_status
    if status == 429:
        return openai_error(
            429,
            "Rate limit reached (injected by the larrylab simulator).",
            headers={**headers, "retry-after": "1"},
            error_type="rate_limit_error",
        )
    message = f"The simulated upstream failed on purpose (error_rate={sim.config.error_rate})."
    return openai_error(status, message, headers=headers, error_type="server_error")


def _usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }


def _completion(head: dict[str, Any], reply: Reply) -> dict[str, Any]:
    message = {"role": "assistant", "content": reply.text, "refusal": None}
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": reply.finish_reason,
    }
    return {**head, "object": "chat.completion", "choices": [choice], "usage": _usage(reply)}


async def _sse(
    head: dict[str, Any], plan: Plan, reply: Reply, *, include_usage: bool
) -> AsyncIterator[bytes]:
    """The SSE chunks of a streamed reply; stops early (no final chunk) for a dropped one."""
    base = {**head, "object": "chat.completion.chunk"}
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

    if plan.ttft_s > 0:
        await asyncio.sleep(plan.ttft_s)
    yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
    tokens = reply.tokens if plan.drop_after is None else reply.tokens[: plan.drop_after]
    start = time.monotonic()
    for index, token in enumerate(tokens):
        if plan.interval_s:
            await pace(start, index, plan.interval_s)
        yield chunk({"content": token}, None)
    if plan.drop_after is not None:
        return
    yield chunk({}, reply.finish_reason)
    if include_usage:
        yield b"data: " + orjson.dumps({**base, "choices": [], "usage": _usage(reply)}) + b"\n\n"
    yield _DONE
