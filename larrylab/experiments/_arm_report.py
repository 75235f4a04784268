"""The per-arm rows of an experiment's report, read from the rollups kept as rows arrive."""

from __future__ import annotations

from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine

from larrylab.rollups import (
    ERRORS,
    FALLBACKS,
    HIGH,
    INELIGIBLE,
    REQUESTS,
    SCORE,
    THREADS,
    THUMBS_UP,
    ineligible_metric,
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


class ArmReport(BaseModel):
    """One arm's traffic, latency and feedback.

    `requests` and the request metrics count the requests every arm could serve as sent; those
    a candidate could not (tools, a cached context, non-text parts, ...) are counted apart, in
    `ineligible_requests`, in total and per reason.
    """

    arm: str
    control: bool
    weight: float
    requests: int = 0
    threads: int = 0
    errors: int = 0
    fallbacks: int = 0
    latency_ms: Percentiles = Percentiles()
    ttft_ms: Percentiles = Percentiles()
    feedback_count: int = Field(default=0, description="ratings with a score")
    mean_score: float | None = None
    high_rating_share: float | None = Field(default=None, description="scores of 4 or 5")
    thumbs_count: int = Field(default=0, description="ratings with a thumb")
    thumbs_up_rate: float | None = None
    ineligible_requests: int = 0
    ineligible_share: float | None = Field(
        default=None, description="ineligible requests / (requests + ineligible requests)"
    )
    ineligible_by_reason: dict[str, int] = Field(default_factory=dict)
    ineligible_share_by_reason: dict[str, float] = Field(default_factory=dict)


def latency_percentiles(conn: Connection, experiment: str, column: str) -> dict[str, Percentiles]:
    """Percentiles of `column` per arm over the experiment's successful requests, from the
    latency buckets (within 1% of the exact values, `rollups._sketch`)."""
    out: dict[str, Percentiles] = {}
    for arm, counts in read_buckets(conn, experiment, column).items():
        values = percentiles(counts, PERCENTILES)
        if values is not None:
            out[arm] = Percentiles(p50=values[0], p95=values[1], p99=values[2])
    return out


def _add_ineligible(row: ArmReport, totals: dict[str, tuple[int, float, float]]) -> None:
    """The arm's ineligible requests, in total and per reason, and their shares of all its
    requests (eligible or not)."""
    row.ineligible_requests = totals.get(INELIGIBLE, (0, 0.0, 0.0))[0]
    prefix = ineligible_metric("")
    row.ineligible_by_reason = {
        metric.removeprefix(prefix): n
        for metric, (n, _, _) in sorted(totals.items())
        if metric.startswith(prefix) and n
    }
    everything = row.requests + row.ineligible_requests
    if everything:
        row.ineligible_share = row.ineligible_requests / everything
        row.ineligible_share_by_reason = {
            reason: n / everything for reason, n in row.ineligible_by_reason.items()
        }


def arm_reports(
    engine: Engine, experiment: str, arms: list[tuple[str, bool, float]]
) -> list[ArmReport]:
    """Per-arm report rows of `experiment`; `arms` lists (model, control, weight) in display order.

    Everything comes from the running totals and latency buckets, none from request rows.
    """
    with engine.connect() as conn:
        return arm_reports_on(conn, experiment, arms)


def arm_reports_on(
    conn: Connection, experiment: str, arms: list[tuple[str, bool, float]]
) -> list[ArmReport]:
    """`arm_reports` on an open connection."""
    out = {
        name: ArmReport(arm=name, control=control, weight=weight) for name, control, weight in arms
    }
    empty = (0, 0.0, 0.0)
    for arm, totals in read_rollup(conn, experiment).items():
        s = out.setdefault(arm, ArmReport(arm=arm, control=False, weight=0.0))
        s.requests = totals.get(REQUESTS, empty)[0]
        s.threads = totals.get(THREADS, empty)[0]
        s.errors = round(totals.get(ERRORS, empty)[1])
        s.fallbacks = round(totals.get(FALLBACKS, empty)[1])
        n, total, _ = totals.get(SCORE, empty)
        s.feedback_count = n
        if n:
            s.mean_score = total / n
            s.high_rating_share = totals.get(HIGH, empty)[1] / n
        s.thumbs_count, ups, _ = totals.get(THUMBS_UP, empty)
        if s.thumbs_count:
            s.thumbs_up_rate = ups / s.thumbs_count
        _add_ineligible(s, totals)
    for column in ("latency_ms", "ttft_ms"):
        for arm, pct in latency_percentiles(conn, experiment, column).items():
            if arm in out:
                setattr(out[arm], column, pct)
    return list(out.values())
