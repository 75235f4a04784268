"""Spill files: ratings kept while the database is unreachable, until they are replayed
(`SpillDir`); and the quarantine of rows the database refused (`Quarantine`). How they are
written, replayed and reported: docs/resilience.md, "Database outages" and "Bad rows never
block the others".
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

_NAME = re.compile(
    r"^(?P<kind>[a-z]+)-(?P<pid>\d+)\.jsonl(?:\.replaying-(?P<claimer>\d+)(?:-\d+)?)?$"
)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SpillDir:
    """The spill folder of one router process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._claims = 0

    def append(self, kind: str, rows: Iterable[dict[str, Any]]) -> Path:
        """Append rows to this process's spill file for `kind` and flush them to disk."""
        return _append(self.directory, kind, b"".join(orjson.dumps(row) + b"\n" for row in rows))

    def has(self, kind: str) -> bool:
        """Whether any spill file of `kind` waits here."""
        return bool(self._files(kind))

    def _files(self, kind: str) -> list[tuple[Path, re.Match[str]]]:
        if not self.directory.is_dir():
            return []
        out = []
        for path in sorted(self.directory.iterdir()):
            m = _NAME.match(path.name)
            if m and m["kind"] == kind:
                out.append((path, m))
        return out

    def claim(self, kind: str) -> list[Path]:
        """Take over the files of `kind` this process may replay; returns the claimed paths."""
        me = os.getpid()
        claimed = []
        for path, m in self._files(kind):
            owner = int(m["claimer"] or m["pid"])
            if owner != me and _alive(owner):
                continue
            if m["claimer"] and int(m["claimer"]) == me:
                claimed.append(path)
                continue
            self._claims += 1
            target = path.with_name(f"{kind}-{m['pid']}.jsonl.replaying-{me}-{self._claims}")
            try:
                path.rename(target)
            except FileNotFoundError:  # another process claimed it first
                continue
            claimed.append(target)
        return claimed

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        """The rows of a spill file (a torn last line from a crash is skipped)."""
        rows = []
        for line in path.read_bytes().splitlines():
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return rows


class Quarantine:
    """Rows the database refused, kept with the reason in `<spill dir>/quarantine/<kind>-<pid>
    .jsonl` (one JSON object a line: `kind`, `reason`, `at`, `row`), and how many this process
    put there per kind."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.counts: dict[str, int] = {}

    def add(self, kind: str, entries: Sequence[tuple[dict[str, Any], str]]) -> Path:
        """Append (row, reason) entries for `kind` and flush them to disk."""
        at = datetime.now(UTC).isoformat()
        data = b"".join(
            _json_line({"kind": kind, "reason": reason, "at": at, "row": row})
            for row, reason in entries
        )
        path = _append(self.directory, kind, data)
        self.counts[kind] = self.counts.get(kind, 0) + len(entries)
        return path

    def has_rows(self) -> bool:
        """Whether any quarantine file here holds a row (of this process or another)."""
        if not self.directory.is_dir():
            return False
        return any(
            path.suffix == ".jsonl" and path.stat().st_size > 0 for path in self.directory.iterdir()
        )


def _append(directory: Path, kind: str, data: bytes) -> Path:
    """Append `data` to this process's `<kind>-<pid>.jsonl` in `directory`, flushed to disk."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{kind}-{os.getpid()}.jsonl"
    with path.open("ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def _json_line(entry: dict[str, Any]) -> bytes:
    """One JSON line for a quarantine entry; values orjson cannot write (an integer past 64
    bits, say: often the reason the row was refused) are written by the standard library."""
    try:
        return orjson.dumps(entry) + b"\n"
    except TypeError:
        return json.dumps(entry, default=str).encode() + b"\n"
