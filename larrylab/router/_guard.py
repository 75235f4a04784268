"""The gate in front of every route (`RouterApp`).

Before any body is read, the key is checked from the headers (the client key on `/v1/*`, the
admin key on `/admin/*`) and a `Content-Length` over the limit is refused: `max_body_bytes`
for chat completions, `max_api_body_bytes` for everything else. A body without one (chunked)
is counted as it streams in (the chat route counts its own, `chat._read_body`). FastAPI reads a
route's body before it runs the route's dependencies, so without this an unauthenticated client
could make the router read and parse a body of any size. A refused body is not read: the
response closes the connection.

It also keeps an unexpected error from breaking a keep-alive connection: Starlette re-raises an
error after its last-resort handler sent the 500, and uvicorn then closes the connection without
saying so (the client's next request on it fails). Here an error after a complete response ends
quietly, and one before any response becomes the JSON 500.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from larrylab.config import Settings
from larrylab.router._deps import admin_key_error, client_key_error
from larrylab.router._errors import (
    GOOG_KEY_HEADER,
    ApiError,
    BodyTooLarge,
    api_error_response,
    body_too_large,
    query_key,
    speaks_gemini,
    unexpected_error_response,
)


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What the gate needs of a request's headers."""

    authorization: str
    goog_api_key: str | None  # Gemini's `x-goog-api-key` header
    content_length: int | None
    chunked: bool

    def body_exceeds(self, limit: int) -> bool:
        """Whether the body is (or may be) longer than `limit`: over it, or of unknown length."""
        if self.content_length is not None:
            return self.content_length > limit
        return self.chunked


def read_head(scope: Scope) -> RequestHead:
    """The keys, length and framing of a request, from its ASGI headers."""
    authorization, goog, length, chunked = "", None, None, False
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == GOOG_KEY_HEADER:
            goog = value.decode("latin-1")
        elif name == b"content-length" and value.isdigit():
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    return RequestHead(authorization, goog, length, chunked)


def key_error(settings: Settings, scope: Scope, head: RequestHead) -> ApiError | None:
    """Why the key is refused for the request's path: the admin key on `/admin/*`, a client key
    on `/v1/*` and `/v1beta/*` (a bearer token, or Gemini's `x-goog-api-key` or `?key=`)."""
    path: str = scope["path"]
    authorization = head.authorization
    if path == "/admin" or path.startswith("/admin/"):
        return admin_key_error(settings, authorization)
    if path in ("/v1", "/v1beta") or path.startswith(("/v1/", "/v1beta/")):
        if not authorization:
            key = head.goog_api_key if head.goog_api_key is not None else query_key(scope)
            if key is not None:
                authorization = f"Bearer {key}"
        return client_key_error(settings, authorization, gemini=speaks_gemini(scope))
    return None


def closing_if_large_body(error: ApiError, head: RequestHead, limit: int) -> ApiError:
    """`error`, answered before the body is read, closing the connection if the body may be
    larger than `limit` (a small one uvicorn skips; a large one is not worth receiving)."""
    if head.body_exceeds(limit):
        error.headers = {**error.headers, "connection": "close"}
    return error


CHAT_PATH = "/v1/chat/completions"


def model_path(path: str) -> bool:
    """Whether `path` asks a model: OpenAI's chat completions, or a Gemini model method
    (`/v1beta/models/M:generateContent`, ...). Those routes bound their bodies themselves."""
    return path == CHAT_PATH or (
        path.startswith(("/v1/models/", "/v1beta/models/")) and ":" in path
    )


def body_limit(settings: Settings, path: str) -> int:
    """The most bytes a request body to `path` may have."""
    return settings.max_body_bytes if model_path(path) else settings.max_api_body_bytes


def refusal(settings: Settings, scope: Scope, head: RequestHead) -> ApiError | None:
    """The error to answer before reading the body, if any: a refused key, then a body over the
    limit."""
    limit = body_limit(settings, scope["path"])
    error = key_error(settings, scope, head)
    if error is not None:
        return closing_if_large_body(error, head, limit)
    if head.content_length is not None and head.content_length > limit:
        return body_too_large(limit)
    return None


def bounded(receive: Receive, limit: int) -> Receive:
    """`receive`, raising BodyTooLarge (a 413) once the body passes `limit` bytes."""
    size = 0

    async def receive_bounded() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_bounded


async def serve_safely(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run `app`; an error it raises after a complete response ends here (its handler answered
    and logged it), one before any response gets the JSON 500, one mid-body goes on to uvicorn
    (only closing the connection ends a half-sent body)."""
    started = complete = False

    async def tracked_send(message: Message) -> None:
        nonlocal started, complete
        if message["type"] == "http.response.start":
            started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            complete = True
        await send(message)

    try:
        await app(scope, receive, tracked_send)
    except Exception as exc:
        if complete:
            return
        if started:
            raise
        await unexpected_error_response(Request(scope), exc)(scope, receive, send)


async def guard(
    app: ASGIApp, settings: Settings, scope: Scope, receive: Receive, send: Send
) -> None:
    """Serve an HTTP request through `app` once its key and body length pass (see the module)."""
    head = read_head(scope)
    error = refusal(settings, scope, head)
    if error is not None:
        await api_error_response(error, scope)(scope, receive, send)
        return
    if not model_path(scope["path"]):  # the model routes count their bodies as they read them
        receive = bounded(receive, settings.max_api_body_bytes)
    await serve_safely(app, scope, receive, send)
