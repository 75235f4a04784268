"""`POST /v1/chat/completions` and `GET /v1/models`: OpenAI's protocol on the hot path.

The chat route reads its raw body itself (`read_body`, at most `max_body_bytes`) and parses it
with `parse_chat_body`, faster than a pydantic body parameter; its OpenAPI request body and
replies are declared with `openapi_extra`. The client key is checked by the gate in front of
every route (`guard.py`) before any body is read. Serving is `_serving.py`'s.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from larrylab.router._deps import RouterState, StateDep
from larrylab.router._errors import error_body, error_response, error_responses, speaks_gemini
from larrylab.router._guard import CHAT_PATH
from larrylab.router._inbound import OPENAI, Inbound
from larrylab.router._model_list import gemini_model_list, openai_model_list
from larrylab.router._raw import RawRoute, read_body
from larrylab.router._schemas import parse_chat_body
from larrylab.router._serving import Attempt, plan, serve
from larrylab.router._upstream import UpstreamError

router = APIRouter(
    tags=["openai"],
    responses=error_responses(400, 401, 404, 413, 422, 429, 502, 504),
)


class ChoiceReply:
    """A streamed chat completion as the log keeps it: the first choice's text and tool calls
    (deltas merged by index), the usage, and when its first content came."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None
        self.first_content_at: float | None = None  # perf_counter() of the first text or call
        self._parts: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        """Gather one chunk."""
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if isinstance(piece, str):
                self._parts.append(piece)
            calls = delta.get("tool_calls") or ()
            for call in calls:
                if isinstance(call, dict):
                    self._merge_call(call)
            if self.first_content_at is None and (piece or calls):
                self.first_content_at = time.perf_counter()

    def _merge_call(self, delta: dict[str, Any]) -> None:
        index = delta.get("index", len(self._calls))
        call = self._calls.setdefault(
            index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if delta.get("id"):
            call["id"] = delta["id"]
        function = delta.get("function") or {}
        for key in ("name", "arguments"):
            if isinstance(function.get(key), str):
                call["function"][key] += function[key]

    def message(self) -> dict[str, Any]:
        """The reply as an assistant message."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._parts)}
        if self._calls:
            message["tool_calls"] = [self._calls[i] for i in sorted(self._calls)]
        return message


class OpenAIWire:
    """OpenAI's shapes for one request: chat completions, chunks as `data:` events ending in
    `[DONE]`."""

    media_type = "text/event-stream; charset=utf-8"

    def __init__(self) -> None:
        self._reply = ChoiceReply()

    def error(
        self, status: int, message: str, code: str | None, headers: dict[str, str]
    ) -> Response:
        """An error in OpenAI's shape."""
        return error_response(status, message, code=code, headers=headers)

    def finish_json(
        self, data: dict[str, Any], att: Attempt
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Set the completion's id; its first choice's message and usage."""
        data["id"] = att.id
        return _reply_message(data), data.get("usage") or {}

    def gathered(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The streamed reply so far, and its usage."""
        return self._reply.message(), self._reply.usage

    def first_content_at(self) -> float | None:
        """When the stream's first text or tool call came (perf_counter), if it has."""
        return self._reply.first_content_at

    def chunk(self, chunk: dict[str, Any], att: Attempt) -> bytes | None:
        """A chunk with our id; the usage-only chunk only when the client asked for usage."""
        self._reply.add(chunk)
        if not chunk.get("choices"):
            if not _wants_usage(att):
                return None
        elif not _wants_usage(att):
            chunk.pop("usage", None)
        chunk["id"] = att.id
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def start(self) -> bytes:
        """Nothing opens an OpenAI stream."""
        return b""

    def end(self) -> bytes:
        """`data: [DONE]`."""
        return b"data: [DONE]\n\n"

    def error_event(self, err: UpstreamError) -> bytes:
        """An `{error: ...}` event."""
        body = error_body(err.status, err.message, code=err.error_class)
        return b"data: " + orjson.dumps(body) + b"\n\n"


def _wants_usage(att: Attempt) -> bool:
    options = att.inbound.body.get("stream_options") or {}
    return bool(options.get("include_usage"))


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


async def chat_completions(request: Request) -> Response:
    """Route a chat completion to the model its route and thread select."""
    t0 = time.perf_counter()
    state: RouterState = request.app.state.router
    raw = await read_body(request, state.settings.max_body_bytes)
    body = parse_chat_body(raw)
    inbound = Inbound(OPENAI, body["model"], body, raw, bool(body.get("stream")))
    att = plan(state, inbound, request.headers, t0)
    return await serve(state, att, OpenAIWire())


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

router.add_api_route(
    CHAT_PATH,
    chat_completions,
    methods=["POST"],
    summary="Create a chat completion (OpenAI-compatible)",
    response_model=None,
    openapi_extra=CHAT_OPENAPI,
    route_class_override=RawRoute,
)


@router.get(
    "/v1/models",
    summary="List the routes and models a client may call",
)
async def list_models(request: Request, state: StateDep) -> dict[str, Any]:
    """Routes and models in OpenAI's list format (Gemini's for a Gemini client: one that sends
    its key as `x-goog-api-key` or `?key=`)."""
    table = state.routing.table
    if speaks_gemini(request.scope):
        return gemini_model_list(table)
    return openai_model_list(table)
