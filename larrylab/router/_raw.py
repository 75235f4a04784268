"""Routes that take the Request and return the Response themselves: the model routes, which
read and parse their bodies by hand (faster than FastAPI's body parameters)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from larrylab.router._errors import body_too_large


class RawRoute(APIRoute):
    """A route whose endpoint takes the Request and returns the Response itself: FastAPI's
    request handler (dependencies, body fields, response model) is skipped, its OpenAPI
    operation kept."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The endpoint itself."""
        return cast(Callable[[Request], Coroutine[Any, Any, Response]], self.endpoint)


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
