"""Reading Larry's history from Chainlit's SQLAlchemy data layer (tables `threads`, `steps`,
`feedbacks`, as `chainlit.data.sql_alchemy` writes them), with SQLAlchemy Core, synchronously.

Only the conversation is read: steps of type `user_message` and `assistant_message` (their
text is `output`), and thumbs (`feedbacks`). Ids are never bound as query parameters, so the
same queries work whether the database keeps them as UUIDs (PostgreSQL) or text (SQLite).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, String, and_, cast, column, create_engine, func, inspect, or_, select
from sqlalchemy import table as sql_table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

USER_MESSAGE = "user_message"
ASSISTANT_MESSAGE = "assistant_message"
MESSAGE_TYPES = (USER_MESSAGE, ASSISTANT_MESSAGE)
STREAM_ROWS = 2000

THREADS = sql_table(
    "threads", column("id"), column("createdAt"), column("metadata"), column("tags")
)
STEPS = sql_table(
    "steps",
    column("id"),
    column("type"),
    column("threadId"),
    column("output"),
    column("createdAt"),
    column("start"),
)
FEEDBACKS = sql_table(
    "feedbacks",
    column("id"),
    column("forId"),
    column("threadId"),
    column("value"),
    column("comment"),
)
NEEDED: dict[str, tuple[str, ...]] = {
    "threads": ("id", "createdAt", "metadata"),
    "steps": ("id", "type", "threadId", "output", "createdAt", "start"),
    "feedbacks": ("id", "forId", "threadId", "value", "comment"),
}


class ChainlitSourceError(RuntimeError):
    """The Chainlit database cannot be reached (`code` 1) or is not one (`code` 2)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ChainlitStep:
    """One user or assistant message of a Chainlit thread."""

    id: str
    type: str
    output: str
    at: datetime | None


@dataclass
class ChainlitThread:
    """A Chainlit thread: its bot (chat profile), when it began and its messages as stored."""

    id: str
    created_at: datetime | None
    bot: str | None
    steps: list[ChainlitStep] = field(default_factory=list)


@dataclass(frozen=True)
class ChainlitFeedback:
    """A thumb (`value` 1 up, 0 down) on one Chainlit step."""

    id: str
    for_id: str
    thread_id: str
    value: Any
    comment: str | None


def parse_time(value: Any) -> datetime | None:
    """A Chainlit timestamp (ISO 8601 text, `Z` or an offset, or none: UTC) as an aware UTC
    datetime; None if there is none or it cannot be read."""
    if isinstance(value, datetime):
        at = value
    elif isinstance(value, str) and value.strip():
        try:
            at = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def source_url(url: str) -> str:
    """The URL larrylab reads a Chainlit database with: PostgreSQL through psycopg (a URL for
    asyncpg, as Chainlit's own configuration has it, is accepted) or SQLite."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ChainlitSourceError(f"--from {url!r} is not a database URL", code=2) from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite")
    else:
        raise ChainlitSourceError(
            f"--from: unsupported database {backend!r}: Chainlit's data layer on PostgreSQL or "
            "SQLite is what can be imported",
            code=2,
        )
    return parsed.render_as_string(hide_password=False)


def _shown(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def open_source(url: str) -> Engine:
    """An engine on the Chainlit database at `url`, checked: reachable, and holding Chainlit's
    tables with the columns read here. Raises ChainlitSourceError otherwise."""
    engine = create_engine(source_url(url))
    try:
        with engine.connect() as conn:
            found = inspect(conn)
            tables = set(found.get_table_names())
            missing = [name for name in NEEDED if name not in tables]
            if missing:
                raise ChainlitSourceError(
                    f"{_shown(engine)} has no Chainlit tables ({', '.join(missing)} missing): "
                    "is it the database of Chainlit's SQLAlchemy data layer?",
                    code=2,
                )
            for name, columns in NEEDED.items():
                have = {c["name"] for c in found.get_columns(name)}
                lacking = [c for c in columns if c not in have]
                if lacking:
                    raise ChainlitSourceError(
                        f"{_shown(engine)}: table {name} lacks Chainlit's columns "
                        f"{', '.join(lacking)}",
                        code=2,
                    )
    except SQLAlchemyError as exc:
        engine.dispose()
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ChainlitSourceError(
            f"cannot read the Chainlit database {_shown(engine)}: {first[0] if first else exc}",
            code=1,
        ) from exc
    except ChainlitSourceError:
        engine.dispose()
        raise
    return engine


def _bot(metadata: Any) -> str | None:
    """The chat profile a thread's metadata names (JSON object, or its text)."""
    if isinstance(metadata, str | bytes):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return None
    if not isinstance(metadata, dict):
        return None
    bot = metadata.get("chat_profile")
    return bot.strip() if isinstance(bot, str) and bot.strip() else None


