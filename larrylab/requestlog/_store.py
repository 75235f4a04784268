"""Storing request records: one batch in one transaction (`BatchStore`, run by the indexer),
with plain SQL strings run with the driver's executemany on tuples, as little Python as
possible. What a batch writes, how text loses its NULs and how refused rows are found and
quarantined: docs/resilience.md, "The request log" and "Bad rows never block the others".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from operator import attrgetter, itemgetter
from typing import Any

import orjson
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DataError, IntegrityError

from larrylab.db import RequestLog
from larrylab.requestlog._spill import Quarantine
from larrylab.requestlog._transcripts import (
    MESSAGE_COLUMNS,
    NUL,
    REPLACEMENT,
    ChainCache,
    Chains,
    MessageRow,
)
from larrylab.rollups import Pair, add_requests

log = logging.getLogger(__name__)

_COUNTED_CAP = 200_000


@dataclass(slots=True)
class RequestRecord:
    """Everything logged about one request; `prompt` and `reply` feed the transcript."""

    id: str
    thread_id: str
    unit_source: str
    route: str
    experiment: str | None
    arm: str | None
    model: str | None
    upstream_model: str | None
    stream: bool
    status: str
    http_status: int
    error_class: str | None
    error_message: str | None
    fallback_from: str | None
    latency_ms: float
    ttft_ms: float | None
    upstream_ms: float | None
    overhead_ms: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    protocol: str  # the client's: "openai" or "gemini"
    ineligible: str | None  # features a candidate could not serve, comma-separated
    stripped: bool  # those features were dropped for the candidate
    created_at: datetime
    finished_at: datetime
    prompt: list[dict[str, Any]] = field(default_factory=list)
    reply: dict[str, Any] | None = None


RECORD_FIELDS = tuple(f.name for f in fields(RequestRecord))
record_values = attrgetter(*RECORD_FIELDS)
"""A record's field values as a tuple, in `RECORD_FIELDS` order (`RequestRecord(*values)`)."""

Row = Sequence[Any]
"""A record's values in `RECORD_FIELDS` order, as `record_values` gives them or as a journal
line holds them (times then are ISO 8601 text, the prompt its JSON text as bytes)."""

_TIMES = ("created_at", "finished_at")
# Request columns: the record's plain fields (those before its times), its two times, then the
# transcript links.
_N_PLAIN = RECORD_FIELDS.index("created_at")
assert RECORD_FIELDS[_N_PLAIN:] == (*_TIMES, "prompt", "reply"), "the request row layout"
_REQUEST_COLUMNS = (*RECORD_FIELDS[:_N_PLAIN], *_TIMES, "prompt_message_id", "reply_message_id")
_THREAD_COLUMNS = ("id", "unit_source", "route", "created_at", "last_seen_at")
_THREAD, _UNIT_SOURCE, _ROUTE = map(RECORD_FIELDS.index, ("thread_id", "unit_source", "route"))
_CREATED, _FINISHED, _PROMPT, _REPLY = range(_N_PLAIN, _N_PLAIN + 4)
_FACTS = (
    *("experiment", "arm", "thread_id", "status", "latency_ms", "ttft_ms", "fallback_from"),
    "ineligible",
)
_facts = itemgetter(*map(RECORD_FIELDS.index, _FACTS))
"""What the rollups read of a stored request's row (`rollups.RequestFacts`)."""


def clean_row(row: list[Any]) -> list[Any]:
    """`row` (a record's values) with its text values as the store keeps them, in place: U+0000
    replaced by U+FFFD (`transcripts.without_nul`). The prompt and reply are left as they are:
    they are stored as JSON, which escapes a NUL."""
    for i in range(_N_PLAIN):
        value = row[i]
        if type(value) is str and NUL in value:
            row[i] = value.replace(NUL, REPLACEMENT)
    return row


def is_data_error(exc: BaseException) -> bool:
    """Whether the database (or its driver) refused rows for what they hold, so that storing
    them again would fail again: a value out of range, text too long or with a character the
    column cannot hold, a constraint. Not an outage, a lock or a missing table, which pass."""
    if isinstance(exc, (DataError, IntegrityError)):
        return not exc.connection_invalidated
    # Raised while a row is prepared or bound, before anything reached the database: a time
    # that does not parse, an integer past 64 bits (sqlite3), a lone surrogate UTF-8 cannot
    # encode (a UnicodeError is a ValueError).
    return isinstance(exc, (ValueError, OverflowError, TypeError))


