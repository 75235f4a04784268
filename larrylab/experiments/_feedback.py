"""Feedback: ratings of requests or threads (1-5 stars, a thumb up or down, or both, with
optional named categories), one per (target, source), upserted: a new rating of the same target
by the same source updates the fields it gives and keeps the others.

Ratings that arrive while the database is down are spilled (HTTP 202) and replayed later
(`replay_feedback`): a 202 is a promise, so a rating whose request is not stored yet waits for
it (`RATING_WAIT`), and one the database refuses is quarantined rather than blocking the rest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, select, text

from larrylab.db import Feedback, RequestLog, Thread, insert_for, utcnow
from larrylab.requestlog import (
    Attribution,
    Quarantine,
    SpillDir,
    is_data_error,
    reason,
    without_nul,
)
from larrylab.rollups import Rating, apply_totals, rating_totals

log = logging.getLogger(__name__)


class NotFoundError(LookupError):
    """The request or thread a rating names does not exist."""


def _req() -> Any:
    return RequestLog.__table__.c  # type: ignore[attr-defined]


def attribute_request(engine: Engine, request_id: str) -> Attribution | None:
    """The attribution of a logged request, or None if it is not in the store."""
    c = _req()
    with engine.connect() as conn:
        row = conn.execute(
            select(c.thread_id, c.experiment, c.arm).where(c.id == without_nul(request_id))
        ).first()
    return Attribution(row[0], row[1], row[2]) if row else None


def attribute_thread(engine: Engine, thread_id: str) -> Attribution | None:
    """The attribution of a thread: the arm of its latest experiment request. A thread id is
    looked up as the store keeps it (`transcripts.without_nul`)."""
    c = _req()
    t = Thread.__table__.c  # type: ignore[attr-defined]
    thread_id = without_nul(thread_id)
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


def _target_key(target: Attribution, request_id: str | None) -> str:
    """What a rating rates: `request:<id>` or `thread:<id>`."""
    return f"request:{request_id}" if request_id else f"thread:{target.thread_id}"


def upsert_feedback(
    engine: Engine,
    *,
    target: Attribution,
    request_id: str | None,
    score: int | None,
    comment: str | None,
    source: str,
    thumb: int | None = None,
    categories: dict[str, bool] | None = None,
    at: datetime | None = None,
) -> tuple[Feedback, bool]:
    """Store a rating: a `score` of 1-5, a `thumb` (1 up, 0 down), or both, with optional
    `categories` and `comment`. A second rating of the same target by the same source updates
    the fields it gives (None: keep the stored value). Text is stored as the request log stores
    it (`transcripts.without_nul`).

    Returns the stored row and whether it replaced an earlier one.
    """
    if score is None and thumb is None:
        raise ValueError("a rating needs a score, a thumb, or both")
    rating = _Rating.of(
        target, request_id, score, comment, source, at or utcnow(), thumb, categories
    )
    with _serialized(engine, rating.key) as conn:
        return _upsert(conn, rating)


def _stored_text(text: str | None) -> str | None:
    return without_nul(text) if text else text


class _Rating(NamedTuple):
    """A rating to store, its text as the store keeps it (`of`)."""

    target: Attribution
    request_id: str | None
    score: int | None
    comment: str | None
    source: str
    at: datetime
    thumb: int | None = None
    categories: dict[str, bool] | None = None

    @classmethod
    def of(
        cls,
        target: Attribution,
        request_id: str | None,
        score: int | None,
        comment: str | None,
        source: str,
        at: datetime,
        thumb: int | None = None,
        categories: dict[str, bool] | None = None,
    ) -> _Rating:
        """A rating with `without_nul` applied to its text."""
        return cls(
            _stored_target(target),
            _stored_text(request_id),
            score,
            _stored_text(comment),
            without_nul(source),
            at,
            thumb,
            None if categories is None else {without_nul(k): v for k, v in categories.items()},
        )

    @property
    def key(self) -> str:
        """What it rates: `request:<id>` or `thread:<id>`."""
        return _target_key(self.target, self.request_id)


def _stored_target(target: Attribution) -> Attribution:
    """`target` with its text as the store keeps it."""
    return Attribution(
        without_nul(target.thread_id), _stored_text(target.experiment), _stored_text(target.arm)
    )


def categories_json(categories: dict[str, bool]) -> str:
    """Categories as the `feedback` table keeps them: JSON text, names sorted."""
    return json.dumps(categories, sort_keys=True, separators=(",", ":"))


def _upsert(conn: Connection, rating: _Rating) -> tuple[Feedback, bool]:
    """Insert or update a rating in the caller's serialized transaction, with its totals: the
    fields the rating leaves out (None) keep their stored values."""
    target, request_id, key = rating.target, rating.request_id, rating.key
    source, now = rating.source, rating.at
    table = Feedback.__table__  # type: ignore[attr-defined]
    c = table.c
    stored = conn.execute(
        select(c.score, c.thumb, c.categories, c.comment).where(c.target == key, c.source == source)
    ).first()
    old: Rating | None = (stored.score, stored.thumb) if stored is not None else None

    def kept(new: Any, column: str, default: Any = None) -> Any:
        if new is not None:
            return new
        return getattr(stored, column) if stored is not None else default

    categories = None if rating.categories is None else categories_json(rating.categories)
    changes = {
        "score": kept(rating.score, "score"),
        "thumb": kept(rating.thumb, "thumb"),
        "categories": kept(categories, "categories", "{}"),
        "comment": kept(rating.comment, "comment"),
        "updated_at": now,
    }
    values = {
        "target": key,
        "request_id": request_id,
        "thread_id": target.thread_id,
        "experiment": target.experiment,
        "arm": target.arm,
        "source": source,
        "created_at": now,
        **changes,
    }
    insert = insert_for(conn.engine)
    stmt = insert(table).values(**values)
    stmt = stmt.on_conflict_do_update(index_elements=["target", "source"], set_=changes)
    first = (
        request_id is not None
        and not conn.execute(select(c.id).where(c.target == key).limit(1)).first()
    )
    row = conn.execute(stmt.returning(*table.c)).mappings().one()
    if target.experiment and target.arm:
        apply_totals(
            conn,
            rating_totals(
                target.experiment,
                target.arm,
                old=old,
                new=(changes["score"], changes["thumb"]),
                first_for_request=first,
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


# How long a spilled rating waits for the request (or thread) it rates to be stored. The row of
# a request served during an outage reaches the store after the database is back, from this
# router's journal, another worker's, or a dead router's adopted by the next one to start.
RATING_WAIT = timedelta(days=7)

Pending = Callable[[str], "Attribution | None"]
"""The attribution of a request this router served and has not stored yet
(`RequestJournal.pending`)."""


class FeedbackReplay(NamedTuple):
    """What one replay of spilled ratings did."""

    written: int  # stored
    waiting: int  # their request or thread is not stored yet: kept for the next replay
    dropped: int  # still unknown `RATING_WAIT` after they were received
    quarantined: int  # refused by the database (or unreadable): in the quarantine file
    superseded: int  # a newer rating of the same target by the same source was stored


def replay_feedback(
    engine: Engine,
    spill: SpillDir,
    quarantine: Quarantine,
    *,
    pending: Pending | None = None,
    now: datetime | None = None,
) -> FeedbackReplay:
    """Write spilled ratings to the store, oldest first. A rating of a request or thread not
    stored yet is kept in the spill for the next replay (attributed from `pending` if this
    router served the request), and dropped only once it was received `RATING_WAIT` ago; one
    the database refuses goes to the quarantine file; an older rating never replaces a newer
    one. Raises if the database cannot be reached (the claimed files wait for the next try)."""
    paths = spill.claim("feedback")
    rows = [row for path in paths for row in SpillDir.read(path)]
    now = now or utcnow()
    parsed: list[tuple[dict[str, Any], _Rating | str]] = [(row, _parse(row)) for row in rows]
    parsed.sort(key=lambda item: item[1].at if isinstance(item[1], _Rating) else now)
    kept: list[dict[str, Any]] = []
    refused: list[tuple[dict[str, Any], str]] = []
    written = dropped = superseded = 0
    for row, rating in parsed:
        if isinstance(rating, str):  # unreadable
            refused.append((row, rating))
            continue
        try:
            outcome = _replay_rating(engine, rating, pending)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            refused.append((row, reason(exc)))
            continue
        if outcome is None and now - rating.at < RATING_WAIT:
            kept.append(row)
        elif outcome is None:
            dropped += 1
            log.warning(
                "spilled rating of %s dropped: still unknown %s after it was received",
                rating.request_id or rating.target.thread_id,
                RATING_WAIT,
            )
        elif outcome:
            written += 1
        else:
            superseded += 1
    if kept:
        spill.append("feedback", kept)
    if refused:
        path = quarantine.add("feedback", refused)
        log.error(
            "%d spilled ratings refused by the database: quarantined in %s", len(refused), path
        )
    for path in paths:
        path.unlink(missing_ok=True)
    return FeedbackReplay(written, len(kept), dropped, len(refused), superseded)


def _parse(row: dict[str, Any]) -> _Rating | str:
    """A spilled rating (its target not looked up yet), or why it cannot be read."""
    try:
        at = datetime.fromisoformat(row["received_at"])
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        thread_id = row.get("thread_id") or ""
        score, thumb, categories = row.get("score"), row.get("thumb"), row.get("categories")
        if score is None and thumb is None:
            raise ValueError("no score and no thumb")
        if categories is not None and not isinstance(categories, dict):
            raise TypeError("categories is not an object")
        return _Rating.of(
            Attribution(thread_id, None, None),
            row.get("request_id"),
            score,
            row.get("comment"),
            row["source"],
            at,
            thumb,
            categories,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return f"unreadable spilled rating: {type(exc).__name__}: {exc}"


def _replay_rating(engine: Engine, rating: _Rating, pending: Pending | None) -> bool | None:
    """Store one spilled rating: True if stored, False if a newer rating of the same target by
    the same source is stored already, None if its request or thread is not stored yet."""
    if rating.request_id:
        target = pending(rating.request_id) if pending else None
        target = target or attribute_request(engine, rating.request_id)
    else:
        target = attribute_thread(engine, rating.target.thread_id)
    if target is None:
        return None
    rating = rating._replace(target=_stored_target(target))
    c = Feedback.__table__.c  # type: ignore[attr-defined]
    with _serialized(engine, rating.key) as conn:
        newer = conn.execute(
            select(c.id)
            .where(c.target == rating.key, c.source == rating.source, c.updated_at > rating.at)
            .limit(1)
        ).first()
        if newer is not None:
            return False
        _upsert(conn, rating)
    return True
