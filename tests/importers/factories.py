"""Helpers of the importer tests: Chainlit's schema, a writer of Chainlit rows by SQL (the rows
its SQLAlchemy data layer writes), Larry's rating records, and the `larrylab` command."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from click.testing import Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from larrylab.cli import app

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

# Chainlit's documented schema for its SQLAlchemy data layer
# (https://docs.chainlit.io/data-layers/sqlalchemy).
POSTGRES_SCHEMA = (
    'CREATE TABLE users ("id" UUID PRIMARY KEY, "identifier" TEXT NOT NULL UNIQUE, '
    '"metadata" JSONB NOT NULL, "createdAt" TEXT)',
    'CREATE TABLE IF NOT EXISTS threads ("id" UUID PRIMARY KEY, "createdAt" TEXT, "name" TEXT, '
    '"userId" UUID, "userIdentifier" TEXT, "tags" TEXT[], "metadata" JSONB, '
    'FOREIGN KEY ("userId") REFERENCES users("id") ON DELETE CASCADE)',
    'CREATE TABLE IF NOT EXISTS steps ("id" UUID PRIMARY KEY, "name" TEXT NOT NULL, '
    '"type" TEXT NOT NULL, "threadId" UUID NOT NULL, "parentId" UUID, '
    '"streaming" BOOLEAN NOT NULL, "waitForAnswer" BOOLEAN, "isError" BOOLEAN, '
    '"metadata" JSONB, "tags" TEXT[], "input" TEXT, "output" TEXT, "createdAt" TEXT, '
    '"command" TEXT, "start" TEXT, "end" TEXT, "generation" JSONB, "showInput" TEXT, '
    '"language" TEXT, "indent" INT, "defaultOpen" BOOLEAN, "modes" JSONB, '
    'FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE)',
    'CREATE TABLE IF NOT EXISTS elements ("id" UUID PRIMARY KEY, "threadId" UUID, '
    '"type" TEXT, "url" TEXT, "chainlitKey" TEXT, "name" TEXT NOT NULL, "display" TEXT, '
    '"objectKey" TEXT, "size" TEXT, "page" INT, "language" TEXT, "forId" UUID, "mime" TEXT, '
    '"props" JSONB, "autoPlay" BOOLEAN, "playerConfig" JSONB, '
    'FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE)',
    'CREATE TABLE IF NOT EXISTS feedbacks ("id" UUID PRIMARY KEY, "forId" UUID NOT NULL, '
    '"threadId" UUID NOT NULL, "value" INT NOT NULL, "comment" TEXT, '
    'FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE)',
)


def sqlite_schema() -> tuple[str, ...]:
    """The same tables in SQLite's types (as Chainlit's data layer uses them on SQLite)."""
    out = []
    for statement in POSTGRES_SCHEMA:
        for pg, lite in (("UUID", "TEXT"), ("JSONB", "TEXT"), ("TEXT[]", "TEXT")):
            statement = statement.replace(f" {pg}", f" {lite}")
        out.append(statement)
    return tuple(out)


def create_chainlit_schema(url: str) -> None:
    """Chainlit's tables in the empty database at `url` (PostgreSQL or SQLite)."""
    parsed = make_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if not sqlite:
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed)
    with engine.begin() as conn:
        for statement in sqlite_schema() if sqlite else POSTGRES_SCHEMA:
            conn.execute(text(statement))
    engine.dispose()