def reason(exc: BaseException) -> str:
    """The first line of a refusal's message (without SQLAlchemy's statement and parameters)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _row_dict(row: Row) -> dict[str, Any]:
    """A record's values by field name, the prompt decoded if a journal gave its JSON text."""
    named = dict(zip(RECORD_FIELDS, row, strict=True))
    prompt = named["prompt"]
    if isinstance(prompt, bytes):
        try:
            named["prompt"] = orjson.loads(prompt)
        except orjson.JSONDecodeError:
            named["prompt"] = prompt.decode("utf-8", "replace")
    return named


class _Duplicates(Exception):
    """Some request ids of a batch are stored already (a replay): write it row by row."""


@dataclass(frozen=True, slots=True)
class _Statements:
    """The writer's SQL in the driver's parameter style, and the store's time format.

    (Sending a SQLite batch as one JSON array read by `json_each` was tried: one statement step
    instead of one per row, but 1.8x the CPU per row, `bench/logwriter_cpu.py`.)
    """

    thread: str
    message: str
    request: str
    to_db_time: Callable[[datetime | str], Any]

    @classmethod
    def for_engine(cls, engine: Engine) -> _Statements:
        """Statements for SQLite (`?`) or PostgreSQL via psycopg (`%s`)."""
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"

        def insert(table: str, cols: Sequence[str], conflict: str) -> str:
            marks = ", ".join([mark] * len(cols))
            return (
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) ON CONFLICT {conflict}"
            )

        # The same conversion SQLAlchemy applies to these columns (UTC; SQLite stores text).
        column_type = RequestLog.__table__.c.created_at.type  # type: ignore[attr-defined]
        process = column_type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
        if process is not None and engine.dialect.name == "sqlite":
            to_db = _sqlite_time(process)
        elif process is not None:
            bind = process
            to_db = lambda value: bind(_parsed_time(value))  # noqa: E731
        else:
            to_db = _parsed_time
        return cls(
            thread=insert(
                "thread", _THREAD_COLUMNS, "(id) DO UPDATE SET last_seen_at = excluded.last_seen_at"
            ),
            message=insert("message", MESSAGE_COLUMNS, "(thread_id, id) DO NOTHING"),
            request=insert("request", _REQUEST_COLUMNS, "(id) DO NOTHING"),
            to_db_time=to_db,
        )


def _sqlite_time(slow: Callable[[datetime], Any]) -> Callable[[datetime | str], Any]:
    """SQLAlchemy's SQLite text for a datetime, 'YYYY-MM-DD HH:MM:SS.ffffff', made by slicing
    for the router's times (UTC; a journal holds them as ISO 8601 text): the same string at a
    fraction of the cost."""

    def to_db(value: datetime | str) -> Any:
        if type(value) is str:
            if len(value) == 32 and value.endswith("+00:00"):  # 'YYYY-MM-DDTHH:MM:SS.ffffff+00:00'
                return f"{value[:10]} {value[11:26]}"
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        if value.tzinfo is UTC:
            return value.isoformat(" ", "microseconds")[:26]
        return slow(value)

    return to_db


