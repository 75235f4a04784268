"""The request log writer: off the hot path, bounded, batched, and losing nothing.

Handlers `submit()` finished requests and go on. Two writers share this interface:

- `ProcessLogWriter` (`requestlog._indexer`, the router's default) appends each request to a
  local journal
  (`journal`) within 10 ms, and a child process of lower CPU priority stores the journal in the
  database in batches. Serving comes first when the CPU is saturated; the store catches up after.
- `LogWriter`, here, stores batches from a thread of the router's own process (a batch is cut
  when it is full or one flush interval after its first record arrived): nothing to start, but
  the writer's Python competes with the event loop for the GIL
  (`bench/results/router_overhead.md`). A batch the database refuses is retried and then
  appended to a spill file.

Either way a bounded number of records may wait (`submit()` then waits: back-pressure, never a
dropped row), `flush()` waits until the database holds every record submitted before it, and
`close()` stores everything. A row the database refuses for what it holds is put in the
quarantine file instead (`logstore`), and counted (`quarantined`, for `/healthz` and
`/metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Engine

from larrylab.requestlog._spill import Quarantine, SpillDir
from larrylab.requestlog._store import BatchStore, RequestRecord, record_from_dict

__all__ = ["LogWriter", "RequestRecord", "WriterBase", "record_from_dict"]


class Attribution(NamedTuple):
    """Where a rating belongs: its thread and the experiment arm that served it (a tuple: the
    log writers keep one per request not stored yet)."""

    thread_id: str
    experiment: str | None
    arm: str | None


class WriterBase(ABC):
    """What both writers share: the count of records submitted and written, back-pressure,
    `flush()`, and the attribution of the records not yet written (for their feedback)."""

    def __init__(
        self, *, batch_size: int, flush_interval_s: float, queue_size: int, spill_dir: Path
    ) -> None:
        self.spill = SpillDir(spill_dir)  # batches the store refused (ratings spill here too)
        self.quarantine = Quarantine(spill_dir / "quarantine")  # rows the database refused
        self._quarantined_elsewhere = 0  # request rows another process (the indexer) refused
        self._batch_size = batch_size
        self._interval = flush_interval_s
        self._max_depth = queue_size
        self._pending: dict[str, Attribution] = {}  # the records not yet written, by id
        self._submitted = 0
        self._written = 0
        self._batches = 0
        self._progress = asyncio.Condition()

    @property
    def depth(self) -> int:
        """Records submitted but not yet written."""
        return self._submitted - self._written

    @property
    def written(self) -> tuple[int, int]:
        """Records written so far, and the batches they were written in."""
        return self._written, self._batches

    @property
    def quarantined(self) -> dict[str, int]:
        """Rows put in the quarantine file since this writer started: request rows (by this
        process or its indexer) and spilled ratings."""
        counts = self.quarantine.counts
        return {
            "requests": counts.get("requests", 0) + self._quarantined_elsewhere,
            "feedback": counts.get("feedback", 0),
        }

    def pending(self, request_id: str) -> Attribution | None:
        """The attribution of a request submitted here and not written yet."""
        return self._pending.get(request_id)

    async def submit(self, record: RequestRecord) -> None:
        """Queue a record, first waiting while the queue is full (back-pressure, never drop)."""
        while self.depth >= self._max_depth:
            await asyncio.sleep(0.005)
        self.submit_nowait(record)

    def submit_nowait(self, record: RequestRecord) -> None:
        """Queue a record at once, even past the bound (for cleanup paths that cannot wait)."""
        self._pending[record.id] = Attribution(record.thread_id, record.experiment, record.arm)
        self._submitted += 1
        self._enqueue(record)

    @abstractmethod
    def _enqueue(self, record: RequestRecord) -> None:
        """Hand a submitted record to the writing side."""

    @abstractmethod
    async def start(self) -> None:
        """Start writing in the background."""

    @abstractmethod
    async def close(self) -> None:
        """Write everything submitted, then stop."""

    @abstractmethod
    async def replay(self) -> int:
        """Write spilled rows back to the store; returns how many were written."""

    async def flush(self) -> None:
        """Wait until every record submitted before this call is written."""
        target = self._submitted
        async with self._progress:
            await self._progress.wait_for(lambda: self._written >= target)

    async def _done(self, ids: Iterable[str]) -> None:
        """Mark records as written (stored, or spilled by the thread writer)."""
        count = 0
        for request_id in ids:
            self._pending.pop(request_id, None)
            count += 1
        async with self._progress:
            self._written += count
            self._batches += 1
            self._progress.notify_all()


class LogWriter(WriterBase):
    """Writes request records in batches from a thread of the router's process."""

    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        queue_size: int = 10_000,
        spill_dir: Path = Path("larrylab-spill"),
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            queue_size=queue_size,
            spill_dir=spill_dir,
        )
        self._store = BatchStore(engine, self.spill, self.quarantine)
        self._queue: list[RequestRecord] = []
        self._arrived = asyncio.Event()  # the queue is not empty
        self._full = asyncio.Event()  # the queue holds a whole batch
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the background writer task."""
        self._task = asyncio.create_task(self._run(), name="larrylab-log-writer")

    def _enqueue(self, record: RequestRecord) -> None:
        self._queue.append(record)
        if len(self._queue) == 1:
            self._arrived.set()
        if len(self._queue) >= self._batch_size:
            self._full.set()

    async def close(self) -> None:
        """Write everything still queued, then stop."""
        if self._task is None:
            return
        await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def replay(self) -> int:
        """Write spilled rows back to the store; returns how many were written."""
        return await asyncio.to_thread(self._store.replay, self._batch_size)

    async def _run(self) -> None:
        """Write a batch once it is full or one interval after its first record arrived."""
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            if len(self._queue) < self._batch_size:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._interval)
            batch = self._queue[: self._batch_size]
            del self._queue[: self._batch_size]
            await asyncio.to_thread(self._store.write_or_spill, batch)
            await self._done(rec.id for rec in batch)