def _since_filter(since: datetime | None) -> Any:
    """A condition on `threads` that keeps at least the threads created, or with a step, at or
    after `since`: text timestamps compared from the day before (the exact test is done on
    parsed times), so that differently written timestamps are never missed."""
    if since is None:
        return None
    day = (since.astimezone(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    t, s = THREADS.c, STEPS.c
    stepped = select(s.threadId).where(cast(s.createdAt, String) >= day)
    return or_(cast(t.createdAt, String) >= day, t.id.in_(stepped))


def count_threads(engine: Engine, since: datetime | None) -> int:
    """How many threads a read will look at (an upper bound with `since`)."""
    query = select(func.count()).select_from(THREADS)
    condition = _since_filter(since)
    if condition is not None:
        query = query.where(condition)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def _threads(engine: Engine, since: datetime | None) -> dict[str, tuple[datetime | None, Any]]:
    t = THREADS.c
    query = select(t.id, t.createdAt, t.metadata)
    condition = _since_filter(since)
    if condition is not None:
        query = query.where(condition)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(query)
        return {str(row[0]): (parse_time(row[1]), _bot(row[2])) for row in result}


def _is_recent(thread: ChainlitThread, since: datetime | None) -> bool:
    if since is None:
        return True
    times = [thread.created_at, *(s.at for s in thread.steps)]
    return any(at is not None and at >= since for at in times)


def read_threads(engine: Engine, since: datetime | None = None) -> Iterator[ChainlitThread]:
    """Each thread (created, or with a message, at or after `since` if given) with its user and
    assistant messages in the order they were written; threads without any come last."""
    threads = _threads(engine, since)
    s = STEPS.c
    query = select(s.threadId, s.id, s.type, s.output, s.createdAt, s.start).where(
        s.type.in_(MESSAGE_TYPES)
    )
    condition = _since_filter(since)
    if condition is not None:
        query = query.where(s.threadId.in_(select(THREADS.c.id).where(condition)))
    query = query.order_by(s.threadId, s.createdAt, s.start)
    seen: set[str] = set()
    current: ChainlitThread | None = None
    with engine.connect() as conn:
        rows = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(query)
        for thread_id, step_id, kind, output, created, start in rows:
            tid = str(thread_id)
            if current is None or current.id != tid:
                if current is not None and _is_recent(current, since):
                    yield _ordered(current)
                info = threads.get(tid)
                if info is None:  # a step of a thread outside the selection
                    current = None
                    continue
                seen.add(tid)
                current = ChainlitThread(tid, info[0], info[1])
            at = parse_time(created) or parse_time(start)
            current.steps.append(ChainlitStep(str(step_id), kind, output or "", at))
        if current is not None and _is_recent(current, since):
            yield _ordered(current)
    for tid, (created_at, bot) in threads.items():
        if tid not in seen:
            thread = ChainlitThread(tid, created_at, bot)
            if _is_recent(thread, since):
                yield thread


def _ordered(thread: ChainlitThread) -> ChainlitThread:
    """`thread` with its steps in time order (steps without a time keep their place after the
    timed ones before them)."""
    last = datetime.min.replace(tzinfo=UTC)
    keyed = []
    for i, step in enumerate(thread.steps):
        last = step.at or last
        keyed.append((last, i, step))
    keyed.sort(key=lambda item: (item[0], item[1]))
    thread.steps = [step for _, _, step in keyed]
    return thread


def read_feedbacks(engine: Engine) -> Iterator[ChainlitFeedback]:
    """Every thumb of the database (`feedbacks`), ordered by the step it rates."""
    f = FEEDBACKS.c
    query = (
        select(f.id, f.forId, f.threadId, f.value, f.comment)
        .where(and_(f.forId.is_not(None), f.threadId.is_not(None)))
        .order_by(f.forId, f.id)
    )
    with engine.connect() as conn:
        rows = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(query)
        for fid, for_id, thread_id, value, comment in rows:
            yield ChainlitFeedback(str(fid), str(for_id), str(thread_id), value, comment)
