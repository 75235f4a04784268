"""The journal and its indexer: every record stored once, even when the indexer is killed."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from pathlib import Path

import pytest
import uvloop
from sqlalchemy import text

from larrylab.db._engine import make_engine
from larrylab.requestlog._indexer import _Indexer, next_interval
from larrylab.requestlog._journal import JournalWriter, RequestJournal
from larrylab.requestlog._spill import Quarantine
from larrylab.requestlog._store import BatchStore, RequestRecord
from larrylab.rollups import read_rollup, rebuild_rollups
from tests.requestlog.factories import records as _records


def _stored(url: str) -> tuple[int, int]:
    """(request rows, distinct request ids)."""
    with make_engine(url).connect() as conn:
        row = conn.execute(text("SELECT count(*), count(DISTINCT id) FROM request")).one()
    return int(row[0]), int(row[1])


def _rollup_matches_a_recount(url: str) -> None:
    engine = make_engine(url)
    with engine.connect() as conn:
        incremental = read_rollup(conn, "exp")
    rebuild_rollups(engine)
    with engine.connect() as conn:
        recount = read_rollup(conn, "exp")
    for arm in recount:
        assert incremental[arm]["requests"][0] == recount[arm]["requests"][0], arm


def _spied_indexer(
    url: str, tmp_path: Path, **pace: float
) -> tuple[JournalWriter, _Indexer, list[int]]:
    """A router's journal, an indexer of it (run in this process, `pace` its batch size and
    intervals) and the sizes of the batches it stores, as they are stored."""
    journal = JournalWriter(tmp_path / "journal", url)
    store = BatchStore(make_engine(url), Quarantine(tmp_path / "spill" / "quarantine"))
    config = {
        **pace,
        "database_url": url,
        "journal_root": str(tmp_path / "journal"),
        "journal_dir": str(journal.directory),
    }
    batches: list[int] = []
    write_rows = store.write_rows

    def spied(rows: list[list[object]]) -> None:
        batches.append(len(rows))
        write_rows(rows)

    store.write_rows = spied  # type: ignore[method-assign]
    return journal, _Indexer(store, io.BytesIO(), config), batches


def test_every_record_is_stored_once(migrated_url: str, tmp_path: Path) -> None:
    records = _records(400, seed=3)

    async def go() -> None:
        writer = RequestJournal(
            migrated_url, batch_size=37, flush_interval_s=0.02, journal_dir=tmp_path / "journal"
        )
        await writer.start()
        for rec in records:
            await writer.submit(rec)
        await writer.flush()
        assert writer.depth == 0 and writer.pending(records[-1].id) is None
        await writer.close()

    asyncio.run(go())
    assert _stored(migrated_url) == (400, 400)
    _rollup_matches_a_recount(migrated_url)
    assert not list(tmp_path.glob("*.jsonl*"))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # the router runs on uvloop
def test_a_killed_child_is_replaced_and_loses_nothing(
    migrated_url: str, tmp_path: Path, loop: str
) -> None:
    records = _records(600, seed=4)
    pids: list[int | None] = []

    async def go() -> None:
        # A child holds what it received for 0.5 s (it starts in about as long), so each kill,
        # 0.3 s after a child started, finds records it was sent and has not acknowledged.
        writer = RequestJournal(
            migrated_url, batch_size=1000, flush_interval_s=0.5, journal_dir=tmp_path / "journal"
        )
        await writer.start()
        for i, rec in enumerate(records):
            writer.submit_nowait(rec)
            if i in (150, 400):
                while writer.pid in pids:  # the first child's replacement is starting
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.3)
                pids.append(writer.pid)
                assert writer.pid is not None and writer.depth > 0
                os.kill(writer.pid, signal.SIGKILL)
            if i % 25 == 0:
                await asyncio.sleep(0)
        await asyncio.wait_for(writer.close(), timeout=60)  # every record acknowledged
        pids.append(writer.pid)
        assert writer.depth == 0

    (uvloop.run if loop == "uvloop" else asyncio.run)(go())
    assert len(set(pids)) == 3, "each killed child was replaced by a new one"
    assert _stored(migrated_url) == (600, 600)
    _rollup_matches_a_recount(migrated_url)  # records sent twice are counted once


def test_closing_an_idle_writer_stops_its_child(migrated_url: str, tmp_path: Path) -> None:
    async def go() -> int | None:
        writer = RequestJournal(migrated_url, journal_dir=tmp_path / "journal", spill_dir=tmp_path)
        await writer.start()
        await asyncio.wait_for(writer.close(), timeout=30)
        return writer.pid

    pid = asyncio.run(go())
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"indexer {pid} still runs after close()")


def test_closing_a_writer_reports_a_cut_short_line_only_when_there_is_one(
    migrated_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """An idle router's journal holds only a segment header: closing it is no crash."""

    async def go(records: list[RequestRecord]) -> None:
        writer = RequestJournal(
            migrated_url,
            journal_dir=tmp_path / "journal",
            spill_dir=tmp_path,
            flush_interval_s=0.02,
        )
        await writer.start()
        for rec in records:
            writer.submit_nowait(rec)
        await asyncio.wait_for(writer.close(), timeout=30)

    asyncio.run(go([]))
    asyncio.run(go(_records(30, seed=15)))
    assert "cut short" not in capfd.readouterr().err
    assert _stored(migrated_url) == (30, 30)


