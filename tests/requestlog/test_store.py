"""The store on SQLite and PostgreSQL: migrations, linear transcripts, feedback, summaries."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select, text
from sqlmodel import Session

from larrylab.config import ArmSpec, ExperimentSpec, ModelSpec
from larrylab.db._engine import current_revision, head_revision, make_engine
from larrylab.db._schema import Message, RequestLog
from larrylab.experiments._arm_report import arm_reports
from larrylab.experiments._experiments import create_experiment
from larrylab.experiments._feedback import Attribution, attribute_request, upsert_feedback
from larrylab.release._registry import create_model
from larrylab.requestlog import _journal as journal
from larrylab.requestlog._journal import JournalWriter, SegmentReader
from larrylab.requestlog._spill import Quarantine
from larrylab.requestlog._store import BatchStore, RequestRecord
from larrylab.requestlog._transcripts import rebuild
from tests.conftest import write_records

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _record(
    rid: str,
    thread: str,
    prompt: list[dict[str, Any]],
    reply: str,
    *,
    arm: str = "a",
    latency: float = 100.0,
    status: str = "ok",
) -> RequestRecord:
    return RequestRecord(
        id=rid,
        thread_id=thread,
        unit_source="user",
        route="larry",
        experiment="exp",
        arm=arm,
        model=arm,
        upstream_model=arm,
        stream=False,
        status=status,
        http_status=200 if status == "ok" else 502,
        error_class=None,
        error_message=None,
        fallback_from=None,
        latency_ms=latency,
        ttft_ms=latency / 2,
        upstream_ms=latency - 1,
        overhead_ms=1.0,
        prompt_tokens=3,
        completion_tokens=4,
        protocol="openai",
        ineligible=None,
        stripped=False,
        created_at=T0,
        finished_at=T0 + timedelta(milliseconds=latency),
        prompt=prompt,
        reply={"role": "assistant", "content": reply},
    )


def _write(url: str, records: list[RequestRecord]) -> None:
    write_records(url, records, batch_size=7)


def test_migration_creates_every_table(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    tables = set(inspect(engine).get_table_names())
    assert {
        "model",
        "route",
        "experiment",
        "arm",
        "thread",
        "message",
        "request",
        "feedback",
    } <= tables
    assert current_revision(engine) == head_revision()


def test_sqlite_uses_wal_and_busy_timeout(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 10000


def test_sqlite_binds_none_and_bools_as_before(tmp_path: Any) -> None:
    """The engine registers cheaper adapters for None and bool (`db._cheap_sqlite_binding`):
    the driver must still store NULL, 1 and 0, and read them back as such."""
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (v)")
        conn.exec_driver_sql("INSERT INTO t (v) VALUES (?)", [(None,), (True,), (False,)])
        got = conn.exec_driver_sql("SELECT v, typeof(v) FROM t ORDER BY rowid").all()
    assert [tuple(row) for row in got] == [(None, "null"), (1, "integer"), (0, "integer")]


def _conversation(turns: int) -> list[RequestRecord]:
    """A thread of `turns` requests, each resending the whole history, as chat clients do."""
    history: list[dict[str, Any]] = [{"role": "system", "content": "You are Larry."}]
    out = []
    for i in range(turns):
        history.append({"role": "user", "content": f"question {i}"})
        out.append(_record(f"r{i}", "t1", list(history), f"answer {i}"))
        history.append({"role": "assistant", "content": f"answer {i}"})
    return out


def test_transcript_grows_linearly_and_rebuilds_exactly(migrated_url: str) -> None:
    records = _conversation(30)
    _write(migrated_url, records)
    engine = make_engine(migrated_url)
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(Message.__table__)).scalar()  # type: ignore[attr-defined]
        # 1 system + 30 user + 30 assistant messages: each stored once, not once per request.
        assert stored == 61
        for rec in records:
            row = conn.execute(
                select(
                    RequestLog.__table__.c.prompt_message_id,
                    RequestLog.__table__.c.reply_message_id,
                ).where(RequestLog.__table__.c.id == rec.id)  # type: ignore[attr-defined]  # type: ignore[attr-defined]
            ).one()
            assert rebuild(conn, "t1", row[0]) == rec.prompt
            assert rebuild(conn, "t1", row[1]) == [*rec.prompt, rec.reply]


def test_edited_history_branches_without_losing_either_version(migrated_url: str) -> None:
    base = [{"role": "user", "content": "hello"}]
    first = _record("r1", "t2", base, "hi")
    edited = _record(
        "r2",
        "t2",
        [
            *base,
            {"role": "assistant", "content": "hi (edited)"},
            {"role": "user", "content": "next"},
        ],
        "ok",
    )
    _write(migrated_url, [first, edited])
    with make_engine(migrated_url).connect() as conn:
        c = RequestLog.__table__.c  # type: ignore[attr-defined]
        ids = dict(conn.execute(select(c.id, c.reply_message_id)).all())
        assert rebuild(conn, "t2", ids["r1"]) == [*base, {"role": "assistant", "content": "hi"}]
        assert rebuild(conn, "t2", ids["r2"])[1]["content"] == "hi (edited)"


def _store_from_journal(url: str, records: list[RequestRecord], tmp: Path) -> SegmentReader:
    """Store `records` as the indexer does: appended to a journal, read back as rows (prompts
    as JSON text), stored in batches of 7."""
    writer = JournalWriter(tmp / "journal", url)
    writer.append(records)
    reader = SegmentReader(journal.segments(writer.directory)[0][1])
    store = BatchStore(make_engine(url), Quarantine(tmp / "spill" / "quarantine"))
    offset = 0
    while True:
        rows, offset = reader.read_rows(offset, 7)
        if not rows:
            return reader
        store.write_rows(rows)


def test_journal_rows_store_the_transcripts_records_do(migrated_url: str, tmp_path: Path) -> None:
    """Prompts the journal holds as text, compared as text where a thread goes on: the same
    messages, each stored once, and the same links as records give, branches included."""
    records = _conversation(30)
    records.append(
        _record("edit", "t1", [*records[3].prompt[:-1], {"role": "user", "content": "?"}], "!")
    )
    records.append(_record("again", "t1", records[29].prompt, "answer 29 again"))
    _store_from_journal(migrated_url, records, tmp_path)
    with make_engine(migrated_url).connect() as conn:
        stored = conn.execute(select(func.count()).select_from(Message.__table__)).scalar()  # type: ignore[attr-defined]
        assert stored == 61 + 2 + 1  # the edit and its reply, the second answer
        c = RequestLog.__table__.c  # type: ignore[attr-defined]
        links = {
            r[0]: (r[1], r[2])
            for r in conn.execute(select(c.id, c.prompt_message_id, c.reply_message_id))
        }
        for rec in records:
            prompt_id, reply_id = links[rec.id]
            assert rebuild(conn, "t1", prompt_id) == rec.prompt
            assert rebuild(conn, "t1", reply_id) == [*rec.prompt, rec.reply]


def test_a_damaged_prompt_in_the_journal_keeps_its_request(
    migrated_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A prompt whose text does not decode (a damaged disk) costs the request its transcript
    links, not its row, and not the rest of its batch."""
    records = _conversation(3)
    folder = JournalWriter(tmp_path / "journal", migrated_url)
    folder.append(records)
    path = journal.segments(folder.directory)[0][1]
    lines = path.read_bytes().split(b"\n")
    head, _, prompt = lines[2].partition(b"\t")
    lines[2] = head + b"\t" + prompt[:-9]  # the second request's prompt, cut short
    path.write_bytes(b"\n".join(lines))
    rows, _ = SegmentReader(path).read_rows(0, 10)
    BatchStore(make_engine(migrated_url), Quarantine(tmp_path / "spill" / "quarantine")).write_rows(
        rows
    )
    with make_engine(migrated_url).connect() as conn:
        c = RequestLog.__table__.c  # type: ignore[attr-defined]
        links = {
            r[0]: (r[1], r[2])
            for r in conn.execute(select(c.id, c.prompt_message_id, c.reply_message_id))
        }
        assert links.keys() == {"r0", "r1", "r2"}
        assert links["r1"] == (None, None)
        assert rebuild(conn, "t1", links["r2"][1]) == [*records[2].prompt, records[2].reply]
    assert "request r1: unreadable prompt" in caplog.text


