"""Aggregates for the dashboard, computed in SQL on SQLite and PostgreSQL alike.

Each function reads one aggregate with one or a few grouped queries and returns small typed
rows; none loads request rows into Python. Time buckets are computed by the database; per-arm
counts, percentiles and latency histograms come from the rollups (`rollup`), histogram bins
from the latency buckets.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlmodel
from pydantic import BaseModel
from sqlalchemy import (
    Connection,
    Float,
    Integer,
    case,
    cast,
    func,
    select,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from larrylab.db import AuditEvent, Feedback, RequestLog, utcnow
from larrylab.experiments import (
    ArmReport,
    ExperimentReport,
    arm_reports_on,
    experiment_report,
    list_experiments,
)
from larrylab.rollups import bucket_value, read_buckets

# The error class the router logs on a request rerouted because its model's breaker was open.
CIRCUIT_OPEN = "circuit_open"

Arms = list[tuple[str, bool, float]]


def _req() -> Any:
    return RequestLog.__table__.c  # type: ignore[attr-defined]


def _fb() -> Any:
    return Feedback.__table__.c  # type: ignore[attr-defined]


def _conn(session: Session) -> Connection:
    return session.connection()


class RouteTraffic(BaseModel):
    """Requests, errors and fallbacks of one route over the last hour and the last day."""

    route: str
    requests_hour: int
    errors_hour: int
    requests_day: int
    errors_day: int
    fallbacks_day: int

    @property
    def error_rate_hour(self) -> float | None:
        """Share of the last hour's requests that failed (None without traffic)."""
        return self.errors_hour / self.requests_hour if self.requests_hour else None

    @property
    def error_rate_day(self) -> float | None:
        """Share of the last day's requests that failed (None without traffic)."""
        return self.errors_day / self.requests_day if self.requests_day else None


def route_traffic(*, session: Session, now: datetime | None = None) -> list[RouteTraffic]:
    """Per route: requests, errors and fallbacks of the last hour and day (one grouped query)."""
    now = now or utcnow()
    c = _req()
    hour = c.created_at >= now - timedelta(hours=1)
    is_error = c.status == "error"

    def count_if(cond: ColumnElement[bool]) -> Any:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    rows = _conn(session).execute(
        select(
            c.route,
            count_if(hour),
            count_if(hour & is_error),
            func.count(),
            count_if(is_error),
            count_if(c.fallback_from.is_not(None)),
        )
        .where(c.created_at >= now - timedelta(days=1), c.created_at <= now)
        .group_by(c.route)
        .order_by(c.route)
    )
    return [
        RouteTraffic(
            route=r,
            requests_hour=rh,
            errors_hour=eh,
            requests_day=rd,
            errors_day=ed,
            fallbacks_day=f,
        )
        for r, rh, eh, rd, ed, f in rows
    ]


class SeriesPoint(BaseModel):
    """One time bucket of one arm: traffic, errors and mean latency of successful requests."""

    bucket_start: datetime
    arm: str
    requests: int
    errors: int
    mean_latency_ms: float | None


