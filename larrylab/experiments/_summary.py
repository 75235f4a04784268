"""Per-arm summaries of an experiment, read from the rollups kept as rows arrive."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import Connection, Engine

from larrylab.requestlog import (
    ERRORS,
    FALLBACKS,
    HIGH,
    REQUESTS,
    SCORE,
    THREADS,
    percentiles,
    read_buckets,
    read_rollup,
)

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


def latency_percentiles(conn: Connection, experiment: str, column: str) -> dict[str, Percentiles]:
    """Percentiles of `column` per arm over the experiment's successful requests, from the
    latency buckets (within 1% of the exact values, `requestlog._sketch`)."""
    out: dict[str, Percentiles] = {}
    for arm, counts in read_buckets(conn, experiment, column).items():
        values = percentiles(counts, PERCENTILES)
        if values is not None:
            out[arm] = Percentiles(p50=values[0], p95=values[1], p99=values[2])
    return out


def summarize(
    engine: Engine, experiment: str, arms: list[tuple[str, bool, float]]
) -> list[ArmSummary]:
    """Per-arm summary of `experiment`; `arms` lists (model, control, weight) in display order.

    Everything comes from the running totals and latency buckets, none from request rows.
    """
    with engine.connect() as conn:
        return summarize_on(conn, experiment, arms)


def summarize_on(
    conn: Connection, experiment: str, arms: list[tuple[str, bool, float]]
) -> list[ArmSummary]:
    """`summarize` on an open connection."""
    out = {
        name: ArmSummary(arm=name, control=control, weight=weight) for name, control, weight in arms
    }
    empty = (0, 0.0, 0.0)
    for arm, totals in read_rollup(conn, experiment).items():
        s = out.setdefault(arm, ArmSummary(arm=arm, control=False, weight=0.0))
        s.requests = totals.get(REQUESTS, empty)[0]
        s.threads = totals.get(THREADS, empty)[0]
        s.errors = round(totals.get(ERRORS, empty)[1])
        s.fallbacks = round(totals.get(FALLBACKS, empty)[1])
        n, total, _ = totals.get(SCORE, empty)
        s.feedback_count = n
        if n:
            s.mean_score = total / n
            s.high_rating_share = totals.get(HIGH, empty)[1] / n
    for column in ("latency_ms", "ttft_ms"):
        for arm, pct in latency_percentiles(conn, experiment, column).items():
            if arm in out:
                setattr(out[arm], column, pct)
    return list(out.values())
