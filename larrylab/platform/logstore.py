"""Storing request records: one batch, one transaction, or the spill file when the store refuses.

`BatchStore` is synchronous and used by whichever writer runs it: the writer process
(`logproc`, the router's default) or the in-process writer thread (`logwriter`). A batch
writes threads, transcript messages and request rows in one transaction, as little Python as
possible: plain SQL strings run with the driver's executemany on tuples (no statement
compilation or per-value type processing), message ids already stored and (experiment, arm,
thread) pairs already counted are not sent again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, Engine

from larrylab.platform.models import RequestLog
from larrylab.platform.rollup import Pair, add_requests
from larrylab.platform.spill import SpillDir
from larrylab.platform.transcripts import ChainCache, Chains, MessageRow

log = logging.getLogger(__name__)

_KNOWN_IDS_CAP = 200_000


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
    created_at: datetime
    finished_at: datetime
    prompt: list[dict[str, Any]] = field(default_factory=list)
    reply: dict[str, Any] | None = None


RECORD_FIELDS = tuple(f.name for f in fields(RequestRecord))
record_values = attrgetter(*RECORD_FIELDS)
"""A record's field values as a tuple, in `RECORD_FIELDS` order (`RequestRecord(*values)`)."""

_TIMES = ("created_at", "finished_at")
# Request columns: the record's plain fields, its two times, then the transcript links.
_PLAIN_FIELDS = tuple(name for name in RECORD_FIELDS if name not in ("prompt", "reply", *_TIMES))
_REQUEST_COLUMNS = (*_PLAIN_FIELDS, *_TIMES, "prompt_message_id", "reply_message_id")
_THREAD_COLUMNS = ("id", "unit_source", "route", "created_at", "last_seen_at")
_MESSAGE_COLUMNS = (*MessageRow._fields, "created_at")
_ROLLUP_FIELDS = (
    "experiment",
    "arm",
    "thread_id",
    "status",
    "latency_ms",
    "ttft_ms",
    "fallback_from",
)


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
    to_db_time: Callable[[datetime], Any]

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
            process = _sqlite_time(process)
        return cls(
            thread=insert(
                "thread", _THREAD_COLUMNS, "(id) DO UPDATE SET last_seen_at = excluded.last_seen_at"
            ),
            message=insert("message", _MESSAGE_COLUMNS, "(thread_id, id) DO NOTHING"),
            request=insert("request", _REQUEST_COLUMNS, "(id) DO NOTHING"),
            to_db_time=process or (lambda value: value),
        )


def _sqlite_time(slow: Callable[[datetime], Any]) -> Callable[[datetime], Any]:
    """SQLAlchemy's SQLite text for a datetime, straight from `isoformat` for UTC values (the
    router's): 'YYYY-MM-DD HH:MM:SS.ffffff', the same string at about a third of the cost."""

    def to_db(value: datetime) -> Any:
        if value.tzinfo is UTC:
            return value.isoformat(" ", "microseconds")[:26]
        return slow(value)

    return to_db


def record_from_dict(row: dict[str, Any]) -> RequestRecord:
    """A RequestRecord read back from a spill file."""
    for key in _TIMES:
        if isinstance(row.get(key), str):
            row[key] = datetime.fromisoformat(row[key])
    return RequestRecord(**row)


