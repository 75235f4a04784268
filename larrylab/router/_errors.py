"""Errors as JSON bodies in the client's protocol: OpenAI's `{"error": {"message", "type",
"param", "code"}}`, or Gemini's `{"error": {"code", "message", "status"}}` for a Gemini client
(`speaks_gemini`: a path of Gemini's API, or the model list asked with a Gemini key)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from larrylab.router._gemini_wire import gemini_error

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}

# How long a client should wait before trying again while the database is unreachable.
DATABASE_RETRY_AFTER_S = 5

# Errors of a database that cannot be reached or cannot serve now (connection refused or lost,
# pool exhausted, locked, ...), raised by the driver or wrapped by SQLAlchemy: a 503, not a 500.
_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlite3.OperationalError,
)
# The database refused a value (a NUL character in PostgreSQL text, a number out of range):
# the request's fault, a 422.
_REFUSED_VALUE = (sa_exc.DataError, psycopg.DataError)
# What the handlers below take before FastAPI's catch-all: these never reach its re-raise.
DATABASE_ERRORS = (sa_exc.SQLAlchemyError, psycopg.Error, sqlite3.Error)


class ErrorDetail(BaseModel):
    """What went wrong, in OpenAI's error shape."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error response: `{"error": {...}}`."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses."""
    return {
        s: {"model": ErrorBody, "description": _TYPES.get(s, "upstream or server error")}
        for s in statuses
    }


class ApiError(Exception):
    """An error the client should see, with its HTTP status and a clear message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The JSON body for an error."""
    etype = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": etype, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    gemini: bool = False,
) -> Response:
    """A JSON error response (in Gemini's shape if `gemini`)."""
    if gemini:
        return gemini_error_response(status, message, headers)
    body = orjson.dumps(error_body(status, message, param=param, code=code))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def gemini_error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """A JSON error response in Gemini's shape."""
    body = orjson.dumps(gemini_error(status, message))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


GOOG_KEY_HEADER = b"x-goog-api-key"


def query_key(scope: Scope) -> str | None:
    """The `key` query parameter (how a Gemini client may send its key), if any."""
    query: bytes = scope.get("query_string", b"")
    if b"key=" in query:
        for pair in query.split(b"&"):
            name, _, value = pair.partition(b"=")
            if name == b"key":
                return unquote_to_bytes(value).decode("latin-1")
    return None


def goog_key(scope: Scope) -> str | None:
    """A Gemini client's key: the `x-goog-api-key` header, else the `key` query parameter."""
    for name, value in scope["headers"]:
        if name == GOOG_KEY_HEADER:
            return str(value.decode("latin-1"))
    return query_key(scope)


def speaks_gemini(scope: Scope) -> bool:
    """Whether the request is a Gemini client's: a path of Gemini's API (`/v1beta/...`,
    `POST /v1/models/M:method`), or a model or the model list asked with a Gemini key."""
    path: str = scope["path"]
    if path == "/v1beta" or path.startswith("/v1beta/"):
        return True
    if path.startswith("/v1/models/") and (":" in path or scope.get("method") == "POST"):
        return True
    return path.startswith("/v1/models") and goog_key(scope) is not None


class BodyTooLarge(StarletteHTTPException):
    """A request body over its limit. An HTTPException, so FastAPI passes it through when it is
    raised while FastAPI reads the body; the connection closes (the rest is not read)."""

    code = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(413, body_limit_message(limit), headers={"connection": "close"})


def body_limit_message(limit: int) -> str:
    """What a client is told when its body passes `limit` bytes."""
    return f"request body is larger than the limit of {limit} bytes"


def body_too_large(limit: int) -> ApiError:
    """The 413 for a body over `limit` bytes, closing the connection (the rest is not read)."""
    return ApiError(
        413,
        body_limit_message(limit),
        code="body_too_large",
        headers={"connection": "close"},
    )