def stamp(at: datetime) -> str:
    """A time as Chainlit writes it (`chainlit.utils.utc_now`: naive UTC ISO 8601 and `Z`)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


@dataclass
class ChainlitWriter:
    """Writes Chainlit rows by SQL into a SQLite Chainlit database, as its data layer would."""

    url: str
    ids: list[str] = field(default_factory=list)

    def _run(self, sql: str, params: dict[str, Any]) -> None:
        engine = create_engine(self.url)
        with engine.begin() as conn:
            conn.execute(text(sql), params)
        engine.dispose()

    def thread(self, bot: str | None, at: datetime = T0) -> str:
        """A new thread of `bot` (its chat profile), created at `at`; its id."""
        tid = str(uuid.uuid4())
        metadata = {"chat_profile": bot, "env": "{}"} if bot else {}
        self._run(
            'INSERT INTO threads ("id", "createdAt", "name", "metadata") '
            "VALUES (:id, :at, :name, :metadata)",
            {
                "id": tid,
                "at": stamp(at),
                "name": "chat",
                "metadata": orjson.dumps(metadata).decode(),
            },
        )
        return tid

    def step(self, thread_id: str, kind: str, output: str, at: datetime) -> str:
        """A step (`user_message`, `assistant_message`, `run`, ...) of a thread; its id."""
        sid = str(uuid.uuid4())
        self._run(
            'INSERT INTO steps ("id", "name", "type", "threadId", "streaming", "output", '
            '"createdAt", "start", "end", "metadata", "generation") VALUES (:id, :name, :type, '
            ":thread, :streaming, :output, :at, :at, :at, '{}', '{}')",
            {
                "id": sid,
                "name": "Larry" if kind == "assistant_message" else "user",
                "type": kind,
                "thread": thread_id,
                "streaming": False,
                "output": output,
                "at": stamp(at),
            },
        )
        return sid

    def conversation(
        self, thread_id: str, turns: list[tuple[str, str]], at: datetime = T0
    ) -> list[str]:
        """User and assistant messages, one pair per turn, a minute apart (after `at`), with a
        `run` step in each turn as Chainlit writes; the assistant messages' ids."""
        replies = []
        for i, (user, reply) in enumerate(turns):
            when = at + timedelta(minutes=2 * i + 1)
            self.step(thread_id, "user_message", user, when)
            self.step(thread_id, "run", "", when + timedelta(seconds=1))
            replies.append(
                self.step(thread_id, "assistant_message", reply, when + timedelta(seconds=30))
            )
        return replies

    def thumb(self, step_id: str, thread_id: str, value: int, comment: str | None = None) -> str:
        """A thumb (1 up, 0 down) on a step; its id."""
        fid = str(uuid.uuid4())
        self._run(
            'INSERT INTO feedbacks ("id", "forId", "threadId", "value", "comment") '
            "VALUES (:id, :for_id, :thread, :value, :comment)",
            {"id": fid, "for_id": step_id, "thread": thread_id, "value": value, "comment": comment},
        )
        return fid

    def set_thumb(self, feedback_id: str, value: int) -> None:
        """Change a thumb, as Chainlit's `upsert_feedback` does when a user changes it."""
        self._run(
            'UPDATE feedbacks SET "value" = :value WHERE "id" = :id',
            {"id": feedback_id, "value": value},
        )


def rating_record(
    message_id: str,
    thread_id: str,
    score: int,
    *,
    kind: str = "detailed",
    bot: str = "tta",
    categories: dict[str, bool] | None = None,
    comment: str | None = None,
    at: datetime = T0,
) -> dict[str, Any]:
    """A record shaped like Larry's `utils/feedback.py` writes it."""
    labels = {1: "Not helpful", 2: "Somewhat helpful", 3: "Okay", 4: "Helpful", 5: "Excellent"}
    detailed = kind == "detailed"
    return {
        "message_id": message_id,
        "thread_id": thread_id,
        "score": score,
        "feedback_type": kind,
        "rating": labels[score] if detailed else ("positive" if score else "negative"),
        "rating_emoji": "🙂" if detailed else ("👍" if score else "👎"),
        "comment": comment,
        "categories": categories or {},
        "bot_id": bot,
        "phase": None,
        "message_preview": "...",
        "user_message_preview": "...",
        "timestamp": at.replace(tzinfo=None).isoformat(),
        "date": at.strftime("%Y-%m-%d"),
    }


def jsonl(records: list[dict[str, Any]]) -> str:
    """Records as JSON lines."""
    return "".join(orjson.dumps(r).decode() + "\n" for r in records)


def larrylab(*args: str) -> Result:
    """Run the `larrylab` command in-process."""
    return CliRunner().invoke(app, list(args))


def assert_refused(result: Result, words: str, code: int) -> None:
    """The command stopped with exit code `code` and `words` in one sentence, no traceback."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert words in result.output, result.output
    assert "Traceback" not in result.output
