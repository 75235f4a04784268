"""Gemini's native REST protocol (what the google-genai SDK speaks), under `/v1` and `/v1beta`.

`POST models/{model}:generateContent` (JSON), `:streamGenerateContent` (SSE with `alt=sse`,
else one streamed JSON array), `:countTokens`, and `GET models`, `GET models/{model}`. Any
API key (header `x-goog-api-key` or `?key=`) or none is accepted, as on the OpenAI side.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from larrylab.sim.engine import BadRequest, Endpoint, Plan, Reply, SimStream, Simulator, pace
from larrylab.sim.gemini_request import parse_count_tokens, parse_generate_request
from larrylab.sim.replies import prompt_tokens

_JSON = "application/json"
_VERSIONS = ("v1", "v1beta")
_STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS"}
_METHODS = ["generateContent", "countTokens"]


def gemini_error(status: int, message: str, *, headers: Mapping[str, str]) -> Response:
    """An error response in Gemini's shape: `{"error": {"code", "message", "status"}}`."""
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if status == 429:
        retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
        error["details"] = [retry]
    return Response(orjson.dumps({"error": error}), status, headers=headers, media_type=_JSON)


def speaks_gemini(request: Request) -> bool:
    """Whether a request is Gemini's: a `/v1beta` or `/v1/models/...` path, or a Gemini key."""
    path = request.url.path
    if path.startswith(("/v1beta/", "/v1/models/")) or path == "/v1beta":
        return True
    headers = request.headers
    return (
        "x-goog-api-key" in headers
        or "x-goog-api-client" in headers
        or "key" in request.query_params
    )


def _usage(reply: Reply) -> dict[str, int]:
    return {
        "promptTokenCount": reply.prompt_tokens,
        "candidatesTokenCount": reply.completion_tokens,
        "totalTokenCount": reply.prompt_tokens + reply.completion_tokens,
    }


def _response(head: Mapping[str, str], text: str, final: Reply | None) -> dict[str, Any]:
    """A `GenerateContentResponse` with one text part; `final` adds finishReason and usage."""
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": text}]}}
    body: dict[str, Any] = {"candidates": [candidate]}
    if final is not None:
        candidate["finishReason"] = _FINISH_REASONS[final.finish_reason]
        body["usageMetadata"] = _usage(final)
    candidate["index"] = 0
    return {**body, **head}


def _model(name: str, label: str) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "sim",
        "displayName": f"{name} (SIMULATED)",
        "description": f"SIMULATED upstream '{label}' (larrylab sim), not a real model.",
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": _METHODS,
        "temperature": 1.0,
        "maxTemperature": 2.0,
        "topP": 0.95,
        "topK": 64,
    }


def gemini_model_list(sim: Simulator) -> Endpoint:
    """The `GET models` endpoint: the configured models in Gemini's shape."""
    headers = sim.headers
    body = orjson.dumps({"models": [_model(m, sim.config.label) for m in sim.config.models]})

    async def list_models(request: Request) -> Response:
        return Response(body, headers=headers, media_type=_JSON)

    return list_models


def gemini_routes(sim: Simulator) -> list[Route]:
    """The Gemini routes of one simulated upstream, except `GET /v1/models` (shared with OpenAI).

    The app answers that one with `gemini_model_list` when `speaks_gemini` says so.
    """
    headers = sim.headers
    label = sim.config.label

    async def get_model(request: Request) -> Response:
        name = request.path_params["name"]
        if ":" in name:
            return gemini_error(404, f"Method not found: GET models/{name}.", headers=headers)
        return Response(orjson.dumps(_model(name, label)), headers=headers, media_type=_JSON)

    async def call_model(request: Request) -> Response:
        model, _, method = request.path_params["name"].rpartition(":")
        try:
            if not model:
                raise BadRequest("The URL must name a model: models/{model}:{method}.")
            if method == "generateContent":
                return await _generate(sim, request, model, stream=False, sse=False)
            if method == "streamGenerateContent":
                sse = request.query_params.get("alt") == "sse"
                return await _generate(sim, request, model, stream=True, sse=sse)
            if method == "countTokens":
                return _count_tokens(await request.body(), headers)
        except BadRequest as exc:
            return gemini_error(400, exc.message, headers=headers)
        message = f"Method '{method}' is not supported by the simulator (models/{model})."
        return gemini_error(404, message, headers=headers)

    routes = [Route("/v1beta/models", gemini_model_list(sim), methods=["GET"])]
    for version in _VERSIONS:
        path = f"/{version}/models/{{name}}"
        routes.append(Route(path, get_model, methods=["GET"]))
        routes.append(Route(path, call_model, methods=["POST"]))
    return routes


