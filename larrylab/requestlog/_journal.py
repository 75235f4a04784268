"""The request journal: finished requests appended to local files first, stored in the database
after, by a process of lower CPU priority (`requestlog._indexer`).

Storing a request (its row, the new transcript messages, the thread, the rollups) costs several
times the router's own work per request (`bench/results/router_overhead.md`). Appending it to a
file costs about a microsecond. So the router appends, and an indexer process stores what the
journal holds when the CPU allows; under saturation serving comes first and the store lags, up
to a bound (`log_journal_max_rows`) past which the router waits for the indexer.

Layout: one folder per router process under the journal root, named
`<database key>-<host>-<pid>-<random>`, holding
- `writer.lock`: locked (`flock`) by the router for its whole life;
- `indexer.lock`: locked by the indexer that stores this folder;
- segments `00000001.jsonl`, ...: a header line (`{"larrylab_journal": 2, "fields": [...],
  "tail": "prompt"}`), then one line per request: a JSON array of the values of `fields`, a tab,
  and the prompt's messages as a JSON array. The prompt comes apart so that the indexer can
  compare its text with the thread's last chain and decode only the messages it adds
  (`transcripts.ChainCache.chain_json`). Version 1 lines (one array of every field, no tail)
  read as before;
- `checkpoint.json`: the segment and byte offset stored so far, and the rows stored in all.

A line is read back with its text as the store keeps it: U+0000 in a text value becomes U+FFFD
(`logstore.clean_row`; the prompt after the tab is JSON, stored as JSON).

A folder neither lock holds belongs to a router and indexer that are gone (a SIGKILL): any
indexer for the same database adopts it, stores what it holds and deletes it. A line cut short
by a crash is skipped. The database key keeps routers of different databases that share a
journal root apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.engine import make_url

from larrylab.requestlog._store import RECORD_FIELDS, RequestRecord, clean_row

log = logging.getLogger(__name__)

VERSION = 2
_WRITER_LOCK = "writer.lock"
_INDEXER_LOCK = "indexer.lock"
_CHECKPOINT = "checkpoint.json"
_SUFFIX = ".jsonl"
_TIME_FIELDS = frozenset({"created_at", "finished_at"})
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


def encode(records: Sequence[RequestRecord]) -> bytes:
    """Journal lines for `records`."""
    return b"".join([line(r) for r in records])


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


_TIME_INDEXES = tuple(i for i, name in enumerate(RECORD_FIELDS) if name in _TIME_FIELDS)
_CREATED, _FINISHED, _PROMPT = map(RECORD_FIELDS.index, ("created_at", "finished_at", _TAIL))
# Fields a line of another version may lack.
_OPTIONAL: dict[str, Any] = {"prompt": [], "reply": None}


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a segment's lines hold, from its header: the fields of the JSON array, and the
    field after the tab (None: no tab, as in version 1)."""

    fields: tuple[str, ...]
    tail: str | None
    current: bool  # this version's fields, in this version's order

    @classmethod
    def of(cls, fields: Sequence[str], tail: str | None) -> _Layout:
        """The layout of a header's fields and tail."""
        fields = tuple(fields)
        return cls(fields, tail, fields == _HEAD_FIELDS and tail == _TAIL)


def _row(layout: _Layout, line: bytes) -> list[Any]:
    """A record's values in `RECORD_FIELDS` order from one journal line (without its newline):
    times as the line's ISO 8601 text, the prompt as its JSON text (bytes) when the line
    carries it after a tab, else as a list. Raises ValueError for a line that is not a record."""
    tail: bytes | None = None
    if layout.tail is not None:
        cut = line.find(b"\t")
        if cut < 0:
            raise ValueError(f"no tab before the {layout.tail}")
        line, tail = line[:cut], line[cut + 1 :]
    values = orjson.loads(line)
    if type(values) is not list or len(values) != len(layout.fields):
        raise ValueError(f"expected a list of {len(layout.fields)} values")
    if layout.current:
        values.insert(_PROMPT, tail)
        row = values
    else:
        named = dict(zip(layout.fields, values, strict=True))
        if layout.tail is not None:  # the prompt stays text, as in this version's lines
            named[layout.tail] = tail if layout.tail == _TAIL else orjson.loads(tail or b"")
        if missing := [n for n in RECORD_FIELDS if n not in named and n not in _OPTIONAL]:
            raise ValueError(f"missing fields {missing}")
        row = [named[n] if n in named else _OPTIONAL[n] for n in RECORD_FIELDS]
    if type(row[_CREATED]) is not str or type(row[_FINISHED]) is not str:
        raise ValueError("a time is not ISO 8601 text")
    if _ESCAPED_NUL in line:  # rare: a text value holds U+0000, which the store replaces
        clean_row(row)
    return row


def to_record(row: Sequence[Any]) -> RequestRecord:
    """The record of a row `SegmentReader.read_rows` gave."""
    values = list(row)
    for i in _TIME_INDEXES:
        values[i] = datetime.fromisoformat(values[i])
    if type(values[_PROMPT]) is bytes:
        values[_PROMPT] = orjson.loads(values[_PROMPT])
    return RequestRecord(*values)


class SegmentReader:
    """Reads the whole lines of one segment from an offset on; a line still being written (or
    cut short by a crash) is left for later."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._header_bytes = 0  # 0 until the header line was read
        self._layout = _Layout.of(_HEAD_FIELDS, _TAIL)
        self.skipped = 0  # lines that did not parse

    def read(self, offset: int, max_rows: int) -> tuple[list[RequestRecord], int]:
        """Up to `max_rows` records from `offset`, and the offset after them."""
        rows, offset = self.read_rows(offset, max_rows)
        return [to_record(row) for row in rows], offset

    def read_rows(self, offset: int, max_rows: int) -> tuple[list[list[Any]], int]:
        """`read`, each record as its values in `RECORD_FIELDS` order, times as ISO 8601 text
        and the prompt as its JSON text (what `BatchStore.write_rows` takes, with no record
        objects made and no prompt decoded in between)."""
        # A batch is thousands of lines of 1-3 kB: a 1 MB buffer refills a few times per batch
        # instead of every few lines (reading and decoding a line costs about a tenth less).
        with self.path.open("rb", buffering=_READ_BUFFER_BYTES) as fh:
            if not self._header_bytes:
                header = fh.readline()
                if not header.endswith(b"\n"):
                    return [], offset
                head = orjson.loads(header)
                self._layout = _Layout.of(head["fields"], head.get("tail"))
                self._header_bytes = len(header)
            offset = max(offset, self._header_bytes)
            fh.seek(offset)
            rows: list[list[Any]] = []
            layout = self._layout
            while len(rows) < max_rows:
                line = fh.readline()
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                try:
                    rows.append(_row(layout, line[:-1]))
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
        if root.is_dir():
            for directory in sorted(root.iterdir()):
                if directory == skip or not directory.name.startswith(prefix):
                    continue
                try:
                    writer = _try_lock(directory / _WRITER_LOCK)
                except OSError:  # removed meanwhile, or not a folder
                    continue
                if writer is None:
                    continue
                os.close(writer)  # the writer is gone for good; the indexer lock decides
                try:
                    fd = _try_lock(directory / _INDEXER_LOCK)
                except OSError:
                    continue
                if fd is None:
                    continue
                if not directory.is_dir():  # deleted by its indexer just before
                    os.close(fd)
                    continue
                held.append((directory, fd))
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
