"""The request journal: what the router appends reads back whole, and only dead routers' folders
are adopted."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import orjson
import pytest

from larrylab.requestlog import _journal as journal
from larrylab.requestlog._journal import JournalWriter, SegmentReader, database_key
from larrylab.requestlog._store import record_values
from tests.requestlog.factories import read_records
from tests.requestlog.factories import records as _records

DB = "sqlite:///some.db"


def _read_all(directory: Path) -> list[journal.RequestRecord]:
    out = []
    for _, path in journal.segments(directory):
        records, _ = read_records(SegmentReader(path), 0, 10**9)
        out += records
    return out


def test_records_read_back_equal(tmp_path: Path) -> None:
    records = _records(50, seed=1)
    records[0].prompt = [{"role": "user", "content": "naïve 🙂 \u2028 text"}]
    writer = JournalWriter(tmp_path, DB)
    writer.append(records[:20])
    writer.append(records[20:])
    assert _read_all(writer.directory) == records


def test_segments_rotate_and_a_reader_stops_before_a_line_being_written(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, DB, segment_bytes=2000)
    records = _records(30, seed=2)
    for rec in records:
        writer.append([rec])
    assert len(journal.segments(writer.directory)) > 3
    assert _read_all(writer.directory) == records
    last = journal.segments(writer.directory)[-1][1]
    whole = last.stat().st_size
    with last.open("ab") as fh:
        fh.write(b'["half a line')
    reader = SegmentReader(last)
    got, offset = read_records(reader, 0, 100)
    assert got and got == records[-len(got) :]
    assert offset == whole  # the partial line is left for later
    assert reader.tail_bytes(offset) == len(b'["half a line')


def test_a_failed_write_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = JournalWriter(tmp_path, DB)
    records = _records(10, seed=3)
    writer.append(records[:5])
    real_write = os.write

    def disk_full(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[:7]))  # part of it reached the file, then the disk was full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.os, "write", disk_full)
    with pytest.raises(OSError):
        writer.append(records[5:])
    monkeypatch.setattr(journal.os, "write", real_write)
    writer.append(records[5:])  # the router tries again later
    assert _read_all(writer.directory) == records


def test_database_key_names_one_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert database_key("sqlite:///a.db") == database_key(f"sqlite:///{tmp_path / 'a.db'}")
    assert database_key("sqlite:///a.db") != database_key("sqlite:///b.db")
    assert database_key("postgresql://u:one@h/db") == database_key("postgresql://u:two@h/db")
    assert database_key("postgresql://u@h/db") != database_key("postgresql://u@h/other")


def test_only_folders_of_gone_routers_for_the_same_database_are_adopted(tmp_path: Path) -> None:
    alive = JournalWriter(tmp_path, DB)
    gone = JournalWriter(tmp_path, DB)
    gone.release()  # its router exited
    other_db = JournalWriter(tmp_path, "sqlite:///other.db")
    other_db.release()
    indexed = JournalWriter(tmp_path, DB)
    indexed.release()
    lock = journal.lock_for_indexing(indexed.directory)  # another indexer stores it
    assert lock is not None
    (tmp_path / f"{database_key(DB)}-stray-file").write_text("not a folder")
    with journal.adopted(tmp_path, DB, skip=alive.directory) as folders:
        assert folders == [gone.directory]
        # held for this caller: a second indexer looking now gets nothing
        with journal.adopted(tmp_path, DB, skip=alive.directory) as again:
            assert again == []
    os.close(lock)


def test_a_reader_read_again_from_the_start_skips_the_header(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, DB)
    records = _records(5, seed=4)
    writer.append(records)
    reader = SegmentReader(journal.segments(writer.directory)[0][1])
    first, _ = read_records(reader, 0, 100)
    again, _ = read_records(reader, 0, 100)  # the store refused the batch: it is read again
    assert first == again == records
    assert reader.skipped == 0


def test_a_segment_with_other_fields_reads_by_name(tmp_path: Path) -> None:
    """A journal written by another version: fields in another order, one this one lacks."""
    rec = _records(3, seed=5)[0]
    fields = [*reversed(journal.RECORD_FIELDS), "added_later"]
    values = [*reversed(record_values(rec)), "ignored"]
    path = tmp_path / "00000001.jsonl"
    header = {"larrylab_journal": 1, "fields": fields}
    path.write_bytes(orjson.dumps(header) + b"\n" + orjson.dumps(values) + b"\n")
    records, _ = read_records(SegmentReader(path), 0, 10)
    assert records == [rec]


def test_version_1_segments_still_read(tmp_path: Path) -> None:
    """A folder left by a router of the previous version (every field in one array, no tail)
    is stored by this version's indexer."""
    records = _records(4, seed=6)
    records[1].prompt = [{"role": "user", "content": "a\ttab"}]
    header = {"larrylab_journal": 1, "fields": journal.RECORD_FIELDS}
    lines = [orjson.dumps(record_values(rec)) + b"\n" for rec in records]
    path = tmp_path / "00000001.jsonl"
    path.write_bytes(orjson.dumps(header) + b"\n" + b"".join(lines))
    assert read_records(SegmentReader(path), 0, 10)[0] == records


def test_lines_keep_the_prompt_as_text_after_a_tab(tmp_path: Path) -> None:
    """The indexer gets each prompt as its JSON text (decoded only as far as it must); a tab
    inside a message is escaped, so the first tab of a line is the separator; a line without
    one is skipped, not stored wrong."""
    records = _records(3, seed=7)
    records[0].prompt = [{"role": "user", "content": "tab\there"}]
    writer = JournalWriter(tmp_path, DB)
    writer.append(records)
    path = journal.segments(writer.directory)[0][1]
    with path.open("ab") as fh:
        fh.write(orjson.dumps(record_values(records[2])) + b"\n")  # a version 1 line: no tab
    reader = SegmentReader(path)
    rows, _ = reader.read_rows(0, 10)
    prompt_at = journal.RECORD_FIELDS.index("prompt")
    assert [orjson.loads(row[prompt_at]) for row in rows] == [r.prompt for r in records]
    assert all(line.count(b"\t") == 1 for line in path.read_bytes().splitlines()[1:4])
    assert reader.skipped == 1


def test_only_a_line_truly_cut_short_counts_as_a_torn_tail(tmp_path: Path) -> None:
    """A folder never stored has its checkpoint at offset 0, before the segment's header: the
    header is no torn line, nor is anything whole after the offset stored so far."""
    writer = JournalWriter(tmp_path, DB)
    ((_, path),) = journal.segments(writer.directory)
    header = len(journal.header())
    assert SegmentReader(path).tail_bytes(0) == 0  # an idle router's segment
    reader = SegmentReader(path)
    assert read_records(reader, 0, 10) == ([], header)
    assert reader.tail_bytes(0) == 0
    writer.append(_records(3, seed=5))
    _, offset = read_records(SegmentReader(path), 0, 10)
    assert SegmentReader(path).tail_bytes(offset) == 0
    with path.open("ab") as fh:
        fh.write(b'["cut')
    assert SegmentReader(path).tail_bytes(offset) == len(b'["cut')
    cut_header = tmp_path / "cut-header.jsonl"
    cut_header.write_bytes(journal.header()[:9])  # a crash while the header was written
    assert SegmentReader(cut_header).tail_bytes(0) == 9
