"""The store's side of an import: what was imported before (the `imported` table), and writing
threads, transcript messages, ratings and their lineage in one transaction per batch."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from larrylab.db import Feedback, Imported, Message, Thread, insert_for

SOURCE = "chainlit"
THREAD, MESSAGE, RATING = "thread", "message", "rating"
IN_CHUNK = 500  # ids per IN (...) list


def _c(model: Any) -> Any:
    return model.__table__.c


def _table(model: Any) -> Any:
    return model.__table__


def _chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def store_thread_id(chainlit_thread_id: str) -> str:
    """The larrylab id of an imported Chainlit thread."""
    return f"{SOURCE}:{chainlit_thread_id}"


@dataclass
class KnownThread:
    """What an earlier import stored of one thread."""

    bot: str | None = None
    category: str | None = None
    steps: dict[str, str | None] = field(default_factory=dict)  # step id -> message id
    stored: bool = False  # whether its `thread` lineage row exists


def known_threads(conn: Connection, thread_ids: Sequence[str]) -> dict[str, KnownThread]:
    """The earlier imports of these larrylab threads: their bot and category, and the message
    each imported step became."""
    i = _c(Imported)
    out: dict[str, KnownThread] = {}
    for chunk in _chunks(thread_ids):
        # By thread id alone, so that the thread id index is the one used (source and kind
        # would make SQLite walk the primary key over every imported message instead).
        rows = conn.execute(
            select(
                i.source, i.kind, i.source_id, i.thread_id, i.message_id, i.bot, i.category
            ).where(i.thread_id.in_(chunk))
        ).all()
        for source, kind, source_id, thread_id, message_id, bot, category in rows:
            if source != SOURCE or kind == RATING:
                continue
            known = out.setdefault(thread_id, KnownThread())
            if kind == THREAD:
                known.bot, known.category, known.stored = bot, category, True
            else:
                known.steps[source_id] = message_id
    return out


def _imported_ids(conn: Connection, kind: str, source_ids: Sequence[str]) -> set[str]:
    """Which of these Chainlit ids of one `kind` were imported before."""
    i = _c(Imported)
    found: set[str] = set()
    for chunk in _chunks(source_ids):
        query = select(i.source_id).where(
            i.source == SOURCE, i.kind == kind, i.source_id.in_(chunk)
        )
        found.update(conn.execute(query).scalars())
    return found


def known_threads_by_source(conn: Connection, chainlit_ids: Sequence[str]) -> set[str]:
    """Which of these Chainlit threads were imported (their Chainlit ids)."""
    return _imported_ids(conn, THREAD, chainlit_ids)


@dataclass(frozen=True)
class Target:
    """An imported message a rating can target."""

    thread_id: str
    message_id: str
    role: str


def message_targets(conn: Connection, step_ids: Sequence[str]) -> dict[str, Target]:
    """The imported messages these Chainlit steps became, with their role."""
    i, m = _c(Imported), _c(Message)
    out: dict[str, Target] = {}
    for chunk in _chunks(step_ids):
        rows = conn.execute(
            select(i.source_id, i.thread_id, i.message_id, m.role)
            .select_from(_table(Imported))
            .join(_table(Message), (m.thread_id == i.thread_id) & (m.id == i.message_id))
            .where(i.source == SOURCE, i.kind == MESSAGE, i.source_id.in_(chunk))
        ).all()
        out.update({row[0]: Target(row[1], row[2], row[3]) for row in rows})
    return out


def imported_ratings(conn: Connection, source_ids: Sequence[str]) -> set[str]:
    """Which of these ratings (their `imported` source ids) were imported before."""
    return _imported_ids(conn, RATING, source_ids)


@dataclass
class StoredRating:
    """A rating's fields as the `feedback` table holds them."""

    score: int | None = None
    thumb: int | None = None
    categories: str = "{}"
    comment: str | None = None


def stored_ratings(
    conn: Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], StoredRating]:
    """The stored ratings of these (target, source) pairs."""
    f = _c(Feedback)
    out: dict[tuple[str, str], StoredRating] = {}
    sources = sorted({source for _, source in keys})
    targets = sorted({target for target, _ in keys})
    for chunk in _chunks(targets):
        rows = conn.execute(
            select(f.target, f.source, f.score, f.thumb, f.categories, f.comment).where(
                f.target.in_(chunk), f.source.in_(sources)
            )
        ).all()
        for target, source, score, thumb, categories, comment in rows:
            out[(target, source)] = StoredRating(score, thumb, categories, comment)
    return out


def categories_json(categories: dict[str, bool]) -> str:
    """Categories as the `feedback` table keeps them: JSON text, names sorted."""
    return json.dumps(categories, sort_keys=True, separators=(",", ":"))


@dataclass
class Statistics:
    """Keeps PostgreSQL's planner statistics of the tables an import fills up to date: without
    them a growing table's lookups by id turn into scans. `ANALYZE` runs each time the rows
    written since the last one exceed those written before it (so a few times in all)."""

    written: int = 0
    analyzed_at: int = 0

    def wrote(self, conn: Connection, rows: int) -> None:
        """Count `rows` written in `conn`'s transaction; analyze when they have doubled."""
        self.written += rows
        if conn.engine.dialect.name != "postgresql":
            return
        if self.written >= max(2 * self.analyzed_at, 1000):
            conn.exec_driver_sql("ANALYZE imported, message, feedback, thread")
            self.analyzed_at = self.written


def write_threads(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert `thread` rows; a known thread gets its later `last_seen_at`."""
    if not rows:
        return
    insert = insert_for(conn.engine)
    stmt = insert(_table(Thread))
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"], set_={"last_seen_at": stmt.excluded.last_seen_at}
    )
    conn.execute(stmt, rows)


def write_messages(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert transcript `message` rows; a row already stored stays as it is (same id, same
    content)."""
    if not rows:
        return
    insert = insert_for(conn.engine)
    stmt = insert(_table(Message)).on_conflict_do_nothing(index_elements=["thread_id", "id"])
    conn.execute(stmt, rows)


def write_lineage(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert or refresh `imported` rows (what a source id became, its bot and category); the
    first import's time stays."""
    if not rows:
        return
    insert = insert_for(conn.engine)
    stmt = insert(_table(Imported))
    stmt = stmt.on_conflict_do_update(
        index_elements=["source", "kind", "source_id"],
        set_={name: stmt.excluded[name] for name in ("thread_id", "message_id", "bot", "category")},
    )
    conn.execute(stmt, rows)


def write_ratings(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert or replace `feedback` rows (one per target and source), whole: the caller has
    merged them with what was stored."""
    if not rows:
        return
    insert = insert_for(conn.engine)
    stmt = insert(_table(Feedback))
    changed = ("thread_id", "score", "thumb", "categories", "comment", "updated_at")
    stmt = stmt.on_conflict_do_update(
        index_elements=["target", "source"], set_={name: stmt.excluded[name] for name in changed}
    )
    conn.execute(stmt, rows)


def feedback_row(
    target: Target, source: str, rating: StoredRating, at: datetime, now: datetime
) -> dict[str, Any]:
    """A `feedback` row rating an imported message."""
    return {
        "target": f"message:{target.message_id}",
        "request_id": None,
        "thread_id": target.thread_id,
        "experiment": None,
        "arm": None,
        "score": rating.score,
        "thumb": rating.thumb,
        "categories": rating.categories,
        "comment": rating.comment,
        "source": source,
        "created_at": at,
        "updated_at": now,
    }
