"""Rows the store cannot take as they are: NUL characters stored the same way on SQLite and
PostgreSQL, a row the database still refuses quarantined with its reason while the rest of its
batch is stored, and spilled ratings that wait for the request they rate."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from larrylab.db._engine import make_engine
from larrylab.db._schema import utcnow
from larrylab.experiments._feedback import (
    Attribution,
    attribute_thread,
    replay_feedback,
    upsert_feedback,
)
from larrylab.requestlog._journal import JournalWriter, RequestJournal, SegmentReader, segments
from larrylab.requestlog._spill import Quarantine, SpillDir
from larrylab.requestlog._store import BatchStore, RequestRecord
from larrylab.requestlog._transcripts import rebuild
from larrylab.rollups import read_rollup, rebuild_rollups
from tests.requestlog.factories import records as _records

NUL, REPLACEMENT = "\x00", "\ufffd"


def _journal_rows(url: str, tmp_path: Path, records: list[RequestRecord]) -> list[list[Any]]:
    """`records` as the indexer reads them back from a router's journal."""
    folder = JournalWriter(tmp_path / "journal", url)
    folder.append(records)
    folder.release()
    rows, _ = SegmentReader(segments(folder.directory)[0][1]).read_rows(0, 10**6)
    return rows


def _quarantined(spill: Path, kind: str) -> list[dict[str, Any]]:
    out = []
    for path in sorted((spill / "quarantine").glob(f"{kind}-*.jsonl")):
        out += [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return out


def _rollup_requests(url: str) -> tuple[dict[str, int], dict[str, int]]:
    """Requests per arm as the running totals count them, and as a recount from the rows."""
    engine = make_engine(url)
    with engine.connect() as conn:
        running = {arm: int(v["requests"][0]) for arm, v in read_rollup(conn, "exp").items()}
    rebuild_rollups(engine)
    with engine.connect() as conn:
        recount = {arm: int(v["requests"][0]) for arm, v in read_rollup(conn, "exp").items()}
    return running, recount


@pytest.mark.parametrize("path", ["journal", "records"])
def test_nul_in_text_is_stored_the_same_way_on_both_stores(
    migrated_url: str, tmp_path: Path, path: str
) -> None:
    """U+0000 in a text column becomes U+FFFD (PostgreSQL refuses NUL in text; SQLite stores
    the same); message bodies are JSON, where NUL stays `\\u0000`, so transcripts keep it."""
    records = _records(5, seed=21)
    bad = replace(
        records[2],
        thread_id=f"a{NUL}b",
        error_message=f"upstream{NUL}said",
        upstream_model=f"m{NUL}",
        prompt=[{"role": "user", "content": f"x{NUL}y"}],
        reply={"role": "assistant", "content": f"z{NUL}"},
    )
    records[2] = bad
    store = BatchStore(make_engine(migrated_url), Quarantine(tmp_path / "spill" / "quarantine"))
    if path == "journal":
        store.write_rows(_journal_rows(migrated_url, tmp_path, records))
    else:
        store.write(records)
    engine = make_engine(migrated_url)
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT thread_id, error_message, upstream_model, reply_message_id FROM request "
                "WHERE id = :id"
            ),
            {"id": bad.id},
        ).one()
        assert tuple(row[:3]) == (
            f"a{REPLACEMENT}b",
            f"upstream{REPLACEMENT}said",
            f"m{REPLACEMENT}",
        )
        threads = {r[0] for r in conn.execute(text("SELECT id FROM thread"))}
        assert f"a{REPLACEMENT}b" in threads
        assert rebuild(conn, f"a{REPLACEMENT}b", row[3]) == [*bad.prompt, bad.reply]
        count = conn.execute(text("SELECT count(*) FROM request")).scalar()
    assert count == 5
    assert store.quarantined == 0
    # A rating that names the thread as the client sent it finds it.
    found = attribute_thread(engine, f"a{NUL}b")
    assert found is not None and found.thread_id == f"a{REPLACEMENT}b"