def _epoch(conn: Connection, column: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return func.date_part("epoch", column)  # double precision, not numeric
    return cast(func.strftime("%s", column), Float)


def _floor(conn: Connection, value: Any) -> Any:
    """floor() of a non-negative value (SQLite may be built without its math functions)."""
    if conn.dialect.name == "postgresql":
        return func.floor(value)
    return cast(value, Integer)


def bucket_seconds(start: datetime, end: datetime, buckets: int = 48) -> int:
    """A round bucket width (1 min ... 1 week) giving at most about `buckets` buckets."""
    span = max((end - start).total_seconds(), 60.0)
    for width in (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400):
        if span / width <= buckets:
            return width
    return 7 * 86400


def arm_timeseries(
    *, session: Session, experiment: str, start: datetime, end: datetime, bucket_s: int
) -> list[SeriesPoint]:
    """Per arm and time bucket of `bucket_s` seconds in [start, end]: traffic and latency of
    the requests every arm could serve (those a candidate could not, `ineligible`, are left out
    as in the report)."""
    if bucket_s <= 0:
        raise ValueError("bucket width must be positive")
    conn = _conn(session)
    c = _req()
    bucket = _floor(conn, _epoch(conn, c.created_at) / bucket_s) * bucket_s
    ok_latency = case((c.status == "ok", c.latency_ms), else_=None)
    rows = conn.execute(
        select(
            bucket.label("b"),
            c.arm,
            func.count(),
            func.coalesce(func.sum(case((c.status == "error", 1), else_=0)), 0),
            func.avg(ok_latency),
        )
        .where(
            c.experiment == experiment,
            c.arm.is_not(None),
            c.ineligible.is_(None),
            c.created_at >= start,
            c.created_at <= end,
        )
        .group_by("b", c.arm)
        .order_by("b", c.arm)
    )
    return [
        SeriesPoint(
            bucket_start=datetime.fromtimestamp(float(b), tz=UTC),
            arm=arm,
            requests=n,
            errors=int(e),
            mean_latency_ms=float(m) if m is not None else None,
        )
        for b, arm, n, e, m in rows
    ]


class HistogramBin(BaseModel):
    """A histogram bin of one arm; the last bin holds everything from `lower` up."""

    arm: str
    lower: float
    upper: float | None
    count: int


def latency_histogram(
    *,
    session: Session,
    experiment: str,
    upper: float,
    bins: int = 40,
    column: Literal["latency_ms", "ttft_ms"] = "latency_ms",
) -> list[HistogramBin]:
    """Successful requests per arm in `bins` equal bins over [0, upper) plus one overflow bin
    (empty bins left out), from the latency buckets: a value lands in the bin of its bucket's
    value, within 1% of its own (`rollups._sketch`)."""
    if upper <= 0 or bins < 1:
        raise ValueError("a histogram needs a positive upper bound and at least one bin")
    width = upper / bins
    out: list[HistogramBin] = []
    for arm, counts in sorted(read_buckets(_conn(session), experiment, column).items()):
        per_bin: dict[int, int] = {}
        for b, n in counts:
            i = min(bins, int(bucket_value(b) / width))
            per_bin[i] = per_bin.get(i, 0) + n
        out.extend(
            HistogramBin(
                arm=arm,
                lower=i * width,
                upper=None if i >= bins else (i + 1) * width,
                count=n,
            )
            for i, n in sorted(per_bin.items())
            if n
        )
    return out


class RatingCount(BaseModel):
    """How many ratings of one score an arm received."""

    arm: str
    score: int
    count: int


def rating_histogram(*, session: Session, experiment: str) -> list[RatingCount]:
    """Ratings with a score per arm and score (1-5); thumbs alone are left out."""
    f = _fb()
    rows = _conn(session).execute(
        select(f.arm, f.score, func.count())
        .where(f.experiment == experiment, f.arm.is_not(None), f.score.is_not(None))
        .group_by(f.arm, f.score)
        .order_by(f.arm, f.score)
    )
    return [RatingCount(arm=a, score=s, count=n) for a, s, n in rows]


def arm_reports(*, session: Session, experiment: str, arms: Arms) -> list[ArmReport]:
    """The report's per-arm rows (`experiments.arm_reports`), on the session's connection."""
    return arm_reports_on(_conn(session), experiment, arms)


class BreakerSignal(BaseModel):
    """A model whose circuit breaker rerouted requests recently."""

    model: str
    rerouted: int
    last_at: datetime


def open_breakers(
    *, session: Session, now: datetime | None = None, window_s: float = 600.0
) -> list[BreakerSignal]:
    """Models whose requests were sent to the control arm because their breaker was open."""
    now = now or utcnow()
    c = _req()
    rows = _conn(session).execute(
        select(c.fallback_from, func.count(), func.max(c.created_at))
        .where(
            c.created_at >= now - timedelta(seconds=window_s),
            c.error_class == CIRCUIT_OPEN,
            c.fallback_from.is_not(None),
        )
        .group_by(c.fallback_from)
        .order_by(c.fallback_from)
    )
    return [BreakerSignal(model=m, rerouted=n, last_at=t) for m, n, t in rows]


class Alert(BaseModel):
    """Something a reviewer should look at now."""

    kind: Literal["srm", "breaker", "guardrail"]
    subject: str
    message: str


def experiment_alerts(report: ExperimentReport) -> list[Alert]:
    """SRM and failed guardrails in one experiment's report."""
    out = []
    if report.srm:
        threads = ", ".join(f"{arm} {n}" for arm, n in report.threads.items())
        out.append(
            Alert(
                kind="srm",
                subject=report.experiment,
                message=(
                    f"sample ratio mismatch in {report.experiment} (p = "
                    f"{report.srm_p_value:.2g}; threads {threads}): its results are not valid"
                ),
            )
        )
    for cand in report.candidates:
        for m in cand.metrics:
            if m.role == "guardrail" and m.outcome == "worse":
                out.append(
                    Alert(
                        kind="guardrail",
                        subject=report.experiment,
                        message=(
                            f"guardrail {m.metric} failed for {cand.arm} in {report.experiment}: "
                            f"{m.treatment['mean']:.2%} against {m.control['mean']:.2%} "
                            "for the control"
                        ),
                    )
                )
    return out


def alerts(
    *, session: Session, now: datetime | None = None, breaker_window_s: float = 600.0
) -> list[Alert]:
    """SRM and failed guardrails of running experiments, canaries rolled back in the last day,
    and recently open circuit breakers."""
    out: list[Alert] = []
    engine = session.get_bind()
    for exp in list_experiments(session=session):
        if exp.status != "running" or not any(a.control for a in exp.arms):
            continue
        arms = [(a.model, a.control, a.weight) for a in exp.arms]
        out.extend(experiment_alerts(experiment_report(engine, exp.name, arms)))  # type: ignore[arg-type]
    out.extend(rollback_alerts(session=session, now=now))
    for b in open_breakers(session=session, now=now, window_s=breaker_window_s):
        out.append(
            Alert(
                kind="breaker",
                subject=b.model,
                message=(
                    f"circuit breaker open for {b.model}: {b.rerouted} requests went to the "
                    f"control arm in the last {breaker_window_s / 60:.0f} min "
                    f"(last at {b.last_at:%H:%M:%S} UTC)"
                ),
            )
        )
    return out


def rollback_alerts(
    *, session: Session, now: datetime | None = None, window_s: float = 86_400.0
) -> list[Alert]:
    """Canaries the rollout controller rolled back for a failed guardrail in the last day."""
    since = (now or datetime.now(UTC)) - timedelta(seconds=window_s)
    events = session.exec(
        sqlmodel.select(AuditEvent)
        .where(
            AuditEvent.kind == "rollout",
            AuditEvent.action == "rolled_back",
            AuditEvent.actor == "rollout-controller",
            col(AuditEvent.created_at) >= since,
        )
        .order_by(col(AuditEvent.id).desc())
    )
    return [
        Alert(
            kind="guardrail",
            subject=e.subject,
            message=f"canary on route {e.subject} rolled back at {e.created_at:%Y-%m-%d %H:%M} "
            f"UTC: {e.reason}",
        )
        for e in events
    ]