def _parsed_time(value: datetime | str) -> datetime:
    """A datetime, from a journal's ISO 8601 text if need be (for drivers that take datetimes)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


class BatchStore:
    """Writes batches of request records to one store, remembering what it stored already."""

    def __init__(self, engine: Engine, quarantine: Quarantine) -> None:
        self._engine = engine
        self.quarantine = quarantine
        self._counted: set[Pair] = set()  # (experiment, arm, thread) pairs stored in arm_thread
        self._chains = ChainCache()
        self._sql = _Statements.for_engine(engine)

    @property
    def quarantined(self) -> int:
        """Request rows this store put in the quarantine file."""
        return self.quarantine.counts.get("requests", 0)

    def write(self, batch: Sequence[RequestRecord]) -> None:
        """Write a batch in one transaction (a replayed batch counts only its new rows); rows
        the database refuses go to the quarantine file."""
        self.write_rows([clean_row(list(record_values(rec))) for rec in batch])

    def write_rows(self, rows: Sequence[Row]) -> None:
        """`write` for records given as their values (the journal's lines, read as they are,
        text already without NUL: `clean_row`). Raises if the database cannot be reached (no
        row is quarantined then: the caller retries the whole batch)."""
        try:
            self._store_batch(rows)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            refused: list[tuple[Row, str]] = []
            self._isolate(rows, exc, refused)
            self._quarantine(refused)

    def _store_batch(self, rows: Sequence[Row]) -> None:
        """Store rows in one transaction, row by row if some ids are stored already."""
        try:
            self._store(rows, exact=False)
        except _Duplicates:
            self._store(rows, exact=True)

    def _isolate(self, rows: Sequence[Row], exc: Exception, refused: list[tuple[Row, str]]) -> None:
        """Store `rows`, which the database refused together (`exc`), in halves, down to the
        single rows it refuses, which are added to `refused` with the reason."""
        if len(rows) == 1:
            refused.append((rows[0], reason(exc)))
            return
        middle = len(rows) // 2
        for half in (rows[:middle], rows[middle:]):
            try:
                self._store_batch(half)
            except Exception as half_exc:
                if not is_data_error(half_exc):
                    raise
                self._isolate(half, half_exc, refused)

    def _quarantine(self, refused: Sequence[tuple[Row, str]]) -> None:
        """Put the rows the database refused in the quarantine file, and say so."""
        if not refused:
            return
        path = self.quarantine.add("requests", [(_row_dict(row), why) for row, why in refused])
        for row, why in refused:
            log.error(
                "request %s refused by the database (%s): quarantined in %s", row[0], why, path
            )

    def _message_rows(
        self, rows: Sequence[Row], proposed: Chains, stamp: Any
    ) -> tuple[list[MessageRow], list[tuple[str | None, str | None]]]:
        """The batch's transcript rows not stored yet (created at `stamp`), and each request's
        (prompt, reply) ids."""
        messages: dict[str, MessageRow] = {}
        links: list[tuple[str | None, str | None]] = []
        chain, chain_json = self._chains.chain, self._chains.chain_json
        for row in rows:
            prompt, reply = row[_PROMPT], row[_REPLY]
            if type(prompt) is bytes:  # a journal line's JSON text
                try:
                    ids = chain_json(messages, row[_THREAD], prompt, reply, proposed, stamp)
                except ValueError as exc:  # a damaged journal: keep the request, not its text
                    log.error("request %s: unreadable prompt (%s), no transcript", row[0], exc)
                    links.append((None, None))
                    continue
                asked = len(ids) - 1 if reply else len(ids)
            else:
                convo = [*prompt, reply] if reply else prompt
                ids = chain(messages, row[_THREAD], convo, proposed, stamp)
                asked = len(prompt)
            links.append((ids[asked - 1] if asked else None, ids[-1] if reply else None))
        return list(messages.values()), links

    def _remember(self, pairs: set[Pair], chains: Chains) -> None:
        self._chains.commit(chains)
        self._counted |= pairs
        if len(self._counted) > _COUNTED_CAP:
            self._counted.clear()  # only an optimisation: unknown pairs are inserted again

    def _store(self, rows: Sequence[Row], *, exact: bool) -> None:
        """Write a batch in one transaction; rollups count only the request rows stored now
        (`exact` checks every row; otherwise a batch with a stored id raises `_Duplicates`)."""
        to_db = self._sql.to_db_time
        chains: Chains = {}
        # messages are stamped with the first row's finish
        messages, links = self._message_rows(rows, chains, to_db(rows[0][_FINISHED]))
        request_rows = []
        threads: dict[str, list[Any]] = {}  # id -> its thread row, last seen at the latest
        for row, link in zip(rows, links, strict=True):
            created, finished = to_db(row[_CREATED]), to_db(row[_FINISHED])
            request_rows.append((*row[:_N_PLAIN], created, finished, *link))
            tid = row[_THREAD]
            thread = threads.get(tid)
            if thread is None:
                threads[tid] = [tid, row[_UNIT_SOURCE], row[_ROUTE], created, finished]
            elif finished > thread[4]:
                thread[4] = finished
        with self._engine.begin() as conn:
            conn.exec_driver_sql(self._sql.thread, [tuple(t) for t in threads.values()])
            if messages:
                conn.exec_driver_sql(self._sql.message, messages)
            stored = self._insert_requests(conn, rows, request_rows, exact=exact)
            # Running per-arm totals, for rows stored now only (a replay never counts twice).
            pairs = add_requests(conn, [_facts(row) for row in stored], counted=self._counted)
        self._remember(pairs, chains)

    def _insert_requests(
        self,
        conn: Connection,
        batch: Sequence[Row],
        rows: list[tuple[Any, ...]],
        *,
        exact: bool,
    ) -> Sequence[Row]:
        """Insert request rows; returns the records whose rows were stored by this call."""
        if exact:
            sql = self._sql.request
            return [r for r, row in zip(batch, rows, strict=True) if _changed(conn, sql, row)]
        if conn.exec_driver_sql(self._sql.request, rows).rowcount != len(rows):
            raise _Duplicates
        return batch


def _changed(conn: Connection, sql: str, row: tuple[Any, ...]) -> bool:
    """Run one insert; whether it stored the row."""
    return bool(conn.exec_driver_sql(sql, row).rowcount == 1)
