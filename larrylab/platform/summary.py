"""Per-arm summaries of an experiment, aggregated in SQL (never by loading rows into Python)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from larrylab.platform.models import RequestLog
from larrylab.platform.rollup import ERRORS, FALLBACKS, HIGH, REQUESTS, SCORE, THREADS, read_rollup

PERCENTILES = (0.5, 0.95, 0.99)


class Percentiles(BaseModel):
    """Latency percentiles in milliseconds (None when there is no data)."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class ArmSummary(BaseModel):
    """One arm's traffic, latency and feedback."""

    arm: str
    control: bool
    weight: float
    requests: int = 0
    threads: int = 0
    errors: int = 0
    fallbacks: int = 0
    latency_ms: Percentiles = Percentiles()
    ttft_ms: Percentiles = Percentiles()
    feedback_count: int = 0
    mean_score: float | None = None
    high_rating_share: float | None = None


def _col(name: str) -> Any:
    return RequestLog.__table__.c[name]  # type: ignore[attr-defined]


def _percentiles_pg(
    conn: Connection, where: list[ColumnElement[bool]], column: str
) -> dict[str, Percentiles]:
    col = _col(column)
    # One sort per arm for all three percentiles (an array argument), not one per percentile.
    agg = func.percentile_cont(postgresql.array(PERCENTILES)).within_group(col)
    rows = conn.execute(
        select(_col("arm"), agg).where(*where, col.is_not(None)).group_by(_col("arm"))
    ).all()
    return {arm: Percentiles(p50=v[0], p95=v[1], p99=v[2]) for arm, v in rows}


def _percentile_sqlite(
    conn: Connection, where: list[ColumnElement[bool]], column: str, n: int, p: float
) -> float:
    """Linear interpolation between order statistics, as PostgreSQL's percentile_cont."""
    col = _col(column)
    pos = p * (n - 1)
    lo = math.floor(pos)
    values = (
        conn.execute(select(col).where(*where, col.is_not(None)).order_by(col).limit(2).offset(lo))
        .scalars()
        .all()
    )
    if len(values) == 1 or pos == lo:
        return float(values[0])
    return float(values[0] + (values[1] - values[0]) * (pos - lo))


def _percentiles_sqlite(
    conn: Connection, where: list[ColumnElement[bool]], column: str
) -> dict[str, Percentiles]:
    col = _col(column)
    counts = conn.execute(
        select(_col("arm"), func.count(col)).where(*where, col.is_not(None)).group_by(_col("arm"))
    ).all()
    out: dict[str, Percentiles] = {}
    for arm, n in counts:
        if not n:
            continue
        arm_where = [*where, _col("arm") == arm]
        p50, p95, p99 = (_percentile_sqlite(conn, arm_where, column, n, p) for p in PERCENTILES)
        out[arm] = Percentiles(p50=p50, p95=p95, p99=p99)
    return out


def latency_percentiles(conn: Connection, experiment: str, column: str) -> dict[str, Percentiles]:
    """Percentiles of `column` per arm over the experiment's successful requests."""
    where = [_col("experiment") == experiment, _col("status") == "ok"]
    if conn.dialect.name == "postgresql":
        return _percentiles_pg(conn, where, column)
    return _percentiles_sqlite(conn, where, column)


def summarize(
    engine: Engine, experiment: str, arms: list[tuple[str, bool, float]]
) -> list[ArmSummary]:
    """Per-arm summary of `experiment`; `arms` lists (model, control, weight) in display order.

    Counts and ratings come from the running totals; percentiles walk an index per arm.
    """
    out = {
        name: ArmSummary(arm=name, control=control, weight=weight) for name, control, weight in arms
    }
    with engine.connect() as conn:
        for arm, totals in read_rollup(conn, experiment).items():
            s = out.setdefault(arm, ArmSummary(arm=arm, control=False, weight=0.0))
            s.requests = totals.get(REQUESTS, (0, 0.0, 0.0))[0]
            s.threads = totals.get(THREADS, (0, 0.0, 0.0))[0]
            s.errors = round(totals.get(ERRORS, (0, 0.0, 0.0))[1])
            s.fallbacks = round(totals.get(FALLBACKS, (0, 0.0, 0.0))[1])
            n, total, _ = totals.get(SCORE, (0, 0.0, 0.0))
            s.feedback_count = n
            if n:
                s.mean_score = total / n
                s.high_rating_share = totals.get(HIGH, (0, 0.0, 0.0))[1] / n
        for column, attr in (("latency_ms", "latency_ms"), ("ttft_ms", "ttft_ms")):
            for arm, pct in latency_percentiles(conn, experiment, column).items():
                if arm in out:
                    setattr(out[arm], attr, pct)
    return list(out.values())
