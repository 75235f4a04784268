"""Shared state and dependencies of the router's HTTP API."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlmodel import Session

from larrylab.config import Settings
from larrylab.requestlog import RequestJournal
from larrylab.router._breaker import CircuitBreakers
from larrylab.router._errors import ApiError
from larrylab.router._metrics import RouterMetrics
from larrylab.router._routing import RoutingCache
from larrylab.router._upstream import UpstreamClient


@dataclass
class RouterState:
    """Everything a request handler needs, created once per app in its lifespan."""

    settings: Settings
    engine: Engine
    routing: RoutingCache
    writer: RequestJournal
    client: UpstreamClient
    metrics: RouterMetrics
    breakers: CircuitBreakers


async def get_state(request: Request) -> RouterState:
    """The app's RouterState (async: FastAPI would run a sync dependency in a thread)."""
    state: RouterState = request.app.state.router
    return state


StateDep = Annotated[RouterState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    """A database session for one request."""
    with Session(state.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value, if it is one."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(token: str, keys: frozenset[str]) -> bool:
    return any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)


def client_key_error(
    settings: Settings, authorization: str, *, gemini: bool = False
) -> ApiError | None:
    """Why an `Authorization` header value is refused on `/v1/*` (no error without
    `LARRYLAB_API_KEYS`); the hint names the header a Gemini client sends if `gemini`."""
    keys = settings.client_keys
    if not keys:
        return None
    token = bearer_token(authorization)
    if token is None:
        how = "`x-goog-api-key: <key>`" if gemini else "`Authorization: Bearer <key>`"
        return ApiError(401, f"missing API key: send {how}", code="invalid_api_key")
    if not _matches(token, keys):
        return ApiError(401, "invalid API key", code="invalid_api_key")
    return None


def admin_key_error(settings: Settings, authorization: str) -> ApiError | None:
    """Why an `Authorization` header value is refused on `/admin/*` (no error without
    `LARRYLAB_ADMIN_KEY`)."""
    key = settings.admin_key
    if not key:
        return None
    token = bearer_token(authorization)
    if token is None or not _matches(token, frozenset([key])):
        return ApiError(
            401,
            "the admin API needs `Authorization: Bearer <LARRYLAB_ADMIN_KEY>`",
            code="invalid_admin_key",
        )
    return None
