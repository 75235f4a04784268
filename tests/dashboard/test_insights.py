"""The dashboard's SQL aggregates on SQLite and PostgreSQL, checked against the seeded rows
themselves and against the platform's reference functions (the experiment report)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import insert
from sqlmodel import Session

from larrylab.config import ArmSpec, ExperimentSpec, ModelSpec
from larrylab.dashboard import insights
from larrylab.db._engine import make_engine, upgrade
from larrylab.db._schema import RequestLog
from larrylab.experiments._arm_report import arm_reports, latency_percentiles
from larrylab.experiments._experiments import create_experiment
from larrylab.release._registry import create_model
from larrylab.rollups import _sketch as sketch
from larrylab.rollups import rebuild_rollups
from tests.dashboard.seed import CANDIDATE, CONTROL, EXPERIMENT, SKEWED, Seeded, seed

ARMS = [(CONTROL, True, 50.0), (CANDIDATE, False, 50.0)]


@pytest.fixture
def seeded_db(database_url: str) -> Seeded:
    return seed(database_url)


def _experiment_rows(seeded: Seeded, arm: str) -> list[float]:
    """Latencies of the arm's successful requests that every arm could serve (the report
    leaves out the ineligible ones)."""
    return sorted(
        r.latency_ms
        for r in seeded.records
        if r.experiment == EXPERIMENT and r.arm == arm and r.status == "ok" and not r.ineligible
    )


def test_arm_reports_equal_the_reference_arm_reports(seeded_db: Seeded) -> None:
    engine = make_engine(seeded_db.url)
    with Session(engine) as s:
        fast = insights.arm_reports(session=s, experiment=EXPERIMENT, arms=ARMS)
    reference = arm_reports(engine, EXPERIMENT, ARMS)
    for got, want in zip(fast, reference, strict=True):
        assert got.model_dump(exclude={"latency_ms", "ttft_ms"}) == want.model_dump(
            exclude={"latency_ms", "ttft_ms"}
        )
        for attr in ("latency_ms", "ttft_ms"):
            for p in ("p50", "p95", "p99"):
                assert getattr(getattr(got, attr), p) == pytest.approx(
                    getattr(getattr(want, attr), p), rel=1e-12
                )
    engine.dispose()


def test_percentiles_are_within_one_percent_of_exact(seeded_db: Seeded) -> None:
    engine = make_engine(seeded_db.url)
    with engine.connect() as conn:
        got = latency_percentiles(conn, EXPERIMENT, "latency_ms")
    engine.dispose()
    assert set(got) == {CONTROL, CANDIDATE}
    for arm in (CONTROL, CANDIDATE):
        values = _experiment_rows(seeded_db, arm)
        want = np.percentile(values, [50, 95, 99])  # linear interpolation, as percentile_cont
        pct = got[arm]
        assert [pct.p50, pct.p95, pct.p99] == pytest.approx(list(want), rel=0.01)


def test_route_traffic_counts_the_last_hour_and_day(seeded_db: Seeded) -> None:
    now = seeded_db.now
    engine = make_engine(seeded_db.url)
    with Session(engine) as s:
        rows = {t.route: t for t in insights.route_traffic(session=s, now=now)}
    engine.dispose()
    for route in ("larry", "summaries", "workshop"):
        mine = [r for r in seeded_db.records if r.route == route]
        hour = [r for r in mine if now - timedelta(hours=1) <= r.created_at <= now]
        day = [r for r in mine if now - timedelta(days=1) <= r.created_at <= now]
        t = rows[route]
        assert (t.requests_hour, t.requests_day) == (len(hour), len(day))
        assert t.errors_hour == sum(r.status == "error" for r in hour)
        assert t.errors_day == sum(r.status == "error" for r in day)
        assert t.fallbacks_day == sum(r.fallback_from is not None for r in day)
    assert rows["summaries"].requests_day == 4 and rows["summaries"].error_rate_day == 0.25
    assert rows["workshop"].error_rate_hour is None  # no traffic in the last hour


def test_time_series_buckets_in_sql(seeded_db: Seeded) -> None:
    start, end = seeded_db.now - timedelta(hours=4), seeded_db.now
    width = insights.bucket_seconds(start, end)
    assert width == 300  # 4 hours in at most 48 buckets
    engine = make_engine(seeded_db.url)
    with Session(engine) as s:
        points = insights.arm_timeseries(
            session=s, experiment=EXPERIMENT, start=start, end=end, bucket_s=width
        )
    engine.dispose()
    want: dict[tuple[datetime, str], list[float]] = defaultdict(list)
    errors: Counter[tuple[datetime, str]] = Counter()
    for r in seeded_db.records:
        if r.experiment != EXPERIMENT or r.ineligible or not start <= r.created_at <= end:
            continue
        bucket = datetime.fromtimestamp(
            math.floor(r.created_at.timestamp() / width) * width, tz=UTC
        )
        assert r.arm is not None
        want[(bucket, r.arm)].append(r.latency_ms if r.status == "ok" else math.nan)
        errors[(bucket, r.arm)] += r.status == "error"
    assert {(p.bucket_start, p.arm) for p in points} == set(want)
    for p in points:
        values = want[(p.bucket_start, p.arm)]
        assert p.requests == len(values)
        assert p.errors == errors[(p.bucket_start, p.arm)]
        ok = [v for v in values if not math.isnan(v)]
        if ok:
            assert p.mean_latency_ms == pytest.approx(sum(ok) / len(ok))
        else:
            assert p.mean_latency_ms is None


def test_latency_histogram_bins_every_successful_request(seeded_db: Seeded) -> None:
    engine = make_engine(seeded_db.url)
    with Session(engine) as s:
        bins = insights.latency_histogram(session=s, experiment=EXPERIMENT, upper=400.0, bins=8)
    engine.dispose()
    for arm in (CONTROL, CANDIDATE):
        values = _experiment_rows(seeded_db, arm)
        # Each value lands in the bin of its latency bucket's value (within 1% of its own).
        want = Counter(min(int(sketch.bucket_value(sketch.bucket(v)) // 50), 8) for v in values)
        got = {int(b.lower // 50): b.count for b in bins if b.arm == arm}
        assert got == dict(want)
        overflow = [b for b in bins if b.arm == arm and b.upper is None]
        assert all(b.lower == 400.0 for b in overflow)
    assert sum(b.count for b in bins if b.arm == CONTROL and b.upper is None) == sum(
        sketch.bucket_value(sketch.bucket(v)) >= 400 for v in _experiment_rows(seeded_db, CONTROL)
    )


def test_rating_histogram_and_open_breakers(seeded_db: Seeded) -> None:
    engine = make_engine(seeded_db.url)
    with Session(engine) as s:
        ratings = insights.rating_histogram(session=s, experiment=EXPERIMENT)
        breakers = insights.open_breakers(session=s, now=seeded_db.now)
        old = insights.open_breakers(session=s, now=seeded_db.now + timedelta(minutes=30))
    engine.dispose()
    for arm, scores in seeded_db.scores.items():
        assert {r.score: r.count for r in ratings if r.arm == arm} == dict(Counter(scores))
    assert [(b.model, b.rerouted) for b in breakers] == [(CANDIDATE, 3)]
    assert old == []  # outside the window: the breaker is not reported any more


def test_alerts_name_srm_breakers_and_failed_guardrails(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    with Session(engine) as s:
        for name in ("base", "cand"):
            create_model(session=s, name=name, spec=ModelSpec(base_url="http://127.0.0.1:9/v1"))
        create_experiment(
            session=s,
            spec=ExperimentSpec(
                name="guarded",
                route="r",
                arms=[
                    ArmSpec(model="base", weight=50, control=True),
                    ArmSpec(model="cand", weight=50),
                ],
            ),
        )
    rows = []
    for i in range(800):  # the candidate fails every other request, the control never
        arm = "cand" if i % 2 else "base"
        failed = arm == "cand" and i % 4 == 1
        rows.append(
            {
                "id": f"g{i}", "thread_id": f"gt{i}", "unit_source": "user", "route": "r",
                "experiment": "guarded", "arm": arm, "model": arm, "upstream_model": arm,
                "stream": False, "status": "error" if failed else "ok",
                "http_status": 502 if failed else 200, "latency_ms": 100.0 + i % 7,
                "created_at": now - timedelta(minutes=5), "finished_at": now,
            }
        )  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(RequestLog.__table__), rows)  # type: ignore[attr-defined]
    rebuild_rollups(engine)
    with Session(engine) as s:
        found = insights.alerts(session=s, now=now)
    engine.dispose()
    assert [(a.kind, a.subject) for a in found] == [("guardrail", "guarded")]
    assert "guardrail error_rate failed for cand" in found[0].message
    assert "50.00% against 0.00%" in found[0].message


def test_seeded_store_raises_srm_and_breaker_alerts(seeded_db: Seeded) -> None:
    engine = make_engine(seeded_db.url)
    with Session(engine) as s:
        found = insights.alerts(session=s, now=seeded_db.now)
    engine.dispose()
    assert {(a.kind, a.subject) for a in found} == {("srm", SKEWED), ("breaker", CANDIDATE)}


def test_bad_arguments_are_refused_with_a_sentence(seeded_db: Seeded) -> None:
    engine = make_engine(seeded_db.url)
    with Session(engine) as s:
        with pytest.raises(ValueError, match="positive upper bound"):
            insights.latency_histogram(session=s, experiment=EXPERIMENT, upper=0)
        with pytest.raises(ValueError, match="bucket width must be positive"):
            insights.arm_timeseries(
                session=s,
                experiment=EXPERIMENT,
                start=seeded_db.now,
                end=seeded_db.now,
                bucket_s=0,
            )
    engine.dispose()


def test_bucket_width_is_round_and_bounded() -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    assert insights.bucket_seconds(t0, t0) == 60
    assert insights.bucket_seconds(t0, t0 + timedelta(days=1)) == 1800
    assert insights.bucket_seconds(t0, t0 + timedelta(days=14)) == 12 * 3600
    assert insights.bucket_seconds(t0, t0 + timedelta(days=400)) == 7 * 86400
