"""`GET /healthz` and `GET /metrics`."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import Response

from larrylab.router._deps import StateDep
from larrylab.router._errors import error_response

router = APIRouter(tags=["health"])


def _ping(state: StateDep) -> None:
    with state.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@router.get("/healthz", responses={503: {"description": "the database is unreachable"}})
async def healthz(state: StateDep) -> Any:
    """Liveness and readiness: the database answers and the log writer keeps up. HTTP 200
    while the database answers; `status` is `degraded` (still 200) while the quarantine folder
    holds rows the database refused, `ok` otherwise; `log_rows_quarantined` counts the rows
    this router quarantined since it started."""
    try:
        await asyncio.to_thread(_ping, state)
    except Exception as exc:
        return error_response(503, f"database unreachable: {type(exc).__name__}")
    writer = state.writer
    degraded = await asyncio.to_thread(writer.quarantine.has_rows)
    return {
        "status": "degraded" if degraded else "ok",
        "routes": len(state.routing.table.names()),
        "log_queue_depth": writer.depth,
        "log_rows_quarantined": writer.quarantined,
    }


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus metrics."""
    writer = state.writer
    state.metrics.log_writer_state(writer.depth, writer.written, writer.quarantined)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