def test_pending_records_carry_their_attribution(migrated_url: str, tmp_path: Path) -> None:
    records = _records(30, seed=7)

    async def go() -> None:
        writer = RequestJournal(
            migrated_url,
            journal_dir=tmp_path / "journal",
            spill_dir=tmp_path,
            flush_interval_s=0.05,
        )
        await writer.start()
        for rec in records:
            writer.submit_nowait(rec)
        first = records[0]
        assert writer.pending(first.id) == (first.thread_id, first.experiment, first.arm)
        await writer.flush()
        assert writer.pending(first.id) is None
        await writer.close()

    asyncio.run(go())


def _nice(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19: nice


def test_segments_rotate_and_the_indexer_runs_at_lower_priority(
    migrated_url: str, tmp_path: Path
) -> None:
    records = _records(300, seed=8)

    async def go() -> tuple[int, int]:
        writer = RequestJournal(
            migrated_url,
            journal_dir=tmp_path / "journal",
            spill_dir=tmp_path,
            flush_interval_s=0.02,
            nice=7,
            segment_bytes=4000,
        )
        await writer.start()
        assert writer.pid is not None and writer.journal_folder is not None
        for i, rec in enumerate(records):
            await writer.submit(rec)
            if i % 10 == 0:
                await asyncio.sleep(0.011)  # one append per 10 ms
        await writer.flush()
        niceness = _nice(writer.pid)
        segments_left = len(list(writer.journal_folder.glob("*.jsonl")))
        await writer.close()
        assert not writer.journal_folder.exists()
        return niceness, segments_left

    niceness, segments_left = asyncio.run(go())
    assert niceness == os.nice(0) + 7
    assert segments_left <= 2  # stored segments are deleted (300 records made about 30)
    assert _stored(migrated_url) == (300, 300)
    _rollup_matches_a_recount(migrated_url)


def test_the_journal_of_a_dead_router_is_adopted(
    migrated_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from larrylab.requestlog._journal import JournalWriter

    orphan = _records(120, seed=9)
    other = _records(5, seed=10)
    root = tmp_path / "journal"
    dead = JournalWriter(root, migrated_url)  # a router SIGKILLed with its indexer
    dead.append(orphan[:100])
    dead.append(orphan[100:])
    with (sorted(dead.directory.glob("*.jsonl"))[-1]).open("ab") as fh:
        fh.write(b'["chatcmpl-cut-short", "t1"')  # a line cut short by the crash
    dead.release()
    foreign = JournalWriter(root, "sqlite:///another-database.db")
    foreign.append(other)
    foreign.release()

    async def go() -> None:
        writer = RequestJournal(
            migrated_url,
            journal_dir=tmp_path / "journal",
            spill_dir=tmp_path,
            flush_interval_s=0.02,
        )
        await writer.start()
        for _ in range(300):
            if not dead.directory.exists():
                break
            await asyncio.sleep(0.05)
        await writer.close()

    asyncio.run(go())
    assert "dropped 27 bytes of a journal line cut short by a crash" in capfd.readouterr().err
    assert not dead.directory.exists()
    assert foreign.directory.exists(), "another database's journal is left alone"
    assert _stored(migrated_url) == (120, 120)
    _rollup_matches_a_recount(migrated_url)


def test_rows_wait_in_the_journal_while_the_database_is_away(tmp_path: Path) -> None:
    from larrylab.db._engine import upgrade

    url = f"sqlite:///{tmp_path / 'late.db'}"  # not migrated yet: every write fails
    records = _records(80, seed=11)

    async def go() -> None:
        writer = RequestJournal(
            url,
            journal_dir=tmp_path / "journal",
            spill_dir=tmp_path / "spill",
            flush_interval_s=0.02,
        )
        await writer.start()
        for rec in records:
            writer.submit_nowait(rec)
        await asyncio.sleep(1.0)
        assert writer.depth == 80  # nothing stored, nothing lost
        await asyncio.to_thread(upgrade, url)
        await asyncio.wait_for(writer.flush(), timeout=30)
        await writer.close()

    asyncio.run(go())
    assert _stored(url) == (80, 80)
    assert not list((tmp_path / "spill").glob("*.jsonl"))  # no spill file: the journal held them


def test_a_flush_or_a_nearly_full_backlog_does_not_wait_for_the_interval(
    migrated_url: str, tmp_path: Path
) -> None:
    records = _records(300, seed=12)

    async def go() -> float:
        # The indexer's interval is a minute; at most 40 rows may wait.
        writer = RequestJournal(
            migrated_url,
            journal_dir=tmp_path / "journal",
            spill_dir=tmp_path,
            flush_interval_s=60,
            max_rows=40,
        )
        await writer.start()
        t0 = time.monotonic()
        for rec in records:
            await writer.submit(rec)
        await writer.flush()
        elapsed = time.monotonic() - t0
        await writer.close()
        return elapsed

    assert asyncio.run(go()) < 30
    assert _stored(migrated_url) == (300, 300)


def test_a_backlog_goes_in_full_batches_late_rows_wait_for_the_interval_unless_asked_now(
    migrated_url: str, tmp_path: Path
) -> None:
    records = _records(160, seed=13)
    journal, indexer, batches = _spied_indexer(
        migrated_url, tmp_path, batch_size=37, flush_interval_s=0.5
    )
    journal.append(records[:100])
    write_rows = indexer.store.write_rows

    def appending(rows: list[list[object]]) -> None:
        write_rows(rows)
        if len(batches) == 3:  # the router goes on appending while a batch is stored
            journal.append(records[100:110])
        if len(batches) == 5:
            journal.append(records[131:])

    indexer.store.write_rows = appending  # type: ignore[method-assign]
    # A backlog goes in full batches back to back; the last, not full, ends this interval's
    # work: the 10 rows appended meanwhile wait for the next interval.
    indexer.store_folder(indexer.own, own=True, drain=False)
    assert batches == [37, 37, 26]
    assert _stored(migrated_url) == (100, 100)
    journal.append(records[110:130])
    indexer.store_folder(indexer.own, own=True, drain=False)
    assert batches == [37, 37, 26, 30]  # one batch for all the rows of the interval
    assert _stored(migrated_url) == (130, 130)
    # Asked to store now (a flush, or requests waiting on a full backlog): everything there is,
    # the rows appended meanwhile included.
    journal.append(records[130:131])
    indexer.store_folder(indexer.own, own=True, drain=True)
    assert batches == [37, 37, 26, 30, 1, 29]
    assert _stored(migrated_url) == (160, 160)
    journal.release()


def test_the_interval_grows_while_many_rows_arrive_and_falls_back_when_few_do() -> None:
    pace = {"base": 1.0, "longest": 4.0, "busy": 1000}
    assert next_interval(1.0, rows=1000, elapsed=1.0, **pace) == 2.0
    assert next_interval(2.0, rows=2400, elapsed=2.0, **pace) == 4.0
    assert next_interval(4.0, rows=9000, elapsed=4.0, **pace) == 4.0  # never past the longest
    assert next_interval(4.0, rows=3000, elapsed=4.0, **pace) == 4.0  # 750 per second: kept
    assert next_interval(4.0, rows=1000, elapsed=4.0, **pace) == 2.0  # 250 per second: halved
    assert next_interval(2.0, rows=0, elapsed=2.0, **pace) == 1.0
    assert next_interval(1.0, rows=0, elapsed=1.0, **pace) == 1.0  # never under the base
    # A longest interval no longer than the base keeps the pace fixed.
    assert next_interval(1.0, rows=10**6, elapsed=1.0, base=1.0, longest=1.0, busy=1000) == 1.0


def test_a_busy_indexer_stores_larger_batches_less_often(migrated_url: str, tmp_path: Path) -> None:
    records = _records(400, seed=14)
    journal, indexer, batches = _spied_indexer(
        migrated_url, tmp_path, batch_size=40, flush_interval_s=0.5, flush_interval_max_s=2.0
    )
    journal.append(records[:30])
    indexer.store_folder(indexer.own, own=True, drain=False)
    indexer.pace(30, 0.5)  # 30 rows in half a second, a fifth of a batch is 8: busy
    assert (indexer.wait, indexer.cap) == (1.0, 80)
    indexer.pace(60, 1.0)
    assert (indexer.wait, indexer.cap) == (2.0, 160)
    journal.append(records[30:230])
    indexer.store_folder(indexer.own, own=True, drain=False)
    assert batches == [30, 160, 40]  # the backlog in batches of the grown size
    indexer.pace(200, 2.0)
    assert (indexer.wait, indexer.cap) == (2.0, 160)  # still busy: no longer than the longest
    indexer.pace(4, 2.0)  # one row per half second: quiet
    assert (indexer.wait, indexer.cap) == (1.0, 80)
    indexer.pace(0, 1.0)
    assert (indexer.wait, indexer.cap) == (0.5, 40)
    journal.append(records[230:])
    indexer.store_folder(indexer.own, own=True, drain=True)
    assert batches == [30, 160, 40, 40, 40, 40, 40, 10]
    assert _stored(migrated_url) == (400, 400)
    journal.release()
