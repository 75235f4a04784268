"""Routes that take the Request and return the Response themselves: the model routes, which
read and parse their bodies by hand (faster than FastAPI's body parameters).

`RouterApp` serves the model routes (`POST /v1/chat/completions`, `POST .../models/M:method`)
straight after the gate with `RawRoute.serve`: the same route objects FastAPI documents, without
FastAPI's middleware and request handler around them. What those layers do for other routes the
gate does for these (key, body bound, an unexpected error as the JSON 500), and errors go
through the app's own exception handlers, as in FastAPI."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from larrylab.router._errors import body_too_large


class RawRoute(APIRoute):
    """A route whose endpoint takes the Request and returns the Response itself: FastAPI's
    request handler (dependencies, body fields, response model) is skipped, its OpenAPI
    operation kept."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The endpoint itself."""
        return cast(Callable[[Request], Coroutine[Any, Any, Response]], self.endpoint)

    def match(self, scope: Scope) -> bool:
        """Whether the request is this route's (path and method); its path parameters are then
        in `scope`."""
        found, child = self.matches(scope)
        if found is not Match.FULL:
            return False
        scope.update(child)
        return True

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a request `match` accepted: the endpoint's response, or what the app's
        exception handler for its error gives (an error without one is raised to the gate)."""
        request = Request(scope, receive, send)
        try:
            response = await self.endpoint(request)
        except Exception as exc:
            handler = _handler_for(scope["app"].exception_handlers, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _handler_for(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The exception handler for `exc`: the one of its class or its nearest base class."""
    for kind in type(exc).__mro__:
        if kind in handlers:
            return handlers[kind]
    return None


async def read_body(request: Request, limit: int) -> bytes:
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