def test_a_row_the_database_refuses_is_quarantined_and_the_rest_stored(
    migrated_url: str, tmp_path: Path
) -> None:
    """A token count past a signed 64-bit integer is refused by both stores: that row goes to
    the quarantine file with the reason, every other row of its batch is stored and counted
    once."""
    records = _records(60, seed=22)
    records[17] = replace(records[17], prompt_tokens=2**63 + 5)
    records[40] = replace(records[40], completion_tokens=2**64 - 1)
    records[41] = replace(records[41], finished_at="yesterday")  # type: ignore[arg-type]
    spill = tmp_path / "spill"
    store = BatchStore(make_engine(migrated_url), Quarantine(spill / "quarantine"))
    store.write_rows(_journal_rows(migrated_url, tmp_path, records))
    with make_engine(migrated_url).connect() as conn:
        stored = {r[0] for r in conn.execute(text("SELECT id FROM request"))}
    assert stored == {r.id for r in records} - {"r17", "r40", "r41"}
    assert store.quarantined == 3
    entries = _quarantined(spill, "requests")
    assert sorted(e["row"]["id"] for e in entries) == ["r17", "r40", "r41"]
    assert all(e["reason"] for e in entries)
    assert entries[0]["row"]["prompt"] == records[int(entries[0]["row"]["id"][1:])].prompt
    running, recount = _rollup_requests(migrated_url)
    assert running == recount
    # The store goes on: the next batch is stored as usual.
    store.write_rows(_journal_rows(migrated_url, tmp_path / "next", _records(90, seed=23)[60:]))
    with make_engine(migrated_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM request")).scalar() == 57 + 30


def test_the_indexer_goes_past_a_refused_row(migrated_url: str, tmp_path: Path) -> None:
    """The journal's indexer quarantines a refused row and stores what follows; the router
    hears of it (its count feeds `/healthz` and `/metrics`)."""
    records = _records(120, seed=24)
    records[50] = replace(records[50], prompt_tokens=2**63)

    async def go() -> dict[str, int]:
        writer = RequestJournal(
            migrated_url,
            journal_dir=tmp_path / "journal",
            spill_dir=tmp_path / "spill",
            batch_size=40,
            flush_interval_s=0.02,
        )
        await writer.start()
        for rec in records:
            await writer.submit(rec)
        await asyncio.wait_for(writer.flush(), timeout=60)
        quarantined = writer.quarantined
        await writer.close()
        return quarantined

    assert asyncio.run(go()) == {"requests": 1, "feedback": 0}
    with make_engine(migrated_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM request")).scalar() == 119
    assert [e["row"]["id"] for e in _quarantined(tmp_path / "spill", "requests")] == ["r50"]
    assert Quarantine(tmp_path / "spill" / "quarantine").has_rows()


def _spill_rating(spill: SpillDir, received_at: Any = None, **fields: Any) -> None:
    row = {"request_id": None, "thread_id": None, "score": 4, "comment": None, "source": "user"}
    row.update(fields)
    row["received_at"] = (received_at or utcnow()).isoformat()
    spill.append("feedback", [row])


def _ratings(url: str) -> dict[str, int]:
    with make_engine(url).connect() as conn:
        return {r[0]: r[1] for r in conn.execute(text("SELECT target, score FROM feedback"))}


def test_spilled_ratings_wait_for_the_request_they_rate(migrated_url: str, tmp_path: Path) -> None:
    """A rating accepted during an outage is kept until its request (or thread) is stored,
    attributed from the router's memory if it served the request; only a rating still unknown
    a week after it was received is dropped."""
    records = _records(9, seed=25)
    engine = make_engine(migrated_url)
    store = BatchStore(engine, Quarantine(tmp_path / "spill" / "quarantine"))
    store.write(records[:3])  # stored before the outage
    spill = SpillDir(tmp_path / "spill")
    quarantine = Quarantine(tmp_path / "spill" / "quarantine")
    _spill_rating(spill, request_id="r0", score=1)
    _spill_rating(spill, request_id="r4", score=2)  # stored later
    _spill_rating(spill, thread_id=records[5].thread_id + "-new", score=3)  # a thread stored later
    _spill_rating(spill, request_id="r6", score=5)  # served here, in the router's memory
    _spill_rating(spill, request_id="gone", received_at=utcnow() - timedelta(days=8))
    memory = {"r6": Attribution(records[6].thread_id, records[6].experiment, records[6].arm)}

    first = replay_feedback(engine, spill, quarantine, pending=memory.get)
    assert (first.written, first.waiting, first.dropped, first.quarantined) == (2, 2, 1, 0)
    assert _ratings(migrated_url) == {"request:r0": 1, "request:r6": 5}
    assert spill.has("feedback")  # the two that wait are kept

    later = [records[4], replace(records[5], thread_id=records[5].thread_id + "-new")]
    store.write(later)
    second = replay_feedback(engine, spill, quarantine, pending=memory.get)
    assert (second.written, second.waiting, second.dropped) == (2, 0, 0)
    assert _ratings(migrated_url) == {
        "request:r0": 1,
        "request:r4": 2,
        f"thread:{records[5].thread_id}-new": 3,
        "request:r6": 5,
    }
    assert not spill.has("feedback")


def test_a_spilled_rating_never_overwrites_a_newer_one(migrated_url: str, tmp_path: Path) -> None:
    """Ratings replay oldest first, whatever file they were in; a rating stored since (the
    database back, the client rating again) is newer than any spilled one and stands."""
    engine = make_engine(migrated_url)
    records = _records(3, seed=26)
    BatchStore(engine, Quarantine(tmp_path / "spill" / "quarantine")).write(records)
    spill = SpillDir(tmp_path / "spill")
    quarantine = Quarantine(tmp_path / "spill" / "quarantine")
    now = utcnow()
    _spill_rating(spill, request_id="r1", score=5, received_at=now - timedelta(seconds=1))
    _spill_rating(spill, request_id="r1", score=2, received_at=now - timedelta(seconds=9))
    _spill_rating(spill, request_id="r2", score=1, received_at=now - timedelta(seconds=9))
    target = Attribution(records[2].thread_id, records[2].experiment, records[2].arm)
    upsert_feedback(engine, target=target, request_id="r2", score=4, comment=None, source="user")
    result = replay_feedback(engine, spill, quarantine)
    assert (result.written, result.superseded) == (2, 1)
    assert _ratings(migrated_url) == {"request:r1": 5, "request:r2": 4}


def test_a_rating_the_database_refuses_is_quarantined(migrated_url: str, tmp_path: Path) -> None:
    """A spilled rating whose row the database refuses does not hold up the others."""
    engine = make_engine(migrated_url)
    BatchStore(engine, Quarantine(tmp_path / "spill" / "quarantine")).write(_records(3, seed=27))
    spill = SpillDir(tmp_path / "spill")
    quarantine = Quarantine(tmp_path / "spill" / "quarantine")
    _spill_rating(spill, request_id="r0", score=2**63)  # not a 1-5 score: a damaged file
    _spill_rating(spill, request_id="r1", score=3, comment=f"fine{NUL}")
    result = replay_feedback(engine, spill, quarantine)
    assert (result.written, result.quarantined) == (1, 1)
    assert quarantine.counts == {"feedback": 1}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT comment FROM feedback")).scalar() == f"fine{REPLACEMENT}"
    (entry,) = _quarantined(tmp_path / "spill", "feedback")
    assert entry["row"]["request_id"] == "r0" and entry["reason"]
    assert not spill.has("feedback")
    assert os.listdir(tmp_path / "spill" / "quarantine") == [f"feedback-{os.getpid()}.jsonl"]
