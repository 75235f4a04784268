"""The router's FastAPI app: lifespan (store, routing cache, log writer, HTTP client) and routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from sqlmodel import Session
from starlette.types import Receive, Scope, Send

from larrylab import __version__
from larrylab.config import Settings
from larrylab.db import make_engine
from larrylab.experiments import replay_feedback
from larrylab.release import advance_rollouts, policy_from_settings
from larrylab.requestlog import RequestJournal
from larrylab.router import _admin as admin
from larrylab.router import _admin_registry as admin_registry
from larrylab.router import _chat as chat
from larrylab.router import _feedback as feedback
from larrylab.router import _gemini as gemini
from larrylab.router import _health as health
from larrylab.router._breaker import CircuitBreakers
from larrylab.router._deps import RouterState
from larrylab.router._errors import install_error_handlers
from larrylab.router._guard import guard
from larrylab.router._metrics import RouterMetrics
from larrylab.router._raw import RawRoute
from larrylab.router._routing import RoutingCache
from larrylab.router._schemas import ChatCompletionRequest
from larrylab.router._upstream import new_client

log = logging.getLogger(__name__)


async def _rollout_loop(state: RouterState) -> None:
    """Ramp or roll back active canaries (row-locked, so several processes may run this)."""
    policy = policy_from_settings(state.settings)

    def tick() -> None:
        with Session(state.engine) as session:
            for check in advance_rollouts(session=session, policy=policy):
                if check.action != "hold":
                    log.warning(
                        "rollout of %s on %s: %s (%s)",
                        check.rollout.candidate,
                        check.rollout.route,
                        check.action,
                        "; ".join(check.reasons),
                    )

    while True:
        await asyncio.sleep(state.settings.rollout_interval_s)
        try:
            await asyncio.to_thread(tick)
            await state.routing.reload()
        except Exception as exc:  # the database may be down; try again next interval
            log.warning("checking rollouts failed, will retry: %s", exc)


async def _replay_loop(state: RouterState) -> None:
    """Replay spilled ratings whenever the database takes them again. A rating whose request
    is not stored yet (another worker's journal, say) stays in the spill for the next round
    (`feedback.replay_feedback`)."""
    writer = state.writer
    said: tuple[int, ...] = ()
    while True:
        try:
            if writer.spill.has("feedback"):
                done = await asyncio.to_thread(
                    replay_feedback,
                    state.engine,
                    writer.spill,
                    writer.quarantine,
                    pending=writer.pending,
                )
                if any(done) and tuple(done) != said:  # not the same waiting ones every round
                    log.warning(
                        "replayed %d spilled ratings; %d wait for their request or thread "
                        "(kept for the next replay), %d superseded by a newer rating, %d "
                        "quarantined, %d dropped (their request still unknown long after)",
                        done.written,
                        done.waiting,
                        done.superseded,
                        done.quarantined,
                        done.dropped,
                    )
                said = tuple(done)
        except Exception as exc:  # still unreachable: keep the files, try again later
            log.warning("replaying spilled rows failed, will retry: %s", exc)
        await asyncio.sleep(state.settings.replay_interval_s)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the chat completion body's schema, which the chat route (parsing
    its body by hand) refers to in its `openapi_extra`."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        body = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(body.pop("$defs", {}))
        components["ChatCompletionRequest"] = body
        _document_gate_errors(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def _document_gate_errors(schema: dict[str, Any]) -> None:
    """Add the errors every keyed operation may give besides its own: a missing or wrong key
    (`guard.py` checks it), a body over the limit, a database that cannot be reached."""
    errors = {
        "401": "authentication_error: a missing or wrong key",
        "413": "invalid_request_error: the request body is over the limit",
        "503": "the database is unreachable; try again after `Retry-After` seconds",
    }
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, operations in schema["paths"].items():
        if not path.startswith(("/admin/", "/v1/", "/v1beta/")):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in errors.items():
                if status != "413" or "requestBody" in operation:
                    responses.setdefault(status, {"description": description, "content": body})


class RouterApp(FastAPI):
    """FastAPI, with every HTTP request through the gate of `guard.py` first (key before body,
    bounded body, a JSON 500 that keeps the connection). The model routes are served right
    after the gate (`RawRoute.serve`); every other request goes through FastAPI."""

    def __init__(
        self, settings: Settings, model_routes: Sequence[RawRoute] = (), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.model_routes = tuple(model_routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve HTTP requests through the gate; other scopes (lifespan) straight."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        for route in self.model_routes:
            if route.match(scope):
                scope["app"] = self
                await guard(route.serve, self.settings, scope, receive, send)
                return
        await guard(super().__call__, self.settings, scope, receive, send)


def _request_journal(settings: Settings) -> RequestJournal:
    """The request log: a journal stored by the indexer, a child process of lower priority."""
    return RequestJournal(
        settings.database_url,
        journal_dir=Path(settings.journal_dir),
        spill_dir=Path(settings.spill_dir),
        batch_size=settings.log_batch_size,
        flush_interval_s=settings.log_flush_interval_s,
        flush_interval_max_s=settings.log_flush_interval_max_s,
        max_rows=settings.log_journal_max_rows,
        nice=settings.log_indexer_nice,
    )


def _freeze_startup_heap() -> None:
    """Leave the objects made at startup (modules, classes, the app) out of later garbage
    collections, once per process. A full collection of the router's heap took about 90 ms
    (a pause every request waits out) and ran every few seconds under load; with the startup
    objects frozen it walks only what serving made since (`bench/results/router_overhead.md`).
    """
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the router app; the store must be migrated (`larrylab.release._prepare`)."""
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, pool_size=10)
        writer = _request_journal(settings)
        routing = RoutingCache(engine, settings.routing_refresh_s)
        client = new_client()
        metrics = RouterMetrics()
        breakers = CircuitBreakers(
            failure_threshold=settings.breaker_failures,
            cooldown_s=settings.breaker_cooldown_s,
            on_change=metrics.breaker_changed,
        )
        app.state.router = RouterState(settings, engine, routing, writer, client, metrics, breakers)
        await writer.start()
        refresher = asyncio.create_task(routing.run(), name="larrylab-routing-refresh")
        replayer = asyncio.create_task(_replay_loop(app.state.router), name="larrylab-spill-replay")
        tasks = [refresher, replayer]
        if settings.rollout_interval_s > 0:
            tasks.append(
                asyncio.create_task(_rollout_loop(app.state.router), name="larrylab-rollouts")
            )
        _freeze_startup_heap()
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await writer.close()
            await client.close()
            engine.dispose()
            log.info("router stopped; every request row written")

    model_endpoints = (chat.chat_completions, gemini.model_call)
    model_routes = [
        route
        for route in (*chat.router.routes, *gemini.router.routes)
        if isinstance(route, RawRoute) and route.endpoint in model_endpoints
    ]
    app = RouterApp(
        settings,
        model_routes,
        title="larrylab router",
        version=__version__,
        description="OpenAI-compatible router splitting threads between models by experiment.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.include_router(chat.router)
    app.include_router(gemini.router)
    app.include_router(feedback.router)
    app.include_router(admin.router)
    app.include_router(admin_registry.router)
    app.include_router(health.router)
    return app