def _count_tokens(raw: bytes, headers: Mapping[str, str]) -> Response:
    """`countTokens`: the engine's prompt token count of `contents` or `generateContentRequest`."""
    total = prompt_tokens(parse_count_tokens(raw))
    return Response(orjson.dumps({"totalTokens": total}), headers=headers, media_type=_JSON)


async def _generate(
    sim: Simulator, request: Request, model: str, *, stream: bool, sse: bool
) -> Response:
    """`generateContent` or `streamGenerateContent`, timed and faulted by the engine."""
    headers = sim.headers
    req = parse_generate_request(await request.body())
    reply = sim.reply(
        req.messages, schema=req.schema, json_object=req.json_object, max_tokens=req.max_tokens
    )
    plan = sim.plan(stream=stream, tokens=reply.completion_tokens)
    if await sim.wait(request.receive, plan.wait_s):
        return _abandoned(headers)
    if plan.fail:
        return _injected_error(sim, headers)
    head = {"modelVersion": model, "responseId": f"sim-{secrets.token_hex(12)}"}
    if stream:
        complete = plan.drop_after is None
        chunks = _chunks(head, plan, reply)
        if sse:
            return SimStream(
                _sse(chunks), media_type="text/event-stream", headers=headers, complete=complete
            )
        body = _json_array(chunks, complete=complete)
        return SimStream(body, media_type=_JSON, headers=headers, complete=complete)
    if await sim.wait(request.receive, plan.generation_s(reply.completion_tokens)):
        return _abandoned(headers)
    body_json = orjson.dumps(_response(head, reply.text, reply))
    return Response(body_json, headers=headers, media_type=_JSON)


def _abandoned(headers: Mapping[str, str]) -> Response:
    """The answer to a request whose wait was cut short (nobody reads it if the client left)."""
    return gemini_error(503, "The simulated upstream is shutting down.", headers=headers)


def _injected_error(sim: Simulator, headers: Mapping[str, str]) -> Response:
    status = sim.config.error_status
    if status == 429:
        message = "Resource has been exhausted (injected by the larrylab simulator)."
        return gemini_error(429, message, headers=headers)
    message = f"The simulated upstream failed on purpose (error_rate={sim.config.error_rate})."
    return gemini_error(status, message, headers=headers)


async def _chunks(
    head: Mapping[str, str], plan: Plan, reply: Reply
) -> AsyncIterator[dict[str, Any]]:
    """One response per token, the last with finishReason and usage; a dropped one stops early."""
    if plan.ttft_s > 0:
        await asyncio.sleep(plan.ttft_s)
    complete = plan.drop_after is None
    tokens = reply.tokens if complete else reply.tokens[: plan.drop_after]
    start = time.monotonic()
    for index, token in enumerate(tokens):
        if plan.interval_s:
            await pace(start, index, plan.interval_s)
        last = complete and index == len(tokens) - 1
        yield _response(head, token, reply if last else None)
    if complete and not tokens:
        yield _response(head, "", reply)


async def _sse(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"


async def _json_array(
    chunks: AsyncIterator[dict[str, Any]], *, complete: bool
) -> AsyncIterator[bytes]:
    """The responses as one JSON array, written as they come; no closing `]` when dropped."""
    separator = b"["
    async for chunk in chunks:
        yield separator + orjson.dumps(chunk)
        separator = b",\r\n"
    if complete:
        yield b"[]" if separator == b"[" else b"]"
