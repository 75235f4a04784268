"""Gemini's native protocol, so that a google-genai client switches by base URL alone:
`POST /{v1,v1beta}/models/{model}:generateContent`, `:streamGenerateContent` (server-sent
events with `?alt=sse`, else one JSON array streamed), `:countTokens`, and the model list.

`{model}` names a route (its experiment picks the arm) or a model, as on the OpenAI side. The
client key comes in `x-goog-api-key`, `?key=` or `Authorization: Bearer` (checked by the gate,
`guard.py`); errors come in Gemini's shape (`{"error": {"code", "message", "status"}}`), which
google-genai raises as its own `ClientError` / `ServerError` with the router's message.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from larrylab.router._deps import RouterState
from larrylab.router._errors import ApiError, gemini_error_response, speaks_gemini
from larrylab.router._gemini_wire import (
    WireError,
    gemini_error,
    gemini_messages,
    gemini_reply_text,
    gemini_usage,
    normalize,
    parse_gemini_body,
)
from larrylab.router._inbound import GEMINI, Inbound
from larrylab.router._model_list import (
    GEMINI_METHODS,
    gemini_model,
    gemini_model_list,
    openai_model,
)
from larrylab.router._raw import RawRoute, read_body
from larrylab.router._routing import RoutingTable, Target
from larrylab.router._serving import Attempt, plan, serve
from larrylab.router._upstream import UpstreamError, gemini_count_tokens

VERSIONS = ("v1", "v1beta")
METHODS = GEMINI_METHODS

router = APIRouter(tags=["gemini"])


class GeminiReply:
    """A streamed GenerateContentResponse as the log keeps it: the first candidate's text and
    the last usage."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None
        self.first_content_at: float | None = None  # perf_counter() of the first text
        self._parts: list[str] = []

    def add(self, chunk: dict[str, Any]) -> None:
        """Gather one chunk."""
        text = gemini_reply_text(chunk)
        if text and self.first_content_at is None:
            self.first_content_at = time.perf_counter()
        self._parts.append(text)
        usage = gemini_usage(chunk)
        if usage:
            self.usage = usage

    def message(self) -> dict[str, Any]:
        """The reply as an assistant message."""
        return {"role": "assistant", "content": "".join(self._parts)}


