"""`POST /v1/feedback`: ratings from Larry's learners (or any other source): 1-5 stars, a thumb
up or down, or both, with optional named categories."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from starlette.responses import Response

from larrylab.db import utcnow
from larrylab.experiments import Attribution, attribute_request, attribute_thread, upsert_feedback
from larrylab.router._deps import RouterState, StateDep
from larrylab.router._errors import ApiError, error_responses
from larrylab.router._ids import request_age_s
from larrylab.router._schemas import FeedbackIn, FeedbackOut

# A rating for a request id of the last minute that is not stored yet waits this long for it,
# plus the time by which a busy indexer may lengthen its interval (`requestlog._indexer`).
_RECENT_S = 60.0
_WAIT_FOR_OTHERS_S = 3.0

router = APIRouter(
    tags=["feedback"],
    responses=error_responses(401, 404, 422),
)


async def _find_request(state: RouterState, request_id: str) -> Attribution | None:
    if (pending := state.writer.pending(request_id)) is not None:
        return pending  # served here, not stored yet: no need to wait for it
    found = await asyncio.to_thread(attribute_request, state.engine, request_id)
    age = request_age_s(request_id)
    if found is not None or age is None or not 0 <= age < _RECENT_S:
        return found
    # Served by another worker a moment ago: its row may still wait in that worker's journal.
    settings = state.settings
    linger = max(0.0, settings.log_flush_interval_max_s - settings.log_flush_interval_s)
    deadline = time.monotonic() + _WAIT_FOR_OTHERS_S + linger
    delay = settings.log_flush_interval_s
    while found is None and time.monotonic() < deadline:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
        found = await asyncio.to_thread(attribute_request, state.engine, request_id)
    return found


async def _find_thread(state: RouterState, thread_id: str) -> Attribution | None:
    found = await asyncio.to_thread(attribute_thread, state.engine, thread_id)
    if found is None and state.writer.depth:
        await state.writer.flush()
        found = await asyncio.to_thread(attribute_thread, state.engine, thread_id)
    return found


class FeedbackAccepted(BaseModel):
    """A rating kept on local disk while the database is unreachable; written when it returns."""

    accepted: bool = True
    spilled: bool = True
    request_id: str | None
    thread_id: str | None
    score: int | None
    thumb: Literal["up", "down"] | None
    categories: dict[str, bool] | None


def thumb_text(thumb: int | None) -> Literal["up", "down"] | None:
    """A stored thumb (1 or 0) as the API shows it."""
    return None if thumb is None else ("up" if thumb else "down")


async def _spill(state: RouterState, body: FeedbackIn) -> Response:
    row = {**body.model_dump(), "received_at": utcnow().isoformat()}
    await asyncio.to_thread(state.writer.spill.append, "feedback", [row])
    out = FeedbackAccepted(
        request_id=body.request_id,
        thread_id=body.thread_id,
        score=body.score,
        thumb=thumb_text(body.thumb),
        categories=body.categories,
    )
    return JSONResponse(out.model_dump(), status_code=202)


@router.post(
    "/v1/feedback",
    response_model=FeedbackOut,
    responses={
        202: {
            "model": FeedbackAccepted,
            "description": "database unreachable: kept locally, written later",
        },
    },
    summary="Rate a request or a thread: 1-5 stars, a thumb up or down, or both",
)
async def post_feedback(body: FeedbackIn, state: StateDep) -> FeedbackOut | Response:
    """Store a rating; rating the same request (or thread) again from the same source updates
    the fields the new rating gives."""
    try:
        return await _store(state, body)
    except DBAPIError:
        return await _spill(state, body)


async def _store(state: RouterState, body: FeedbackIn) -> FeedbackOut:
    if body.request_id is not None:
        target = await _find_request(state, body.request_id)
        if target is None:
            raise ApiError(
                404, f"unknown request_id {body.request_id!r}", param="request_id", code="not_found"
            )
        if body.thread_id is not None and body.thread_id != target.thread_id:
            raise ApiError(
                422, f"request {body.request_id!r} belongs to another thread", param="thread_id"
            )
    else:
        assert body.thread_id is not None
        target = await _find_thread(state, body.thread_id)
        if target is None:
            raise ApiError(
                404, f"unknown thread_id {body.thread_id!r}", param="thread_id", code="not_found"
            )
    fb, updated = await asyncio.to_thread(
        upsert_feedback,
        state.engine,
        target=target,
        request_id=body.request_id,
        score=body.score,
        thumb=body.thumb,
        categories=body.categories,
        comment=body.comment,
        source=body.source,
    )
    assert fb.id is not None
    return FeedbackOut(
        id=fb.id,
        request_id=fb.request_id,
        thread_id=fb.thread_id,
        experiment=fb.experiment,
        arm=fb.arm,
        score=fb.score,
        thumb=thumb_text(fb.thumb),
        categories=json.loads(fb.categories),
        comment=fb.comment,
        source=fb.source,
        updated=updated,
    )
