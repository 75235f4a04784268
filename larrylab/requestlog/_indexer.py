"""The router's default log writer: a local journal, stored in the database by a child process
of lower CPU priority (the indexer).

Storing a request costs several times the router's own work on it (transcript hashing, the
request row, messages, thread and rollups; `bench/results/router_overhead.md`). In the
router's process that work competed with the event loop; in a child of equal priority it
still took its share of a saturated CPU. So the router only appends finished requests to its
journal folder (`journal`), one write per 10 ms; the indexer, `python -m
larrylab.requestlog` started at `nice` 10 by default, stores the journal in batches
when the CPU allows. Under saturation the store lags; once `queue_size` rows wait, the
router's `submit()` waits for the indexer (back-pressure).

While many rows arrive (at least a fifth of `batch_size` per `flush_interval_s`), the indexer
stores less often and in larger batches: its interval doubles after each such round, up to
`flush_interval_max_s`, and its batches may hold `batch_size` rows per `flush_interval_s` of
it; once fewer than half as many arrive, it halves back. A commit writes every page its batch
dirtied, and the pages a small batch dirties are nearly as many as a large one's: batches of
up to 20,000 rows every 4 s cost 14-17% less indexer CPU per row than 5,000 every second, in
paired runs (`bench/results/indexer_instructions.md`). Rows then reach the database up to
`flush_interval_max_s` after their request, under load only; a flush (`flush()`, the experiment
summary) still stores at once.

Losing nothing:
- A record is durable once appended (a process crash keeps it; like SQLite's WAL mode with
  `synchronous=NORMAL`, a power cut may not). A SIGKILL of the router, or of the router and
  its indexer, loses only the records of its last 10 ms, not yet appended.
- The indexer records how far it stored in the folder's checkpoint after each batch. One that
  dies is replaced and goes on from the checkpoint; a batch stored again counts once (request
  ids are primary keys, rollups count only rows stored now).
- When the router exits or dies, its indexer stores the rest and removes the folder. A folder
  whose router and indexer are both gone is adopted by the next indexer for the same database.
- While the database is down the journal simply grows (no spill file): the indexer retries.
- A row the database refuses for what it holds (a data error, not an outage) would stop the
  journal for good if the batch were retried as it is: the store finds it by splitting the
  batch, puts it in the quarantine file with the reason and stores the rest
  (`logstore.BatchStore.write_rows`); the indexer tells the router how many it quarantined.
- The indexer ignores SIGINT and SIGTERM (they reach the whole process group): it stops when
  the router closes the pipe.

Pipe: the router sends frames of a 4-byte little-endian length and a pickle of
`("config", dict)`, `("store",)` (store now: a flush or a backlog near its bound waits) or
`("replay",)` (legacy spill files of the thread writer); the indexer
answers with 9-byte frames: a kind byte (`A` rows of the router's folder stored so far, `R`
rows replayed, `E` replay failed, `Q` rows just quarantined) and a count.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import select
import signal
import struct
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from larrylab.requestlog import _journal as journal
from larrylab.requestlog._journal import Checkpoint, JournalWriter, SegmentReader
from larrylab.requestlog._spill import SpillDir
from larrylab.requestlog._store import BatchStore, RequestRecord
from larrylab.requestlog._writer import WriterBase

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("<I")
_ANSWER = struct.Struct("<cQ")
_MAX_BACKOFF_S = 5.0
# Records are appended in one write per interval: a SIGKILL of the router loses at most this
# interval's records.
_APPEND_EVERY_S = 0.01
_ADOPT_EVERY_S = 5.0


def _frame(message: tuple[Any, ...]) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


class ProcessLogWriter(WriterBase):
    """Appends request records to a journal folder and has a child process store them."""

    def __init__(
        self,
        database_url: str,
        *,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        flush_interval_max_s: float | None = None,
        queue_size: int = 200_000,
        spill_dir: Path = Path("larrylab-spill"),
        journal_dir: Path | None = None,
        nice: int = 10,
        segment_bytes: int = 64 << 20,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            queue_size=queue_size,
            spill_dir=spill_dir,
        )
        self._database_url = database_url
        self._journal_root = journal_dir or spill_dir / "journal"
        self._segment_bytes = segment_bytes
        self._config: dict[str, Any] = {
            "database_url": database_url,
            "batch_size": batch_size,
            "flush_interval_s": flush_interval_s,
            "flush_interval_max_s": flush_interval_max_s,  # None: a fixed pace
            "spill_dir": str(spill_dir),
            "journal_root": str(self._journal_root),
            "nice": nice,
        }
        self._journal: JournalWriter | None = None
        self._order: deque[str] = deque()  # ids of the records not yet stored, oldest first
        self._outbox: list[bytes] = []  # journal lines not yet appended
        self._append_timer: asyncio.TimerHandle | None = None
        self._append_failed = False
        self._replays: deque[asyncio.Future[int]] = deque()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._failures = 0  # indexer exits in a row with no progress
        self._nudged = False  # asked the indexer to store now; cleared by its next progress

    @property
    def pid(self) -> int | None:
        """The indexer's process id (None before `start()`)."""
        return self._proc.pid if self._proc else None

    @property
    def journal_folder(self) -> Path | None:
        """This router's journal folder (None before `start()`)."""
        return self._journal.directory if self._journal else None

    async def start(self) -> None:
        """Create this router's journal folder and start the indexer."""
        self._journal = JournalWriter(
            self._journal_root, self._database_url, segment_bytes=self._segment_bytes
        )
        self._config["journal_dir"] = str(self._journal.directory)
        await self._spawn()

    async def _spawn(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "larrylab.requestlog",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        self._proc = proc
        proc.stdin.write(_frame(("config", self._config)))
        if self._closing:
            proc.stdin.close()
        self._reader = asyncio.create_task(self._answers(proc), name="larrylab-log-acks")

    def _nudge(self) -> None:
        """Append what is waiting and ask the indexer to store it now rather than at its next
        interval (once until it reports progress)."""
        self._append()
        proc = self._proc
        if self._nudged or proc is None or proc.stdin is None or proc.stdin.is_closing():
            return
        self._nudged = True
        proc.stdin.write(_frame(("store",)))

    async def flush(self) -> None:
        """Wait until every record submitted before this call is stored."""
        target = self._submitted
        while self._written < target:
            seen = self._written
            self._nudge()
            async with self._progress:
                await self._progress.wait_for(lambda: self._written > seen)  # noqa: B023

    def _enqueue(self, record: RequestRecord) -> None:
        if self.depth >= self._max_depth // 2:
            self._nudge()  # the backlog nears its bound: store without waiting for the interval
        self._order.append(record.id)
        # Encoded now, while the request's objects are fresh in the CPU's caches; they are then
        # freed with the request instead of living until the next append (which, with 10 ms of
        # requests held, also set off more garbage collections).
        self._outbox.append(journal.line(record))
        if self._append_timer is None:
            self._append_timer = asyncio.get_running_loop().call_later(
                _APPEND_EVERY_S, self._append
            )

    def _append(self) -> None:
        """Append the records finished since the last append (kept for the next try if the
        disk refuses them)."""
        if self._append_timer is not None:
            self._append_timer.cancel()  # called before it fired: one append does
            self._append_timer = None
        if not self._outbox or self._journal is None:
            return
        try:
            self._journal.append_lines(self._outbox)
        except OSError as exc:
            if not self._append_failed:
                log.error("cannot append to the request journal (%s); retrying", exc)
            self._append_failed = True
            if not self._closing:
                loop = asyncio.get_running_loop()
                self._append_timer = loop.call_later(0.5, self._append)
            return
        if self._append_failed:
            log.warning("the request journal takes rows again")
            self._append_failed = False
        self._outbox.clear()

    async def replay(self) -> int:
        """Have the indexer write spilled request rows back to the store; returns how many."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            return 0
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._replays.append(done)
        proc.stdin.write(_frame(("replay",)))
        return await done

    async def close(self) -> None:
        """Append what is left, let the indexer store the journal, and wait for it to exit.
        (If the database is down it exits anyway; the next router's indexer stores the rest.)"""
        if self._proc is None or self._closing:
            return
        self._closing = True
        self._append()
        assert self._journal is not None
        self._journal.close()
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        while True:  # an indexer that died while closing was replaced: wait for the last one
            reader = self._reader
            if reader is None:
                break
            await reader
            if reader is self._reader:
                break
        self._journal.release()
        if self.depth:
            log.warning(
                "%d request rows are in the journal %s, not in the database yet: the next "
                "router for this database stores them",
                self.depth,
                self._journal.directory,
            )

    async def _stored(self, rows: int) -> None:
        """The indexer stored `rows` of this router's records in all."""
        new = rows - self._written
        if new > 0:
            self._failures = 0
            self._nudged = False
            await self._done(self._order.popleft() for _ in range(new))

    async def _answers(self, proc: asyncio.subprocess.Process) -> None:
        """Read the indexer's answers until it exits; start another unless closing."""
        assert proc.stdout is not None
        try:
            while True:
                kind, count = _ANSWER.unpack(await proc.stdout.readexactly(_ANSWER.size))
                if kind == b"A":
                    await self._stored(count)
                elif kind == b"R":
                    _settle(self._replays.popleft(), count)
                elif kind == b"Q":
                    self._quarantined_elsewhere += count
                else:
                    _settle(self._replays.popleft(), RuntimeError("see the log writer's warning"))
        except asyncio.IncompleteReadError:
            pass
        code = await proc.wait()
        for pending in self._replays:
            _settle(pending, RuntimeError("the log indexer process exited during a replay"))
        self._replays.clear()
        if self._closing and code == 0:
            return
        self._failures += 1
        delay = min(_MAX_BACKOFF_S, 0.1 * 2 ** (self._failures - 1))
        log.error(
            "log indexer process %d exited with %s; starting another in %.1f s (%d rows wait "
            "in the journal)",
            proc.pid,
            code,
            delay,
            self.depth,
        )
        while True:
            await asyncio.sleep(delay)
            try:
                await self._spawn()
                return
            except OSError as exc:  # rows wait in the journal (back-pressure) until one starts
                delay = min(_MAX_BACKOFF_S, delay * 2)
                log.error("cannot start the log indexer process (%s); retry in %.1f s", exc, delay)


def _settle(future: asyncio.Future[int], outcome: int | Exception) -> None:
    """Resolve a replay's future unless its caller stopped waiting (cancelled at shutdown)."""
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


# The child process.


class _Frames:
    """The router's frames, read from a pipe with `select` (one thread, no queue)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def read(self, timeout: float | None) -> list[tuple[Any, ...]] | None:
        """The messages complete within `timeout` seconds (None: wait for data); None once the
        router closed the pipe."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        data = os.read(self.fd, 1 << 20)
        if not data:
            return None
        self.buffer += data
        messages, pos = [], 0
        while len(self.buffer) - pos >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self.buffer, pos)
            end = pos + _LENGTH.size + length
            if end > len(self.buffer):
                break
            messages.append(pickle.loads(self.buffer[pos + _LENGTH.size : end]))
            pos = end
        del self.buffer[:pos]
        return messages


class _Folder:
    """One journal folder being stored: its checkpoint and the reader of its current segment."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.checkpoint = Checkpoint.load(directory)
        self.reader: SegmentReader | None = None

    def next_batch(self, batch_size: int) -> tuple[list[list[Any]], int] | None:
        """The next records to store (as `SegmentReader.read_rows` gives them) and the offset
        after them; moves past finished segments.
        None when nothing more is there now."""
        cp = self.checkpoint
        while True:
            # List before reading: a later segment seen now means this one was complete.
            later = [seq for seq, _ in journal.segments(self.directory) if seq > cp.segment]
            path = self.directory / f"{cp.segment:08d}.jsonl"
            if self.reader is None or self.reader.path != path:
                self.reader = SegmentReader(path)
            try:
                records, offset = self.reader.read_rows(cp.offset, batch_size)
            except FileNotFoundError:
                records, offset = [], cp.offset
            if records:
                return records, offset
            if not later:
                return None
            path.unlink(missing_ok=True)
            cp.segment, cp.offset = later[0], 0
            cp.save(self.directory)

    def torn_tail(self) -> int:
        """Bytes of a last line cut short (only meaningful once the writer is gone)."""
        if self.reader is None or not self.reader.path.exists():
            return 0
        return self.reader.tail_bytes(self.checkpoint.offset)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while one batch is read and stored. A batch's
    thousands of decoded rows, all alive until it is stored, would otherwise set off collection
    after collection, each walking them again; reference counting frees them when the batch
    ends, and the collector resumes for any cycles (-12% CPU per stored row with this
    benchmark's traffic)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def next_interval(
    current: float, *, base: float, longest: float, rows: int, elapsed: float, busy: int
) -> float:
    """The indexer's next interval, after a round that stored `rows` rows that arrived over
    `elapsed` seconds: doubled (up to `longest`) while at least `busy` rows arrive per `base`
    seconds, halved (down to `base`) once fewer than half as many do, else kept."""
    if longest <= base or elapsed <= 0:
        return base
    per_base = rows * base / elapsed
    if per_base >= busy:
        return min(longest, current * 2)
    if per_base < busy / 2:
        return max(base, current / 2)
    return current


class _Indexer:
    """The child's work: store the router's journal folder, and orphaned ones."""

    def __init__(self, store: BatchStore, answers: IO[bytes], config: dict[str, Any]) -> None:
        self.store = store
        self.answers = answers
        self.batch_size: int = config["batch_size"]
        self.interval: float = config["flush_interval_s"]
        self.longest: float = config.get("flush_interval_max_s") or self.interval
        self.wait = self.interval  # the interval now (`pace`)
        self.database_url: str = config["database_url"]
        self.root = Path(config["journal_root"])
        self.own = _Folder(Path(config["journal_dir"]))
        self.reported = False  # whether the router heard of the rows a checkpoint holds
        self.quarantined = 0  # rows quarantined that the router heard of

    def pace(self, rows: int, elapsed: float) -> None:
        """Set the interval (and so the batch size, `cap`) for the next round from the rows
        this one stored (`next_interval`)."""
        self.wait = next_interval(
            self.wait,
            base=self.interval,
            longest=self.longest,
            rows=rows,
            elapsed=elapsed,
            busy=max(1, self.batch_size // 5),
        )

    @property
    def cap(self) -> int:
        """The most rows a batch holds now: `batch_size` per `flush_interval_s` of interval."""
        return round(self.batch_size * self.wait / self.interval)

    def answer(self, kind: bytes, count: int) -> None:
        with contextlib.suppress(BrokenPipeError):  # router gone: go on storing
            self.answers.write(_ANSWER.pack(kind, count))

    def report_quarantined(self) -> None:
        """Tell the router of rows the store quarantined since the last report."""
        new = self.store.quarantined - self.quarantined
        if new > 0:
            self.quarantined += new
            self.answer(b"Q", new)

    def store_folder(self, folder: _Folder, *, own: bool, drain: bool = True) -> None:
        """Store what the folder holds now, a batch at a time (raises if the database refuses;
        the checkpoint keeps what was stored). With `drain` false, stop after the first batch
        that is not full: the rows that arrived while it was stored wait for the next interval
        and go into one batch, instead of a tail of ever smaller ones (in batches of 500 a row
        costs about a third more than in batches of 3500, `bench/results/store_write_cost.md`)."""
        if own and not self.reported:  # a replacement indexer reports what was stored
            self.answer(b"A", folder.checkpoint.rows)
            self.reported = True
        while True:
            with collector_paused():
                batch = folder.next_batch(self.cap)
                if batch is None:
                    break
                records, offset = batch
                self.store.write_rows(records)  # rows it refuses are quarantined
                count = len(records)
                del records, batch  # freed by reference counting, before the collector resumes
            self.report_quarantined()
            cp = folder.checkpoint
            cp.offset, cp.rows = offset, cp.rows + count
            cp.save(folder.directory)
            if own:
                self.answer(b"A", cp.rows)
            if not drain and count < self.cap:
                break

    def finish(self, folder: _Folder) -> None:
        """Store the rest of a folder whose writer is gone, then remove it."""
        self.store_folder(folder, own=folder is self.own)
        if torn := folder.torn_tail():
            log.warning(
                "%s: dropped %d bytes of a journal line cut short by a crash",
                folder.directory.name,
                torn,
            )
        journal.remove(folder.directory)

    def adopt(self) -> None:
        """Store and remove the folders of routers and indexers that are gone."""
        with journal.adopted(self.root, self.database_url, self.own.directory) as folders:
            for directory in folders:
                folder = _Folder(directory)
                log.warning("storing the journal left by %s", directory.name)
                self.finish(folder)

    def replay(self) -> None:
        try:
            replayed = self.store.replay(self.batch_size)
            self.report_quarantined()
            self.answer(b"R", replayed)
        except Exception as exc:  # the database is still down: the router asks again later
            log.warning("replaying spilled request rows failed: %s", exc)
            self.answer(b"E", 0)

    def run(self, frames: _Frames, messages: list[tuple[Any, ...]]) -> None:
        """Store the journal every interval until the router closes the pipe, then the rest."""
        wait = 0.0
        next_adopt = 0.0
        failing = False
        round_at = time.monotonic()
        while True:
            for message in messages:
                if message[0] == "replay":
                    self.replay()
            # Asked to store now (a flush, or a backlog near its bound that requests wait on):
            # store everything there is; otherwise a batch per interval.
            urgent = any(message[0] == "store" for message in messages)
            before = self.own.checkpoint.rows
            try:
                self.store_folder(self.own, own=True, drain=urgent)
                if time.monotonic() >= next_adopt:
                    self.adopt()
                    next_adopt = time.monotonic() + _ADOPT_EVERY_S
            except Exception as exc:  # the database is down: the journal keeps the rows
                if not failing:
                    log.warning("storing the request journal failed, will retry: %s", exc)
                failing = True
                wait = min(_MAX_BACKOFF_S, max(wait * 2, self.interval))
            else:
                if failing:
                    log.warning("storing the request journal works again")
                failing = False
                now = time.monotonic()
                if not urgent:  # rows asked for early say nothing about the rate
                    self.pace(self.own.checkpoint.rows - before, now - round_at)
                    round_at = now
                wait = self.wait
            received = frames.read(wait)
            if received is None:
                break
            messages = received
        try:
            self.finish(self.own)
        except Exception as exc:
            log.warning(
                "the database refused the last request rows (%s); they stay in %s for the next "
                "router for this database",
                exc,
                self.own.directory,
            )


def _lower_priority(nice: int) -> None:
    """Run at `nice` relative to the router. Linux schedules each session as one group
    ("autogroup") when the process is in the root cgroup, and `nice` only orders processes
    within a group: in the router's session the indexer would take whatever CPU the router's
    group is entitled to and the router leaves unused. So the indexer starts a session of its
    own and lowers that group's priority too (`/proc/self/autogroup`). (Under systemd or in a
    container, cgroups replace autogroups and plain `nice` applies within the service.)"""
    if nice <= 0:
        return
    try:
        os.nice(nice)
    except OSError as exc:
        log.warning("cannot lower the log indexer's priority: %s", exc)
        return
    with contextlib.suppress(OSError):
        os.setsid()
        Path("/proc/self/autogroup").write_text(f"{nice}\n")


def main() -> None:
    """Run as the router's log indexer: frames on stdin, answers on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints must not corrupt the answers
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="larrylab log indexer [%(process)d] %(levelname)s: %(message)s",
    )
    frames = _Frames(sys.stdin.fileno())
    first: list[tuple[Any, ...]] | None = []
    while first == []:
        first = frames.read(None)
    if not first or first[0][0] != "config":
        sys.exit("larrylab log indexer: expected a config frame from the router on stdin")
    config: dict[str, Any] = first[0][1]
    if journal.lock_for_indexing(Path(config["journal_dir"])) is None:
        sys.exit(f"larrylab log indexer: another indexer stores {config['journal_dir']}")
    _lower_priority(int(config.get("nice", 0)))

    from larrylab.db import make_engine

    engine = make_engine(config["database_url"], pool_size=1, bulk_writer=True)
    store = BatchStore(engine, SpillDir(Path(config["spill_dir"])))
    indexer = _Indexer(store, answers, config)
    try:
        indexer.run(frames, first[1:])
    finally:
        engine.dispose()