@pytest.mark.parametrize("via", ["records", "journal"])
def test_protocol_and_eligibility_are_stored(migrated_url: str, tmp_path: Path, via: str) -> None:
    """A Gemini request a candidate could not serve as sent keeps its protocol, its reasons and
    whether they were stripped, written from records and from journal lines alike."""
    plain = _record("r1", "t1", [{"role": "user", "content": "x"}], "y")
    gemini = _record("r2", "t1", [{"role": "user", "content": "x"}], "y")
    gemini.protocol, gemini.ineligible, gemini.stripped = "gemini", "tools,cached_content", True
    if via == "records":
        _write(migrated_url, [plain, gemini])
    else:
        _store_from_journal(migrated_url, [plain, gemini], tmp_path)
    with make_engine(migrated_url).connect() as conn:
        c = RequestLog.__table__.c  # type: ignore[attr-defined]
        rows = conn.execute(select(c.id, c.protocol, c.ineligible, c.stripped).order_by(c.id))
        assert [tuple(r) for r in rows] == [
            ("r1", "openai", None, False),
            ("r2", "gemini", "tools,cached_content", True),
        ]


def _setup_experiment(url: str) -> None:
    engine = make_engine(url)
    with Session(engine) as session:
        for name in ("a", "b"):
            create_model(
                session=session, name=name, spec=ModelSpec(base_url="http://127.0.0.1:9/v1")
            )
        create_experiment(
            session=session,
            spec=ExperimentSpec(
                name="exp",
                route="larry",
                arms=[ArmSpec(model="a", weight=50, control=True), ArmSpec(model="b", weight=50)],
            ),
        )


