"""Feedback: 1-5 star ratings of requests or threads, one per (target, source), upserted."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, select, text

from larrylab.platform.models import Feedback, RequestLog, Thread, utcnow
from larrylab.platform.rollup import apply_totals, rating_totals
from larrylab.platform.spill import SpillDir
from larrylab.platform.sqlutil import insert_for

log = logging.getLogger(__name__)


class NotFoundError(LookupError):
    """The request or thread a rating names does not exist."""


class Attribution(NamedTuple):
    """Where a rating belongs: its thread and the experiment arm that served it (a tuple: the
    log writers keep one per request not stored yet)."""

    thread_id: str
    experiment: str | None
    arm: str | None


def _req() -> Any:
    return RequestLog.__table__.c  # type: ignore[attr-defined]


def attribute_request(engine: Engine, request_id: str) -> Attribution | None:
    """The attribution of a logged request, or None if it is not in the store."""
    c = _req()
    with engine.connect() as conn:
        row = conn.execute(
            select(c.thread_id, c.experiment, c.arm).where(c.id == request_id)
        ).first()
    return Attribution(row[0], row[1], row[2]) if row else None


def attribute_thread(engine: Engine, thread_id: str) -> Attribution | None:
    """The attribution of a thread: the arm of its latest experiment request."""
    c = _req()
    t = Thread.__table__.c  # type: ignore[attr-defined]
    with engine.connect() as conn:
        if conn.execute(select(t.id).where(t.id == thread_id)).first() is None:
            return None
        row = conn.execute(
            select(c.experiment, c.arm)
            .where(c.thread_id == thread_id, c.experiment.is_not(None))
            .order_by(c.created_at.desc())
            .limit(1)
        ).first()
    return Attribution(thread_id, row[0] if row else None, row[1] if row else None)


def upsert_feedback(
    engine: Engine,
    *,
    target: Attribution,
    request_id: str | None,
    score: int,
    comment: str | None,
    source: str,
    at: datetime | None = None,
) -> tuple[Feedback, bool]:
    """Store a rating; a second rating of the same target by the same source replaces it.

    Returns the stored row and whether it replaced an earlier one.
    """
    key = f"request:{request_id}" if request_id else f"thread:{target.thread_id}"
    now = at or utcnow()
    values = {
        "target": key,
        "request_id": request_id,
        "thread_id": target.thread_id,
        "experiment": target.experiment,
        "arm": target.arm,
        "score": score,
        "comment": comment,
        "source": source,
        "created_at": now,
        "updated_at": now,
    }
    insert = insert_for(engine)
    table = Feedback.__table__  # type: ignore[attr-defined]
    stmt = insert(table).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["target", "source"],
        set_={"score": score, "comment": comment, "updated_at": now},
    ).returning(*table.c)
    c = table.c
    with _serialized(engine, key) as conn:
        old = conn.execute(select(c.score).where(c.target == key, c.source == source)).scalar()
        first = (
            request_id is not None
            and not conn.execute(select(c.id).where(c.target == key).limit(1)).first()
        )
        row = conn.execute(stmt).mappings().one()
        if target.experiment and target.arm:
            apply_totals(
                conn,
                rating_totals(
                    target.experiment, target.arm, old=old, new=score, first_for_request=first
                ),
            )
    fb = Feedback(**row)
    return fb, fb.created_at != fb.updated_at


@contextmanager
def _serialized(engine: Engine, key: str) -> Iterator[Connection]:
    """A transaction in which no other writer changes the ratings of `key`.

    PostgreSQL: an advisory lock on the key; SQLite: an immediate (write-locked) transaction.
    """
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
            yield conn
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def replay_feedback(engine: Engine, spill: SpillDir) -> tuple[int, int]:
    """Write spilled ratings to the store; returns (written, dropped for unknown targets)."""
    written = dropped = 0
    for path in spill.claim("feedback"):
        for row in SpillDir.read(path):
            request_id = row.get("request_id")
            if request_id:
                target = attribute_request(engine, request_id)
            else:
                target = attribute_thread(engine, row["thread_id"])
            if target is None:
                dropped += 1
                log.warning(
                    "spilled rating for unknown %s dropped", request_id or row.get("thread_id")
                )
                continue
            upsert_feedback(
                engine,
                target=target,
                request_id=request_id,
                score=row["score"],
                comment=row.get("comment"),
                source=row["source"],
                at=datetime.fromisoformat(row["received_at"]),
            )
            written += 1
        path.unlink(missing_ok=True)
    return written, dropped
