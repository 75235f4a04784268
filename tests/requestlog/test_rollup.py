"""Running per-arm totals: what the writer and the ratings add up equals a recount from the rows."""

from __future__ import annotations

import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from larrylab.db._engine import make_engine
from larrylab.experiments._feedback import attribute_request, upsert_feedback
from larrylab.requestlog import _sketch as sketch
from larrylab.requestlog._rollup import LATENCY, TTFT, read_buckets, read_rollup, rebuild_rollups
from larrylab.requestlog._store import RequestRecord
from tests.conftest import write_records
from tests.requestlog.factories import records as _records


def _write(url: str, records: list[RequestRecord]) -> None:
    write_records(url, records, batch_size=37)


def test_incremental_totals_equal_a_recount(migrated_url: str) -> None:
    records = _records(400, seed=5)
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
        incremental = read_rollup(conn, "exp")
        buckets = {m: read_buckets(conn, "exp", m) for m in (LATENCY, TTFT)}
    rebuild_rollups(engine)
    with engine.connect() as conn:
        recount = read_rollup(conn, "exp")
        assert {m: read_buckets(conn, "exp", m) for m in (LATENCY, TTFT)} == buckets
    # Every successful request with a value is in one bucket of its arm, counted once.
    for metric in (LATENCY, TTFT):
        for arm, counts in buckets[metric].items():
            assert sum(n for _, n in counts) == recount[arm][metric][0]
    assert incremental.keys() == recount.keys() == {"a", "b"}
    for arm in recount:
        assert incremental[arm].keys() == recount[arm].keys()
        for metric, (n, total, squares) in recount[arm].items():
            got = incremental[arm][metric]
            assert got[0] == n, metric
            assert got[1] == pytest.approx(total), metric
            assert got[2] == pytest.approx(squares), metric
    assert sum(recount[a]["requests"][0] for a in recount) == 400


def test_migrations_match_the_models(migrated_url: str) -> None:
    with make_engine(migrated_url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def test_latency_buckets_bound_the_relative_error() -> None:
    rng = random.Random(3)
    values = [0.0, 1e-9, 0.004, 1.0, 999.9, 1e6] + [rng.lognormvariate(5, 2) for _ in range(2000)]
    for v in values:
        got = sketch.bucket_value(sketch.bucket(v))
        if v <= sketch.ZERO_LIMIT:
            assert got == 0.0
        else:
            assert abs(got - v) <= sketch.RELATIVE_ACCURACY * v, v
    counts = Counter(sketch.bucket(v) for v in values)
    got = sketch.percentiles(counts.items(), [0.0, 0.5, 0.95, 0.99, 1.0])
    assert got is not None
    exact = np.percentile(values, [0, 50, 95, 99, 100])
    assert got == pytest.approx(list(exact), rel=sketch.RELATIVE_ACCURACY)
    assert sketch.percentiles([], [0.5]) is None
    assert sketch.percentiles([(sketch.bucket(7.0), 1)], [0.5, 0.99]) == pytest.approx(
        [7.0] * 2, rel=0.01
    )
