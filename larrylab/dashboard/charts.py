"""Charts people would rather look at than read (Altair): distributions, time series and
confidence intervals. Each function takes the platform's rows and returns a chart (or None when
there is nothing to draw)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd

from larrylab.dashboard.insights import HistogramBin, RatingCount, SeriesPoint
from larrylab.experiments import CandidateResult

HEIGHT = 260
AnyChart = alt.Chart | alt.LayerChart | alt.VConcatChart | alt.FacetChart


def _frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def latency_distribution(bins: Sequence[HistogramBin], *, upper: float) -> AnyChart | None:
    """Share of each arm's successful requests per latency bin (the last bin: at least)."""
    if not bins:
        return None
    totals: dict[str, int] = defaultdict(int)
    for b in bins:
        totals[b.arm] += b.count
    width = min((b.upper - b.lower for b in bins if b.upper is not None), default=upper)
    df = _frame(
        [
            {
                "arm": b.arm,
                "from_ms": b.lower,
                "to_ms": b.upper if b.upper is not None else b.lower + width,
                "bin": f"{b.lower:,.0f}-{b.upper:,.0f} ms"
                if b.upper is not None
                else f"≥ {b.lower:,.0f} ms",
                "share": b.count / totals[b.arm],
                "requests": b.count,
            }
            for b in bins
        ]
    )
    return (
        alt.Chart(df, height=HEIGHT, title="Latency of successful requests")
        .mark_bar(opacity=0.55, binSpacing=0)
        .encode(
            x=alt.X("from_ms:Q", title="latency (ms); the last bin holds everything slower"),
            x2="to_ms:Q",
            y2=alt.datum(0),
            y=alt.Y(
                "share:Q",
                title="share of the arm's requests",
                axis=alt.Axis(format="%"),
                stack=None,
            ),
            color=alt.Color("arm:N"),
            tooltip=["arm", "bin", "requests", alt.Tooltip("share:Q", format=".1%")],
        )
    )


def rating_distribution(ratings: Sequence[RatingCount]) -> AnyChart | None:
    """Share of each arm's ratings per star, side by side."""
    if not ratings:
        return None
    totals: dict[str, int] = defaultdict(int)
    for r in ratings:
        totals[r.arm] += r.count
    df = _frame(
        [
            {"arm": r.arm, "stars": r.score, "ratings": r.count, "share": r.count / totals[r.arm]}
            for r in ratings
        ]
    )
    return (
        alt.Chart(df, height=HEIGHT, title="Ratings")
        .mark_bar()
        .encode(
            x=alt.X("stars:O", title="stars"),
            xOffset="arm:N",
            y=alt.Y("share:Q", title="share of the arm's ratings", axis=alt.Axis(format="%")),
            color="arm:N",
            tooltip=["arm", "stars", "ratings", alt.Tooltip("share:Q", format=".1%")],
        )
    )


def time_series(series: Sequence[SeriesPoint], *, bucket_s: int) -> AnyChart | None:
    """Requests, error rate and mean latency per arm over time."""
    if not series:
        return None
    df = _frame(
        [
            {
                "time": p.bucket_start,
                "arm": p.arm,
                "requests": p.requests,
                "error rate": p.errors / p.requests if p.requests else None,
                "mean latency (ms)": p.mean_latency_ms,
            }
            for p in series
        ]
    )
    width = f"{bucket_s // 3600} h" if bucket_s >= 3600 else f"{bucket_s // 60} min"
    base = alt.Chart(df, height=150).mark_line(point=len(df) < 60)
    x = alt.X("time:T", title=f"time (UTC, {width} buckets)", scale=alt.Scale(type="utc"))
    charts = [
        base.encode(
            x=x, y=alt.Y("requests:Q"), color="arm:N", tooltip=["time:T", "arm", "requests"]
        ),
        base.encode(
            x=x,
            y=alt.Y("error rate:Q", axis=alt.Axis(format="%")),
            color="arm:N",
            tooltip=["time:T", "arm", alt.Tooltip("error rate:Q", format=".2%")],
        ),
        base.encode(
            x=x,
            y=alt.Y("mean latency (ms):Q"),
            color="arm:N",
            tooltip=["time:T", "arm", alt.Tooltip("mean latency (ms):Q", format=",.0f")],
        ),
    ]
    return alt.vconcat(*charts, title="Over time")


def effect_intervals(candidate: CandidateResult) -> AnyChart | None:
    """Each metric's lift against the control with its confidence interval, and zero."""
    rows = [
        {
            "metric": m.metric,
            "effect": m.test["effect"],
            "low": m.test["ci_low"],
            "high": m.test["ci_high"],
            "outcome": m.outcome,
            "scale": "relative change" if m.relative else "difference (rate)",
        }
        for m in candidate.metrics
        if not m.test.get("error")
    ]
    if not rows:
        return None
    df = _frame(rows)
    outcome_colors = alt.Scale(
        domain=["better", "worse", "flat"], range=["#2e7d32", "#c62828", "#757575"]
    )
    base = alt.Chart(df).encode(y=alt.Y("metric:N", title=None))
    bars = base.mark_errorbar(ticks=True, thickness=2).encode(
        x=alt.X("low:Q", title="lift against the control", axis=alt.Axis(format="%")),
        x2="high:Q",
        color=alt.Color("outcome:N", scale=outcome_colors),
    )
    points = base.mark_point(filled=True, size=60).encode(
        x="effect:Q",
        color=alt.Color("outcome:N", scale=outcome_colors),
        tooltip=[
            "metric",
            "scale",
            alt.Tooltip("effect:Q", format="+.2%"),
            alt.Tooltip("low:Q", format="+.2%"),
            alt.Tooltip("high:Q", format="+.2%"),
        ],
    )
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
    return alt.layer(
        bars,
        points,
        zero,
        title=f"{candidate.arm}: lifts with confidence intervals",
        height=30 * len(rows) + 40,
    )


def category_scores(rows: Sequence[dict[str, Any]]) -> AnyChart | None:
    """Eval mean per category with its 95% interval, one colour per model."""
    if not rows:
        return None
    df = _frame(rows)
    base = alt.Chart(df).encode(
        y=alt.Y("category:N", title=None), yOffset="model:N", color="model:N"
    )
    bars = base.mark_errorbar(ticks=True, thickness=2).encode(
        x=alt.X("ci_low:Q", title="score (mean, 95% interval)", scale=alt.Scale(domain=[0, 1])),
        x2="ci_high:Q",
    )
    points = base.mark_point(filled=True, size=60).encode(
        x="mean:Q",
        tooltip=["model", "category", alt.Tooltip("mean:Q", format=".3f"), "n_samples"],
    )
    return alt.layer(bars, points, title="Eval scores per category", height=HEIGHT)


def quota_progress(rows: Sequence[dict[str, Any]]) -> AnyChart | None:
    """Examples per category against the category's target (a tick)."""
    if not rows:
        return None
    df = _frame(rows)
    base = alt.Chart(df).encode(y=alt.Y("category:N", title=None))
    bars = base.mark_bar().encode(
        x=alt.X("examples:Q", title="examples"), tooltip=["category", "examples", "target"]
    )
    ticks = base.mark_tick(color="#c62828", thickness=3, size=18).encode(x="target:Q")
    return alt.layer(bars, ticks, title="Examples against targets", height=HEIGHT)