class GeminiWire:
    """Gemini's shapes: GenerateContentResponse, chunks as `data:` events (`alt=sse`) or as
    the items of one JSON array."""

    def __init__(self, *, sse: bool) -> None:
        self.sse = sse
        self.media_type = "text/event-stream" if sse else "application/json"
        self._sent = 0
        self._reply = GeminiReply()

    def error(
        self, status: int, message: str, code: str | None, headers: dict[str, str]
    ) -> Response:
        """An error in Gemini's shape."""
        return gemini_error_response(status, message, headers)

    def finish_json(
        self, data: dict[str, Any], att: Attempt
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Set the response's id; its text and usage."""
        data["responseId"] = att.id
        return {"role": "assistant", "content": gemini_reply_text(data)}, gemini_usage(data)

    def gathered(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The streamed reply so far, and its usage."""
        return self._reply.message(), self._reply.usage

    def first_content_at(self) -> float | None:
        """When the stream's first text came (perf_counter), if it has."""
        return self._reply.first_content_at

    def chunk(self, chunk: dict[str, Any], att: Attempt) -> bytes | None:
        """A chunk with our id, framed."""
        self._reply.add(chunk)
        chunk["responseId"] = att.id
        return self._frame(orjson.dumps(chunk))

    def _frame(self, data: bytes) -> bytes:
        self._sent += 1
        if self.sse:
            return b"data: " + data + b"\r\n\r\n"
        return data if self._sent == 1 else b",\r\n" + data

    def start(self) -> bytes:
        """`[` for a JSON array."""
        return b"" if self.sse else b"["

    def end(self) -> bytes:
        """`]` for a JSON array."""
        return b"" if self.sse else b"]"

    def error_event(self, err: UpstreamError) -> bytes:
        """The failure as one more item."""
        item = self._frame(orjson.dumps(gemini_error(err.status, err.message)))
        return item if self.sse else (b"[" if self._sent == 1 else b"") + item + b"]"


def _split(name: str) -> tuple[str, str]:
    """`larry:generateContent` -> ("larry", "generateContent"); a `models/` prefix dropped."""
    model, _, method = name.rpartition(":")
    return model.removeprefix("models/"), method


def _version(request: Request) -> str:
    """The API version of the request's path (`v1` or `v1beta`)."""
    path: str = request.scope["path"]
    return path.split("/", 2)[1]


def _checked_method(name: str) -> tuple[str, str]:
    model, method = _split(name)
    if not model or method not in METHODS:
        raise ApiError(
            404,
            f"unknown method {name!r}: this router serves "
            + ", ".join(f"models/MODEL:{m}" for m in METHODS),
            code="not_found",
        )
    return model, method


async def model_call(request: Request) -> Response:
    """Serve `models/{model}:{method}` (generateContent, streamGenerateContent, countTokens)."""
    t0 = time.perf_counter()
    state: RouterState = request.app.state.router
    model, method = _checked_method(request.path_params["name"])
    raw = await read_body(request, state.settings.max_body_bytes)
    if method == "countTokens":
        return await _count_tokens(state, model, raw, _version(request))
    try:
        body = parse_gemini_body(raw)
    except WireError as exc:
        raise ApiError(400, str(exc), code="invalid_argument") from None
    stream = method == "streamGenerateContent"
    inbound = Inbound(GEMINI, model, body, raw, stream, version=_version(request))
    att = plan(state, inbound, request.headers, t0)
    sse = bool(request.scope["query_string"]) and request.query_params.get("alt") == "sse"
    wire = GeminiWire(sse=sse)
    return await serve(state, att, wire)


def _count_target(table: RoutingTable, model: str) -> Target:
    """The model that counts: a route's control (its experiment's), else the model named."""
    res = table.resolve(model, "count-tokens")
    if res is None:
        names = ", ".join(table.names()[:20]) or "none configured"
        raise ApiError(404, f"unknown model or route {model!r}; available: {names}")
    return res.control or res.target


def _counted_messages(raw: bytes) -> list[dict[str, Any]]:
    """The conversation a countTokens body counts, as OpenAI-style messages."""
    try:
        data = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    data = normalize(data)
    inner = data.get("generateContentRequest")
    request = normalize(inner) if isinstance(inner, dict) else {"contents": data.get("contents")}
    try:
        body = parse_gemini_body(orjson.dumps(request))
    except WireError as exc:
        raise ApiError(400, str(exc), code="invalid_argument") from None
    return gemini_messages(body)


def _estimate_tokens(target: Target, messages: list[dict[str, Any]]) -> int:
    """Tokens of `messages` by litellm's counter (the model's tokenizer where litellm knows
    it, else a GPT tokenizer): an OpenAI-compatible model has no counting endpoint."""
    import litellm

    return int(litellm.token_counter(model=target.upstream_model, messages=messages))


async def _count_tokens(state: RouterState, model: str, raw: bytes, version: str) -> Response:
    messages = _counted_messages(raw)
    target = _count_target(state.routing.table, model)
    if target.api == GEMINI:
        try:
            data = await gemini_count_tokens(state.client, target, raw, version=version)
        except UpstreamError as err:
            return gemini_error_response(err.status, err.message)
        return Response(orjson.dumps(data), media_type="application/json")
    total = await asyncio.to_thread(_estimate_tokens, target, messages)
    return Response(orjson.dumps({"totalTokens": total}), media_type="application/json")


async def list_gemini_models(request: Request) -> Response:
    """Routes and models a client may call, in Gemini's list format."""
    state: RouterState = request.app.state.router
    body = orjson.dumps(gemini_model_list(state.routing.table))
    return Response(body, media_type="application/json")


async def get_gemini_model(request: Request) -> Response:
    """One route or model, in Gemini's format (OpenAI's for an OpenAI client on `/v1`)."""
    state: RouterState = request.app.state.router
    name = request.path_params["name"].removeprefix("models/")
    table = state.routing.table
    if name not in table.names():
        raise ApiError(404, f"unknown model or route {name!r}", code="not_found")
    entry = gemini_model(table, name) if speaks_gemini(request.scope) else openai_model(table, name)
    return Response(orjson.dumps(entry), media_type="application/json")


class GeminiErrorDetail(BaseModel):
    """What went wrong, in Gemini's error shape."""

    code: int
    message: str
    status: str


class GeminiErrorBody(BaseModel):
    """Every error of Gemini's API: `{"error": {...}}`."""

    error: GeminiErrorDetail


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        s: {"model": GeminiErrorBody, "description": "an error in Gemini's shape"} for s in statuses
    }


# GET /v1/models/{name} answers an OpenAI client in OpenAI's shapes, a Gemini client in Gemini's.
_EITHER_404: dict[str, Any] = {
    "description": "unknown route or model, in the client's protocol's error shape",
    "content": {
        "application/json": {
            "schema": {
                "anyOf": [
                    {"$ref": "#/components/schemas/GeminiErrorBody"},
                    {"$ref": "#/components/schemas/ErrorBody"},
                ]
            }
        }
    },
}


def _name(pattern: str, description: str) -> dict[str, Any]:
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": pattern},
        "description": description,
    }


_CALL_OPENAPI: dict[str, Any] = {
    "parameters": [
        _name(
            f"^[^/:]+:({'|'.join(METHODS)})$",
            "`MODEL:METHOD`: a route or model, and generateContent, streamGenerateContent or "
            "countTokens",
        ),
        {
            "name": "alt",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["sse"]},
            "description": "`sse`: a stream as server-sent events (else one JSON array)",
        },
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    "responses": {
        "200": {
            "description": "A GenerateContentResponse, its chunks streamed, or a token count",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        }
    },
}
_GET_OPENAPI: dict[str, Any] = {"parameters": [_name("^[^/]+$", "a route or model")]}

for _version_name in VERSIONS:
    get_errors: dict[int | str, dict[str, Any]] = (
        {404: _EITHER_404} if _version_name == "v1" else _errors(404)
    )
    router.add_api_route(
        f"/{_version_name}/models/{{name}}",
        model_call,
        methods=["POST"],
        summary="generateContent, streamGenerateContent or countTokens (Gemini's API): "
        "`{name}` is `MODEL:METHOD`",
        response_model=None,
        openapi_extra=_CALL_OPENAPI,
        responses=_errors(400, 404, 413, 429, 502, 504),
        route_class_override=RawRoute,
        name=f"gemini_model_call_{_version_name}",
    )
    router.add_api_route(
        f"/{_version_name}/models/{{name}}",
        get_gemini_model,
        methods=["GET"],
        summary="One route or model (Gemini's format; OpenAI's on /v1 without a Gemini key)",
        response_model=None,
        openapi_extra=_GET_OPENAPI,
        responses=get_errors,
        route_class_override=RawRoute,
        name=f"gemini_get_model_{_version_name}",
    )
router.add_api_route(
    "/v1beta/models",
    list_gemini_models,
    methods=["GET"],
    summary="The routes and models a client may call (Gemini's API)",
    response_model=None,
    route_class_override=RawRoute,
)
