"""The request journal: the router appends each finished request to a local folder of its own
(`JournalWriter`, `RequestJournal`) and runs the indexer (`python -m larrylab.requestlog`) that
stores the folder in the database in batches. The folder's layout, the pipe between the two
and why no row is lost: docs/resilience.md, "The request log" and "Crashes and shutdown".
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import pickle
import secrets
import socket
import struct
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from sqlalchemy.engine import make_url

from larrylab.requestlog._spill import Quarantine, SpillDir
from larrylab.requestlog._store import RECORD_FIELDS, RequestRecord, clean_row

log = logging.getLogger(__name__)

LENGTH = struct.Struct("<I")  # a frame to the indexer: its length, then a pickle
ANSWER = struct.Struct("<cQ")  # an answer from the indexer: a kind byte and a count
MAX_BACKOFF_S = 5.0
_APPEND_EVERY_S = 0.01  # a SIGKILL of the router loses at most this interval's records

VERSION = 2
_WRITER_LOCK = "writer.lock"
_INDEXER_LOCK = "indexer.lock"
_CHECKPOINT = "checkpoint.json"
_SUFFIX = ".jsonl"
_READ_BUFFER_BYTES = 1 << 20
_TAIL = "prompt"  # the field a line carries after its tab
_ESCAPED_NUL = b"\\u0000"  # how JSON text holds U+0000
_HEAD_FIELDS = tuple(name for name in RECORD_FIELDS if name != _TAIL)
_head_values = attrgetter(*_HEAD_FIELDS)


def database_key(database_url: str) -> str:
    """A short key naming one database (its URL without the password; SQLite paths resolved)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        url = url.set(database=str(Path(url.database).resolve()))
    text = url.render_as_string(hide_password=True)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _try_lock(path: Path) -> int | None:
    """An open, exclusively locked descriptor on `path`, or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _segment_name(seq: int) -> str:
    return f"{seq:08d}{_SUFFIX}"


def segments(directory: Path) -> list[tuple[int, Path]]:
    """The folder's segments, oldest first."""
    out = []
    for path in directory.glob(f"*{_SUFFIX}"):
        if path.stem.isdigit():
            out.append((int(path.stem), path))
    return sorted(out)


def header() -> bytes:
    """The first line of a segment: the version, and the fields each line holds."""
    head = {"larrylab_journal": VERSION, "fields": _HEAD_FIELDS, "tail": _TAIL}
    return orjson.dumps(head) + b"\n"


def line(record: RequestRecord) -> bytes:
    """The journal line for one record: its other fields, a tab, its prompt (JSON text never
    holds a raw tab: orjson escapes one inside a string)."""
    dumps = orjson.dumps
    return b"".join((dumps(_head_values(record)), b"\t", dumps(record.prompt), b"\n"))