class BatchStore:
    """Writes batches of request records to one store, remembering what it stored already."""

    def __init__(self, engine: Engine, spill: SpillDir) -> None:
        self._engine = engine
        self.spill = spill
        self._known: OrderedDict[str, None] = OrderedDict()
        self._counted: set[Pair] = set()  # (experiment, arm, thread) pairs stored in arm_thread
        self._chains = ChainCache()
        self._sql = _Statements.for_engine(engine)
        self._lock = threading.Lock()  # one batch at a time (a replay may run beside the writer)

    def write_or_spill(
        self, batch: Sequence[RequestRecord], *, attempts: int = 3, backoff_s: float = 0.2
    ) -> bool:
        """Write a batch, retrying; spill it to disk if the store still refuses it. Returns
        whether it reached the store; either way the rows are durable when this returns."""
        for attempt in range(attempts):
            try:
                self.write(batch)
                return True
            except Exception as exc:  # database down or refusing: retry, then spill
                log.warning(
                    "writing %d request rows failed (attempt %d): %s", len(batch), attempt + 1, exc
                )
                time.sleep(backoff_s * (attempt + 1))
        path = self.spill.append("requests", (asdict(rec) for rec in batch))
        log.error("database unavailable: %d request rows spilled to %s", len(batch), path)
        return False

    def write(self, batch: Sequence[RequestRecord]) -> None:
        """Write a batch in one transaction (a replayed batch counts only its new rows)."""
        with self._lock:
            try:
                self._store(batch, exact=False)
            except _Duplicates:
                self._store(batch, exact=True)

    def replay(self, batch_size: int) -> int:
        """Write spilled request rows back to the store; returns how many were written."""
        written = 0
        for path in self.spill.claim("requests"):
            records = [record_from_dict(row) for row in SpillDir.read(path)]
            for start in range(0, len(records), batch_size):
                self.write(records[start : start + batch_size])
            path.unlink(missing_ok=True)
            written += len(records)
            log.warning("replayed %d spilled request rows from %s", len(records), path.name)
        return written

    def _message_rows(
        self, batch: Sequence[RequestRecord], proposed: Chains
    ) -> tuple[list[MessageRow], dict[str, tuple[str | None, str | None]]]:
        """The batch's transcript rows not stored yet, and each request's (prompt, reply) ids."""
        rows: dict[str, MessageRow] = {}
        links: dict[str, tuple[str | None, str | None]] = {}
        for rec in batch:
            prompt = rec.prompt
            messages = [*prompt, rec.reply] if rec.reply else prompt
            ids = self._chains.chain(rows, self._known, rec.thread_id, messages, proposed)
            prompt_last = ids[len(prompt) - 1] if prompt else None
            links[rec.id] = (prompt_last, ids[-1] if rec.reply else None)
        return list(rows.values()), links

    def _remember(self, rows: Sequence[MessageRow], pairs: set[Pair], chains: Chains) -> None:
        self._chains.commit(chains)
        for row in rows:
            self._known[row.id] = None
        while len(self._known) > _KNOWN_IDS_CAP:
            self._known.popitem(last=False)
        self._counted |= pairs
        if len(self._counted) > _KNOWN_IDS_CAP:
            self._counted.clear()  # only an optimisation: unknown pairs are inserted again

    def _store(self, batch: Sequence[RequestRecord], *, exact: bool) -> None:
        """Write a batch in one transaction; rollups count only the request rows stored now
        (`exact` checks every row; otherwise a batch with a stored id raises `_Duplicates`)."""
        chains: Chains = {}
        messages, links = self._message_rows(batch, chains)
        to_db = self._sql.to_db_time
        threads: dict[str, RequestRecord] = {}
        last_seen: dict[str, datetime] = {}
        for rec in batch:
            threads.setdefault(rec.thread_id, rec)
            seen = last_seen.get(rec.thread_id)
            if seen is None or rec.finished_at > seen:
                last_seen[rec.thread_id] = rec.finished_at
        thread_rows = [
            (tid, t.unit_source, t.route, to_db(t.created_at), to_db(last_seen[tid]))
            for tid, t in threads.items()
        ]
        now = to_db(batch[0].finished_at)
        plain = attrgetter(*_PLAIN_FIELDS)
        request_rows = [
            (*plain(rec), to_db(rec.created_at), to_db(rec.finished_at), *links[rec.id])
            for rec in batch
        ]
        with self._engine.begin() as conn:
            conn.exec_driver_sql(self._sql.thread, thread_rows)
            if messages:
                conn.exec_driver_sql(self._sql.message, [(*m, now) for m in messages])
            stored = self._insert_requests(conn, batch, request_rows, exact=exact)
            # Running per-arm totals, for rows stored now only (a replay never counts twice).
            rollup = attrgetter(*_ROLLUP_FIELDS)
            rows = [dict(zip(_ROLLUP_FIELDS, rollup(rec), strict=True)) for rec in stored]
            pairs = add_requests(conn, rows, counted=self._counted)
        self._remember(messages, pairs, chains)

    def _insert_requests(
        self,
        conn: Connection,
        batch: Sequence[RequestRecord],
        rows: list[tuple[Any, ...]],
        *,
        exact: bool,
    ) -> Sequence[RequestRecord]:
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
