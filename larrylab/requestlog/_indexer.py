"""The indexer: the child process (`python -m larrylab.requestlog`, at lower CPU priority) that
stores a router's journal folder in the database in batches, paced to the rows arriving
(`next_interval`), and the folders of routers that are gone. How it works: docs/resilience.md,
"The request log".
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import select
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from larrylab.requestlog import _journal as journal
from larrylab.requestlog._journal import ANSWER, LENGTH, MAX_BACKOFF_S, Checkpoint, SegmentReader
from larrylab.requestlog._spill import Quarantine
from larrylab.requestlog._store import BatchStore

log = logging.getLogger(__name__)

_ADOPT_EVERY_S = 5.0


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
        while len(self.buffer) - pos >= LENGTH.size:
            (length,) = LENGTH.unpack_from(self.buffer, pos)
            end = pos + LENGTH.size + length
            if end > len(self.buffer):
                break
            messages.append(pickle.loads(self.buffer[pos + LENGTH.size : end]))
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
        """The next rows to store (`SegmentReader.read_rows`) and the offset after them, moving
        past finished segments; None when nothing more is there now."""
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
    """Pause the cyclic garbage collector while one batch is read and stored: its thousands
    of live rows would set off collection after collection (-12% CPU per stored row)."""
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
            self.answers.write(ANSWER.pack(kind, count))

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

    def run(self, frames: _Frames, messages: list[tuple[Any, ...]]) -> None:
        """Store the journal every interval until the router closes the pipe, then the rest."""
        wait = 0.0
        next_adopt = 0.0
        failing = False
        round_at = time.monotonic()
        while True:
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
                wait = min(MAX_BACKOFF_S, max(wait * 2, self.interval))
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
    """Run at `nice` relative to the router, in a session of its own whose autogroup gets the
    same `nice` (Linux orders processes by `nice` only within an autogroup)."""
    if nice <= 0:
        return
    try:
        os.nice(nice)
    except OSError as exc:
        log.warning("cannot lower the indexer's priority: %s", exc)
        return
    with contextlib.suppress(OSError):
        os.setsid()
        Path("/proc/self/autogroup").write_text(f"{nice}\n")


def main() -> None:
    """Run as the router's indexer: frames on stdin, answers on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints must not corrupt the answers
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="larrylab indexer [%(process)d] %(levelname)s: %(message)s",
    )
    frames = _Frames(sys.stdin.fileno())
    first: list[tuple[Any, ...]] | None = []
    while first == []:
        first = frames.read(None)
    if not first or first[0][0] != "config":
        sys.exit("larrylab indexer: expected a config frame from the router on stdin")
    config: dict[str, Any] = first[0][1]
    if journal.lock_for_indexing(Path(config["journal_dir"])) is None:
        sys.exit(f"larrylab indexer: another indexer stores {config['journal_dir']}")
    _lower_priority(int(config.get("nice", 0)))

    from larrylab.db import make_engine

    engine = make_engine(config["database_url"], pool_size=1, bulk_writer=True)
    store = BatchStore(engine, Quarantine(Path(config["quarantine_dir"])))
    indexer = _Indexer(store, answers, config)
    try:
        indexer.run(frames, first[1:])
    finally:
        engine.dispose()