class JournalWriter:
    """The router's side: appends records to its own folder, in segments of about
    `segment_bytes`. Not thread-safe (the router appends from its event loop)."""

    def __init__(self, root: Path, database_url: str, *, segment_bytes: int = 64 << 20) -> None:
        root.mkdir(parents=True, exist_ok=True)
        name = f"{database_key(database_url)}-{socket.gethostname()}-{os.getpid()}"
        self.directory = root / f"{name}-{secrets.token_hex(3)}"
        self.directory.mkdir()
        lock = _try_lock(self.directory / _WRITER_LOCK)
        assert lock is not None, "a new journal folder is locked by no one else"
        self._lock: int | None = lock
        self._segment_bytes = segment_bytes
        self._seq = 0
        self._fd = -1
        self._size = 0
        self._open_next()

    def _open_next(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._seq += 1
        path = self.directory / _segment_name(self._seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0
        self._write(header())

    def _write(self, data: bytes) -> None:
        """Write all of `data` or nothing (a failed write is cut off again, so that no torn
        line is left between whole ones)."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)

    def append(self, records: Sequence[RequestRecord]) -> None:
        """Append records (raises OSError, with nothing appended, if the disk refuses)."""
        self.append_lines([line(r) for r in records])

    def append_lines(self, lines: Sequence[bytes]) -> None:
        """Append journal lines made by `line` (all of them or, if the disk refuses, none)."""
        self._write(b"".join(lines))
        if self._size >= self._segment_bytes:
            self._open_next()

    def close(self) -> None:
        """Close the current segment; the folder stays locked until `release()`."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def release(self) -> None:
        """Unlock the folder (after its indexer has stored and removed it, or exited)."""
        self.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


@dataclass(slots=True)
class Checkpoint:
    """How far a folder was stored: the segment, the byte offset in it, the rows in all."""

    segment: int = 1
    offset: int = 0
    rows: int = 0

    @classmethod
    def load(cls, directory: Path) -> Checkpoint:
        """The folder's checkpoint (the start if it has none)."""
        try:
            data = orjson.loads((directory / _CHECKPOINT).read_bytes())
        except FileNotFoundError:
            return cls()
        return cls(int(data["segment"]), int(data["offset"]), int(data["rows"]))

    def save(self, directory: Path) -> None:
        """Replace the folder's checkpoint atomically."""
        tmp = directory / f"{_CHECKPOINT}.tmp"
        data = {"segment": self.segment, "offset": self.offset, "rows": self.rows}
        tmp.write_bytes(orjson.dumps(data))
        os.replace(tmp, directory / _CHECKPOINT)


_CREATED, _FINISHED, _PROMPT = map(RECORD_FIELDS.index, ("created_at", "finished_at", _TAIL))
# The values of fields a line of another version may lack.
_OPTIONAL: dict[str, Any] = {
    "prompt": [],
    "reply": None,
    "protocol": "openai",
    "ineligible": None,
    "stripped": False,
}


def _row(fields: tuple[str, ...] | None, line: bytes) -> list[Any]:
    """A record's values in `RECORD_FIELDS` order from one journal line (without its newline):
    times as the line's ISO 8601 text, the prompt as its JSON text (bytes) when the line
    carries it after a tab. `fields`: those of the segment's header where they are not this
    version's (then mapped by name; a version 1 line has no tab, its prompt in the array).
    Raises ValueError for a line that is not a record."""
    head, tab, tail = line.partition(b"\t")
    values = orjson.loads(head)
    if type(values) is not list or len(values) != len(fields or _HEAD_FIELDS):
        raise ValueError(f"expected a list of {len(fields or _HEAD_FIELDS)} values")
    if fields is None:
        if not tab:
            raise ValueError(f"no tab before the {_TAIL}")
        values.insert(_PROMPT, tail)
        row = values
    else:
        named = {**_OPTIONAL, **dict(zip(fields, values, strict=True))}
        if tab:
            named[_TAIL] = tail
        if missing := [n for n in RECORD_FIELDS if n not in named]:
            raise ValueError(f"missing fields {missing}")
        row = [named[n] for n in RECORD_FIELDS]
    if type(row[_CREATED]) is not str or type(row[_FINISHED]) is not str:
        raise ValueError("a time is not ISO 8601 text")
    if _ESCAPED_NUL in line:  # rare: a text value holds U+0000, which the store replaces
        clean_row(row)
    return row


class SegmentReader:
    """Reads the whole lines of one segment from an offset on; a line still being written (or
    cut short by a crash) is left for later."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._header_bytes = 0  # 0 until the header line was read
        self._fields: tuple[str, ...] | None = None  # the header's, if not this version's
        self.skipped = 0  # lines that did not parse

    def read_rows(self, offset: int, max_rows: int) -> tuple[list[list[Any]], int]:
        """Up to `max_rows` records from `offset`, and the offset after them; each record as its
        values in `RECORD_FIELDS` order, times as ISO 8601 text and the prompt as its JSON text
        (what `BatchStore.write_rows` takes, with no record objects made in between)."""
        # A batch is thousands of lines of 1-3 kB: a 1 MB buffer refills a few times per batch
        # instead of every few lines (reading and decoding a line costs about a tenth less).
        with self.path.open("rb", buffering=_READ_BUFFER_BYTES) as fh:
            if not self._header_bytes:
                header = fh.readline()
                if not header.endswith(b"\n"):
                    return [], offset
                head = orjson.loads(header)
                fields = tuple(head["fields"])
                current = fields == _HEAD_FIELDS and head.get("tail") == _TAIL
                self._fields = None if current else fields
                self._header_bytes = len(header)
            offset = max(offset, self._header_bytes)
            fh.seek(offset)
            rows: list[list[Any]] = []
            while len(rows) < max_rows:
                line = fh.readline()
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                try:
                    rows.append(_row(self._fields, line[:-1]))
                except ValueError as exc:  # orjson.JSONDecodeError is one
                    self.skipped += 1
                    log.error("skipping an unreadable journal line in %s: %s", self.path, exc)
        return rows, offset

    def tail_bytes(self, offset: int) -> int:
        """Bytes of a line cut short after `offset` (once the writer is gone): what follows the
        last whole line. A whole header is not counted (a folder never stored has its
        checkpoint at offset 0, before it); a header cut short is."""
        with self.path.open("rb") as fh:
            header = fh.readline()
            if header.endswith(b"\n"):
                offset = max(offset, len(header))
            fh.seek(offset)
            rest = fh.read()
        return len(rest) - (rest.rfind(b"\n") + 1)


@contextlib.contextmanager
def adopted(root: Path, database_url: str, skip: Path) -> Iterator[list[Path]]:
    """Folders under `root` for the same database whose router and indexer are gone, locked
    for the caller while it stores them (`skip`: the caller's own folder)."""
    prefix = database_key(database_url) + "-"
    held: list[tuple[Path, int]] = []
    try:
        for directory in sorted(root.iterdir()) if root.is_dir() else ():
            if directory == skip or not directory.name.startswith(prefix):
                continue
            with contextlib.suppress(OSError):  # removed meanwhile, or not a folder
                writer = _try_lock(directory / _WRITER_LOCK)
                if writer is None:
                    continue
                os.close(writer)  # the writer is gone for good; the indexer lock decides
                fd = _try_lock(directory / _INDEXER_LOCK)
                if fd is not None and directory.is_dir():
                    held.append((directory, fd))
                elif fd is not None:  # deleted by its indexer just before
                    os.close(fd)
        yield [d for d, _ in held]
    finally:
        for _, fd in held:
            os.close(fd)


def lock_for_indexing(directory: Path) -> int | None:
    """Lock a folder as its indexer (None if another indexer holds it)."""
    return _try_lock(directory / _INDEXER_LOCK)


def remove(directory: Path) -> None:
    """Delete a folder that was stored entirely."""
    for path in directory.iterdir():
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()


def frame(message: tuple[Any, ...]) -> bytes:
    """A message to the indexer, framed."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(payload)) + payload


class Attribution(NamedTuple):
    """Where a rating belongs: its thread and the experiment arm that served it."""

    thread_id: str
    experiment: str | None
    arm: str | None


class RequestJournal:
    """The router's request log: appends finished requests to its journal folder and runs the
    indexer that stores them. `flush()` waits until the database holds every record submitted
    before it; `close()` has the indexer store everything and waits for it to exit. Ratings
    kept while the database is down (`spill`) and rows it refused (`quarantine`) live under
    `spill_dir`."""

    def __init__(
        self,
        database_url: str,
        *,
        journal_dir: Path = Path("larrylab-journal"),
        spill_dir: Path = Path("larrylab-spill"),
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        flush_interval_max_s: float | None = None,
        max_rows: int = 200_000,
        nice: int = 10,
        segment_bytes: int = 64 << 20,
    ) -> None:
        self.spill = SpillDir(spill_dir)
        self.quarantine = Quarantine(spill_dir / "quarantine")
        self._database_url = database_url
        self._root = journal_dir
        self._segment_bytes = segment_bytes
        self._max_rows = max_rows
        self._config: dict[str, Any] = {
            "database_url": database_url,
            "batch_size": batch_size,
            "flush_interval_s": flush_interval_s,
            "flush_interval_max_s": flush_interval_max_s,  # None: a fixed pace
            "quarantine_dir": str(self.quarantine.directory),
            "journal_root": str(journal_dir),
            "nice": nice,
        }
        self._journal: JournalWriter | None = None
        self._pending: dict[str, Attribution] = {}  # the records not stored yet, by id
        self._order: deque[str] = deque()  # their ids, oldest first
        self._outbox: list[bytes] = []  # journal lines not appended yet
        self._submitted = 0
        self._written = 0
        self._batches = 0
        self._quarantined_by_indexer = 0
        self._progress = asyncio.Condition()
        self._append_timer: asyncio.TimerHandle | None = None
        self._append_failed = False
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._failures = 0  # indexer exits in a row with no progress
        self._nudged = False  # asked the indexer to store now; cleared by its next progress

    @property
    def depth(self) -> int:
        """Records submitted but not stored yet."""
        return self._submitted - self._written

    @property
    def written(self) -> tuple[int, int]:
        """Records stored so far, and the batches they were stored in."""
        return self._written, self._batches

    @property
    def quarantined(self) -> dict[str, int]:
        """Rows quarantined since this router started: request rows (by its indexer) and
        spilled ratings."""
        return {
            "requests": self._quarantined_by_indexer,
            "feedback": self.quarantine.counts.get("feedback", 0),
        }

    @property
    def pid(self) -> int | None:
        """The indexer's process id (None before `start()`)."""
        return self._proc.pid if self._proc else None

    @property
    def journal_folder(self) -> Path | None:
        """This router's journal folder (None before `start()`)."""
        return self._journal.directory if self._journal else None

    def pending(self, request_id: str) -> Attribution | None:
        """The attribution of a request submitted here and not stored yet."""
        return self._pending.get(request_id)

    async def start(self) -> None:
        """Create this router's journal folder and start its indexer."""
        self._journal = JournalWriter(
            self._root, self._database_url, segment_bytes=self._segment_bytes
        )
        self._config["journal_dir"] = str(self._journal.directory)
        await self._spawn()

    async def submit(self, record: RequestRecord) -> None:
        """Journal a record, first waiting while `max_rows` wait (back-pressure, never drop)."""
        while self.depth >= self._max_rows:
            await asyncio.sleep(0.005)
        self.submit_nowait(record)

    def submit_nowait(self, record: RequestRecord) -> None:
        """Journal a record at once, even past the bound (for paths that cannot wait)."""
        if self.depth >= self._max_rows // 2:
            self._nudge()  # the backlog nears its bound: store without waiting for the interval
        self._pending[record.id] = Attribution(record.thread_id, record.experiment, record.arm)
        self._submitted += 1
        self._order.append(record.id)
        # Encoded now, while the request's objects are fresh in the CPU's caches.
        self._outbox.append(line(record))
        if self._append_timer is None:
            loop = asyncio.get_running_loop()
            self._append_timer = loop.call_later(_APPEND_EVERY_S, self._append)

    async def flush(self) -> None:
        """Wait until every record submitted before this call is stored."""
        target = self._submitted
        while self._written < target:
            seen = self._written
            self._nudge()
            async with self._progress:
                await self._progress.wait_for(lambda: self._written > seen)  # noqa: B023

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
        proc.stdin.write(frame(("config", self._config)))
        if self._closing:
            proc.stdin.close()
        self._reader = asyncio.create_task(self._answers(proc), name="larrylab-indexer-answers")

    def _nudge(self) -> None:
        """Append what is waiting and ask the indexer to store it now rather than at its next
        interval (once until it reports progress)."""
        self._append()
        proc = self._proc
        if self._nudged or proc is None or proc.stdin is None or proc.stdin.is_closing():
            return
        self._nudged = True
        proc.stdin.write(frame(("store",)))

    def _append(self) -> None:
        """Append the records submitted since the last append (kept for the next try if the
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

    async def _stored(self, rows: int) -> None:
        """The indexer stored `rows` of this router's records in all."""
        new = rows - self._written
        if new <= 0:
            return
        self._failures = 0
        self._nudged = False
        for _ in range(new):
            self._pending.pop(self._order.popleft(), None)
        async with self._progress:
            self._written += new
            self._batches += 1
            self._progress.notify_all()

    async def _answers(self, proc: asyncio.subprocess.Process) -> None:
        """Read the indexer's answers until it exits; start another unless closing."""
        assert proc.stdout is not None
        try:
            while True:
                kind, count = ANSWER.unpack(await proc.stdout.readexactly(ANSWER.size))
                if kind == b"A":
                    await self._stored(count)
                else:
                    self._quarantined_by_indexer += count
        except asyncio.IncompleteReadError:
            pass
        code = await proc.wait()
        if self._closing and code == 0:
            return
        self._failures += 1
        delay = min(MAX_BACKOFF_S, 0.1 * 2 ** (self._failures - 1))
        log.error(
            "indexer %d exited with %s; starting another in %.1f s (%d rows wait in the journal)",
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
                delay = min(MAX_BACKOFF_S, delay * 2)
                log.error("cannot start the indexer (%s); retry in %.1f s", exc, delay)
