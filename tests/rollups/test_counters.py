"""Running per-arm totals: what the writer and the ratings add up equals a recount from the rows."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, insert, select, update
from sqlmodel import SQLModel

from larrylab.db import Feedback
from larrylab.db._engine import make_engine
from larrylab.experiments._feedback import attribute_request, upsert_feedback
from larrylab.requestlog import RequestRecord
from larrylab.rollups import (
    HIGH,
    INELIGIBLE,
    LATENCY,
    RATED,
    REQUESTS,
    SCORE,
    THUMBS_UP,
    TTFT,
    Rating,
    apply_totals,
    ineligible_metric,
    rating_totals,
    read_buckets,
    read_rollup,
    rebuild_rollups,
)
from tests.conftest import write_records
from tests.requestlog.factories import records as _records


def _write(url: str, records: list[RequestRecord]) -> None:
    write_records(url, records, batch_size=37)


def _assert_same_totals(engine: Engine) -> dict[str, dict[str, tuple[int, float, float]]]:
    """The running totals of experiment "exp" equal a recount from the rows; returns them."""
    with engine.connect() as conn:
        incremental = read_rollup(conn, "exp")
    rebuild_rollups(engine)
    with engine.connect() as conn:
        recount = read_rollup(conn, "exp")
    assert incremental.keys() == recount.keys()
    for arm in recount:
        assert incremental[arm].keys() == recount[arm].keys(), arm
        for metric, (n, total, squares) in recount[arm].items():
            got = incremental[arm][metric]
            assert got[0] == n, metric
            assert got[1] == pytest.approx(total), metric
            assert got[2] == pytest.approx(squares), metric
    return recount


def test_incremental_totals_equal_a_recount(migrated_url: str) -> None:
    records = _records(400, seed=5)
    for rec in records[::7]:  # requests a candidate could not serve as sent
        rec.ineligible = "tools,cached_content" if rec.id.endswith("1") else "tools"
    _write(migrated_url, records)
    _write(migrated_url, records[:50])  # a replay of rows already stored must not count twice
    engine = make_engine(migrated_url)
    rng = random.Random(9)

    def rate(i: int) -> None:
        rid = f"r{rng.randrange(400)}"
        target = attribute_request(engine, rid)
        assert target is not None
        upsert_feedback(
            engine, target=target, request_id=rid, score=1 + i % 5, comment=None, source=f"s{i % 3}"
        )

    with ThreadPoolExecutor(max_workers=6) as pool:  # concurrent ratings, many of them updates
        list(pool.map(rate, range(300)))
    with engine.connect() as conn:
        buckets = {m: read_buckets(conn, "exp", m) for m in (LATENCY, TTFT)}
    recount = _assert_same_totals(engine)
    assert recount.keys() == {"a", "b"}
    with engine.connect() as conn:
        assert {m: read_buckets(conn, "exp", m) for m in (LATENCY, TTFT)} == buckets
    # Every successful request with a value is in one bucket of its arm, counted once.
    for metric in (LATENCY, TTFT):
        for arm, counts in buckets[metric].items():
            assert sum(n for _, n in counts) == recount[arm][metric][0]
    # Ineligible requests are counted apart, and left out of every request metric.
    ineligible = {r.id for r in records if r.ineligible}
    for arm in recount:
        mine = [r for r in records if r.arm == arm]
        left_out = [r for r in mine if r.ineligible]
        assert recount[arm][REQUESTS][0] == len(mine) - len(left_out)
        assert recount[arm][INELIGIBLE][:2] == (len(left_out), len(left_out))
        for reason in ("tools", "cached_content"):
            k = sum(reason in r.ineligible.split(",") for r in left_out if r.ineligible)
            assert recount[arm][ineligible_metric(reason)][:2] == (k, k)
        eligible_ok = [r for r in mine if r.status == "ok" and not r.ineligible]
        assert recount[arm][LATENCY][0] == len(eligible_ok)
    assert sum(recount[a][REQUESTS][0] for a in recount) == 400 - len(ineligible)


def test_migrations_match_the_models(migrated_url: str) -> None:
    with make_engine(migrated_url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def _rate(conn: Connection, request_id: str, source: str, new: Rating) -> None:
    """Store a rating of a request as `experiments` does: the row, and its change to the
    running totals in the same transaction."""
    f = Feedback.__table__.c  # type: ignore[attr-defined]
    key = f"request:{request_id}"
    old = conn.execute(select(f.score, f.thumb).where(f.target == key, f.source == source)).first()
    first = conn.execute(select(f.id).where(f.target == key)).first() is None
    score, thumb = new
    if old is None:
        conn.execute(
            insert(Feedback.__table__),  # type: ignore[attr-defined]
            {
                "target": key,
                "request_id": request_id,
                "thread_id": "t",
                "experiment": "exp",
                "arm": "a",
                "score": score,
                "thumb": thumb,
                "source": source,
            },
        )
    else:
        conn.execute(
            update(Feedback.__table__)  # type: ignore[attr-defined]
            .where(f.target == key, f.source == source)
            .values(score=score, thumb=thumb)
        )
    apply_totals(
        conn,
        rating_totals(
            "exp",
            "a",
            old=None if old is None else (old[0], old[1]),
            new=new,
            first_for_request=first,
        ),
    )


def test_scores_and_thumbs_totals_follow_every_change(migrated_url: str) -> None:
    """Ratings with a score, a thumb or both, changed from one to another: the score metrics
    count ratings with a score, the thumbs-up rate those with a thumb, and what is added as
    they change equals a recount."""
    _write(migrated_url, _records(12, seed=2))
    engine = make_engine(migrated_url)
    steps: list[tuple[str, str, Rating]] = [
        ("r0", "user", (5, None)),  # a score alone
        ("r0", "user", (None, 1)),  # score -> thumb: no score left in the arm
        ("r0", "user", (5, None)),  # thumb -> score: no thumb left
        ("r1", "user", (None, 1)),  # a thumb alone
        ("r2", "user", (2, 0)),  # both
        ("r3", "user", (3, None)),
        ("r3", "coach", (None, 0)),  # a second source: not a second rated request
        ("r0", "user", (None, 0)),  # score -> thumb
        ("r1", "user", (4, None)),  # thumb -> score
        ("r2", "user", (4, 1)),  # both change
        ("r3", "user", (3, 1)),  # a thumb added
        ("r3", "coach", (1, None)),  # thumb -> score
    ]
    final: dict[tuple[str, str], Rating] = {}
    for request_id, source, new in steps:
        with engine.begin() as conn:
            _rate(conn, request_id, source, new)
        final[(request_id, source)] = new
        totals = _assert_same_totals(engine)["a"]
        scores = [s for s, _ in final.values() if s is not None]
        thumbs = [t for _, t in final.values() if t is not None]
        want = {
            SCORE: (len(scores), sum(scores), sum(s * s for s in scores)),
            HIGH: (len(scores), sum(s >= 4 for s in scores), sum(s >= 4 for s in scores)),
            THUMBS_UP: (len(thumbs), sum(thumbs), sum(thumbs)),
            RATED: (len({r for r, _ in final}),) * 3,
        }
        for metric, (n, total, squares) in want.items():
            if n:
                assert totals[metric] == (n, pytest.approx(total), pytest.approx(squares))
            else:
                assert metric not in totals
