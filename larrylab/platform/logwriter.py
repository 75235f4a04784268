"""The request log writer: off the hot path, bounded, batched, and losing nothing.

Handlers `submit()` finished requests; a background task writes them in batches (threads,
transcript messages and request rows in one transaction). A full queue makes `submit()` wait
(back-pressure) instead of dropping rows. When the database refuses a batch, the batch is retried
and, if it still fails, appended to a spill file (JSON lines) instead of being dropped.
`close()` flushes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table

from larrylab.platform.models import Message, RequestLog, Thread
from larrylab.platform.rollup import add_requests
from larrylab.platform.spill import SpillDir
from larrylab.platform.sqlutil import insert_for
from larrylab.platform.transcripts import MessageRow, chain, dedupe

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


_ROW_FIELDS = tuple(f.name for f in fields(RequestRecord) if f.name not in ("prompt", "reply"))
_MESSAGE_FIELDS = tuple(f.name for f in fields(MessageRow))


def record_from_dict(row: dict[str, Any]) -> RequestRecord:
    """A RequestRecord read back from a spill file."""
    for key in ("created_at", "finished_at"):
        if isinstance(row.get(key), str):
            row[key] = datetime.fromisoformat(row[key])
    return RequestRecord(**row)


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


class LogWriter:
    """Writes request records to the store in batches from a background task."""

    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int = 200,
        flush_interval_s: float = 0.2,
        queue_size: int = 10_000,
        spill_dir: Path = Path("larrylab-spill"),
    ) -> None:
        self._engine = engine
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._queue: asyncio.Queue[RequestRecord] = asyncio.Queue()
        self._max_depth = queue_size
        self._pending: dict[str, RequestRecord] = {}
        self._known: OrderedDict[str, None] = OrderedDict()
        self.spill = SpillDir(spill_dir)
        self._task: asyncio.Task[None] | None = None
        self._written = 0
        self._submitted = 0
        self._progress = asyncio.Condition()

    @property
    def depth(self) -> int:
        """Records submitted but not yet written."""
        return self._submitted - self._written

    def start(self) -> None:
        """Start the background writer task."""
        self._task = asyncio.create_task(self._run(), name="larrylab-log-writer")

    def is_pending(self, request_id: str) -> bool:
        """Whether a request was submitted here and is not written yet."""
        return request_id in self._pending

    async def submit(self, record: RequestRecord) -> None:
        """Queue a record, first waiting while the queue is full (back-pressure, never drop)."""
        while self.depth >= self._max_depth:
            await asyncio.sleep(0.005)
        self.submit_nowait(record)

    def submit_nowait(self, record: RequestRecord) -> None:
        """Queue a record at once, even past the bound (for cleanup paths that cannot wait)."""
        self._pending[record.id] = record
        self._submitted += 1
        self._queue.put_nowait(record)

    async def flush(self) -> None:
        """Wait until every record submitted before this call is written."""
        target = self._submitted
        async with self._progress:
            await self._progress.wait_for(lambda: self._written >= target)

    async def close(self) -> None:
        """Write everything still queued, then stop."""
        if self._task is None:
            return
        await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._interval
            while len(batch) < self._batch_size:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            await self._write(batch)

    async def _write(self, batch: list[RequestRecord]) -> None:
        for attempt in range(3):
            try:
                await asyncio.to_thread(self._write_batch, batch)
                break
            except Exception as exc:  # database down or refusing: retry, then spill
                log.warning(
                    "writing %d request rows failed (attempt %d): %s", len(batch), attempt + 1, exc
                )
                await asyncio.sleep(0.2 * (attempt + 1))
        else:
            await asyncio.to_thread(self._spill, batch)
        for record in batch:
            self._pending.pop(record.id, None)
        async with self._progress:
            self._written += len(batch)
            self._progress.notify_all()

    def _message_rows(
        self, batch: Sequence[RequestRecord]
    ) -> tuple[list[MessageRow], dict[str, tuple[str | None, str | None]]]:
        rows: list[MessageRow] = []
        links: dict[str, tuple[str | None, str | None]] = {}
        for rec in batch:
            prompt_rows = chain(rec.thread_id, rec.prompt)
            prompt_last = prompt_rows[-1].id if prompt_rows else None
            reply_rows = (
                chain(rec.thread_id, [rec.reply], prompt_last, len(prompt_rows))
                if rec.reply
                else []
            )
            rows.extend(prompt_rows + reply_rows)
            links[rec.id] = (prompt_last, reply_rows[0].id if reply_rows else None)
        new = [r for r in dedupe(rows) if r.id not in self._known]
        return new, links

    def _remember(self, rows: Sequence[MessageRow]) -> None:
        for row in rows:
            self._known[row.id] = None
        while len(self._known) > _KNOWN_IDS_CAP:
            self._known.popitem(last=False)

    def _write_batch(self, batch: Sequence[RequestRecord]) -> None:
        messages, links = self._message_rows(batch)
        threads: dict[str, dict[str, Any]] = {}
        for rec in batch:
            t = threads.setdefault(
                rec.thread_id,
                {
                    "id": rec.thread_id,
                    "unit_source": rec.unit_source,
                    "route": rec.route,
                    "created_at": rec.created_at,
                    "last_seen_at": rec.finished_at,
                },
            )
            t["last_seen_at"] = max(t["last_seen_at"], rec.finished_at)
        requests = []
        for rec in batch:
            row = {k: getattr(rec, k) for k in _ROW_FIELDS}  # asdict() would deep-copy the prompts
            row["prompt_message_id"], row["reply_message_id"] = links[rec.id]
            requests.append(row)
        insert = insert_for(self._engine)
        with self._engine.begin() as conn:
            stmt = insert(_table(Thread))
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["id"], set_={"last_seen_at": stmt.excluded.last_seen_at}
                ),
                list(threads.values()),
            )
            if messages:
                now = batch[0].finished_at
                conn.execute(
                    insert(_table(Message)).on_conflict_do_nothing(index_elements=["id"]),
                    [
                        {**{k: getattr(m, k) for k in _MESSAGE_FIELDS}, "created_at": now}
                        for m in messages
                    ],
                )
            table = _table(RequestLog)
            stmt = insert(table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id)
            inserted = set(conn.execute(stmt, requests).scalars())
            # Running per-arm totals, for rows stored now only (a replay never counts twice).
            add_requests(conn, [r for r in requests if r["id"] in inserted])
        self._remember(messages)

    def _spill(self, batch: Sequence[RequestRecord]) -> None:
        path = self.spill.append("requests", (asdict(rec) for rec in batch))
        log.error("database unavailable: %d request rows spilled to %s", len(batch), path)

    async def replay(self) -> int:
        """Write spilled rows back to the store; returns how many were written."""
        written = 0
        for path in await asyncio.to_thread(self.spill.claim, "requests"):
            rows = await asyncio.to_thread(SpillDir.read, path)
            records = [record_from_dict(row) for row in rows]
            for start in range(0, len(records), self._batch_size):
                await asyncio.to_thread(
                    self._write_batch, records[start : start + self._batch_size]
                )
            path.unlink(missing_ok=True)
            written += len(records)
            log.warning("replayed %d spilled request rows from %s", len(records), path.name)
        return written