def _wrapped(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and every error it wraps: its cause, its context, a group's members."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        err = todo.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        if isinstance(err, BaseExceptionGroup):
            todo.extend(err.exceptions)
        if err.__cause__ is not None:
            todo.append(err.__cause__)
        if err.__context__ is not None and not err.__suppress_context__:
            todo.append(err.__context__)


def _unreachable(err: BaseException) -> bool:
    if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
        return True
    return isinstance(err, _UNAVAILABLE)


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc`, or an error it wraps, says the database is unreachable or cannot serve
    now."""
    return any(_unreachable(err) for err in _wrapped(exc))


def refused_value(exc: BaseException) -> BaseException | None:
    """The database's refusal of a value the request gave (a NUL character in PostgreSQL
    text, a number out of range), if `exc` is or wraps one."""
    return next((err for err in _wrapped(exc) if isinstance(err, _REFUSED_VALUE)), None)


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message, without SQLAlchemy's statement and parameters."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def database_unavailable_response(exc: BaseException) -> Response:
    """A 503 with `Retry-After` for a database that cannot be reached now."""
    return error_response(
        503,
        f"the database is unreachable ({type(exc).__name__}); "
        f"try again in {DATABASE_RETRY_AFTER_S} seconds",
        code="database_unavailable",
        headers={"retry-after": str(DATABASE_RETRY_AFTER_S)},
    )


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def api_error_response(exc: ApiError, scope: Scope | None = None) -> Response:
    """The response for an ApiError, in the protocol of the request of `scope`."""
    gemini = scope is not None and speaks_gemini(scope)
    return error_response(
        exc.status, exc.message, param=exc.param, code=exc.code, headers=exc.headers, gemini=gemini
    )


def unexpected_error_response(request: Request, exc: Exception) -> Response:
    """A 503 for a database that cannot be reached now (logged in one line); any other error
    is logged with its traceback and the client gets a 500 without one."""
    where = f"{request.method} {request.url.path}"
    gemini = speaks_gemini(request.scope)
    if database_unavailable(exc):
        log.warning("database unreachable on %s: %s", where, _first_line(exc))
        return database_unavailable_response(exc)
    if (refusal := refused_value(exc)) is not None:
        log.warning("the database refused a value of %s: %s", where, _first_line(refusal))
        message = f"a value of this request cannot be stored: {_first_line(refusal)}"
        return error_response(422, message, code="invalid_value", gemini=gemini)
    log.exception("unexpected error on %s", where, exc_info=exc)
    message = f"internal error ({type(exc).__name__}); see the server log"
    return error_response(500, message, gemini=gemini)


_NOT_JSON = "body: request body is not valid JSON (UTF-8)"


def _allowed_methods(request: Request) -> str:
    """Every method the request's path takes: Starlette's 405 names only those of the first
    route on the path (`GET` where `GET` and `POST` are two routes)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to a clear JSON error; no tracebacks reach clients."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return api_error_response(exc, request.scope)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = _loc(tuple(first.get("loc", ())))
        msg = str(first.get("msg", "invalid value"))
        if first.get("type") == "json_invalid":
            return error_response(422, _NOT_JSON, param="body", code="invalid_value")
        return error_response(422, f"{where}: {msg}", param=where, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI's 400 for non-UTF-8 bytes
            return error_response(422, _NOT_JSON, param="body", code="invalid_value")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            kept = {k: v for k, v in (headers or {}).items() if k.lower() != "allow"}
            headers = {**kept, "allow": _allowed_methods(request)}
        return error_response(
            exc.status_code,
            str(exc.detail),
            code=getattr(exc, "code", None),
            headers=headers,
            gemini=speaks_gemini(request.scope),
        )

    async def _unexpected(request: Request, exc: Exception) -> Response:
        return unexpected_error_response(request, exc)

    for kind in DATABASE_ERRORS:  # answered here; other errors go through Starlette's last resort
        app.add_exception_handler(kind, _unexpected)
    app.add_exception_handler(Exception, _unexpected)
