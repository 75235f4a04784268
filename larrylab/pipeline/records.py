"""The one record type passed between pipeline stages, and its JSON-lines files.

Every stage reads records and writes records: an exported thread, a generated variation and a
filtered training example are all a `Record`. Files are written to a temporary name and renamed
when complete, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

ORIGIN_EXPORT = "export"
ORIGIN_GENERATED = "generated"


@dataclass(slots=True)
class Record:
    """One conversation on its way to the training set.

    Attributes:
        id: Unique within a run: the leaf request id for an export, `<source>:<strategy>:<round>`
            for a variation.
        messages: OpenAI chat messages (`role`, `content`), ending with the assistant's reply.
        category: PWS category id (see `larrylab.pipeline.categories`).
        origin: `export` (a rated conversation) or `generated` (a variation of one).
        source_thread_id: The rated thread this record comes from (the split key).
        source_request_ids: Requests whose prompts and replies make up the conversation.
        models: Models that served those requests (lineage).
        strategy: Variation strategy (generated records only).
        meta: Stage annotations: category source, scrub counts, judge scores and rationales.
    """

    id: str
    messages: list[dict[str, Any]]
    category: str
    origin: str
    source_thread_id: str
    source_request_ids: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    strategy: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """One JSON line (without the newline)."""
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: bytes | str) -> Record:
        """Parse a line written by `to_json`."""
        data = orjson.loads(line)
        return cls(**data)

    def text(self, *, include_system: bool = False) -> str:
        """The conversation's text, one message per line (system prompts left out by default)."""
        return "\n".join(
            str(m.get("content") or "")
            for m in self.messages
            if include_system or m.get("role") != "system"
        )


def read_records(path: Path) -> Iterator[Record]:
    """The records of a JSON-lines file, one at a time."""
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield Record.from_json(line)


class RecordIndex:
    """Records of a JSON-lines file by id: offsets in memory, the records themselves on disk.

    Use as a context manager; `entries` lists `(id, category)` in file order.
    """

    def __init__(self, path: Path) -> None:
        self._fh = path.open("rb")
        self._where: dict[str, tuple[int, int]] = {}
        self.entries: list[tuple[str, str]] = []
        offset = 0
        for line in self._fh:
            if line.strip():
                data = orjson.loads(line)
                self._where[data["id"]] = (offset, len(line))
                self.entries.append((data["id"], data["category"]))
            offset += len(line)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, record_id: str) -> Record:
        """The record with this id (read from disk)."""
        offset, length = self._where[record_id]
        return Record.from_json(os.pread(self._fh.fileno(), length, offset))

    def __enter__(self) -> RecordIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


@contextmanager
def atomic_writer(path: Path) -> Iterator[IO[bytes]]:
    """A binary file handle whose content appears at `path` only if the block completes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with tmp.open("wb") as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_records(path: Path, records: Iterable[Record]) -> int:
    """Write `records` as JSON lines (atomically); returns how many were written."""
    n = 0
    with atomic_writer(path) as fh:
        for rec in records:
            fh.write(rec.to_json() + b"\n")
            n += 1
    return n


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def json_sha256(value: Any) -> str:
    """The SHA-256 of a JSON value in canonical form (sorted keys)."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()