def test_feedback_upserts_per_request_and_source(migrated_url: str) -> None:
    _write(migrated_url, [_record("r1", "t1", [{"role": "user", "content": "x"}], "y", arm="b")])
    engine = make_engine(migrated_url)
    target = attribute_request(engine, "r1")
    assert target == Attribution("t1", "exp", "b")
    fb, updated = upsert_feedback(
        engine, target=target, request_id="r1", score=2, comment=None, source="user"
    )
    assert not updated
    fb2, updated = upsert_feedback(
        engine, target=target, request_id="r1", score=5, comment="better", source="user"
    )
    assert updated and fb2.id == fb.id and fb2.score == 5
    upsert_feedback(
        engine, target=target, request_id="r1", score=1, comment=None, source="facilitator"
    )
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT source, score FROM feedback ORDER BY source")).all()
    assert [tuple(r) for r in rows] == [("facilitator", 1), ("user", 5)]


def test_summary_counts_and_percentiles_match_python(migrated_url: str) -> None:
    _setup_experiment(migrated_url)
    lat_a = [float(x) for x in range(10, 1010, 10)]  # 100 values
    lat_b = [5.0, 7.0, 9.0, 200.0]
    records = [
        _record(f"a{i}", f"ta{i % 20}", [{"role": "user", "content": "q"}], "r", arm="a", latency=v)
        for i, v in enumerate(lat_a)
    ]
    records += [
        _record(f"b{i}", f"tb{i}", [{"role": "user", "content": "q"}], "r", arm="b", latency=v)
        for i, v in enumerate(lat_b)
    ]
    records.append(
        _record(
            "b-err",
            "tb0",
            [{"role": "user", "content": "q"}],
            "r",
            arm="b",
            latency=9999,
            status="error",
        )
    )
    _write(migrated_url, records)
    engine = make_engine(migrated_url)
    for score, rid in ((5, "b0"), (4, "b1"), (1, "b2")):
        upsert_feedback(
            engine,
            target=attribute_request(engine, rid),
            request_id=rid,
            score=score,  # type: ignore[arg-type]
            comment=None,
            source="user",
        )
    rows = {r.arm: r for r in arm_reports(engine, "exp", [("a", True, 50), ("b", False, 50)])}
    a, b = rows["a"], rows["b"]
    assert (a.requests, a.threads, a.errors) == (100, 20, 0)
    assert (b.requests, b.threads, b.errors) == (5, 4, 1)
    q = statistics.quantiles(lat_a, n=100, method="inclusive")
    # Percentiles come from latency buckets: within 1% of the exact ones.
    assert a.latency_ms.p50 == pytest.approx(statistics.median(lat_a), rel=0.01)
    assert a.latency_ms.p95 == pytest.approx(q[94], rel=0.01)
    assert a.latency_ms.p99 == pytest.approx(q[98], rel=0.01)
    # the error's latency is not in the percentiles
    assert b.latency_ms.p50 == pytest.approx(8.0, rel=0.01)
    assert b.latency_ms.p99 == pytest.approx(200.0 - 0.03 * (200 - 9.0), rel=0.01)
    assert (b.feedback_count, b.mean_score, b.high_rating_share) == (
        3,
        pytest.approx(10 / 3),
        pytest.approx(2 / 3),
    )
    assert a.feedback_count == 0 and a.mean_score is None
