"""What the pages show, read through the lower packages: one engine per database URL, a session
per load, and short-lived caches so a page that reruns on every click does not re-query.

Every loader takes the database URL as its first argument (the cache key) and returns plain
pydantic models or dataclasses (Streamlit pickles cached values).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

import streamlit as st
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from larrylab.config import Settings
from larrylab.dashboard import insights
from larrylab.db import make_engine, normalize_url, utcnow
from larrylab.experiments import (
    ArmReport,
    ExperimentPublic,
    ExperimentReport,
    experiment_report,
    get_experiment,
    list_experiments,
    list_routes,
)
from larrylab.experiments.stats import SampleStats
from larrylab.rollups import LATENCY, read_rollup

T = TypeVar("T")
TTL_S = 10.0
HISTOGRAM_BINS = 40


def database_url() -> str:
    """The database the dashboard reads (`LARRYLAB_DATABASE_URL`, as the CLI passes it)."""
    return normalize_url(Settings().database_url)


def display_url(url: str) -> str:
    """The URL with any password hidden."""
    return make_url(url).render_as_string(hide_password=True)


@st.cache_resource(show_spinner=False)
def engine(url: str) -> Engine:
    """One engine (and connection pool) per database URL for the whole server."""
    return make_engine(url)


@contextmanager
def session(url: str) -> Iterator[Session]:
    """A session for one load (one render)."""
    with Session(engine(url)) as s:
        yield s


def arms_of(exp: ExperimentPublic) -> list[tuple[str, bool, float]]:
    """(model, control, weight) per arm, as the report functions take them."""
    return [(a.model, a.control, a.weight) for a in exp.arms]


@dataclass(frozen=True)
class RouteRow:
    """A route, the model serving it by default and the experiment running on it."""

    route: str
    model: str | None
    experiment: str | None
    arms: str


@dataclass(frozen=True)
class OverviewData:
    """Everything the Overview page shows."""

    routes: list[RouteRow]
    running: list[ExperimentPublic]
    traffic: list[insights.RouteTraffic]
    alerts: list[insights.Alert]
    as_of: datetime


def _arms_text(exp: ExperimentPublic) -> str:
    return ", ".join(
        f"{a.model} {a.weight:g}%{' (control)' if a.control else ''}" for a in exp.arms
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def load_overview(url: str) -> OverviewData:
    """Routes, running experiments, traffic of the last hour and day, and alerts."""
    now = utcnow()
    with session(url) as s:
        experiments = list_experiments(session=s)
        running = [e for e in experiments if e.status == "running"]
        by_route = {e.route: e for e in running}
        defaults = {r.name: r.model for r in list_routes(session=s)}
        traffic = insights.route_traffic(session=s, now=now)
        alerts = insights.alerts(session=s, now=now)
    names = sorted({*defaults, *by_route, *(t.route for t in traffic)})
    routes = [
        RouteRow(
            route=name,
            model=defaults.get(name),
            experiment=by_route[name].name if name in by_route else None,
            arms=_arms_text(by_route[name]) if name in by_route else "",
        )
        for name in names
    ]
    return OverviewData(routes, running, traffic, alerts, now)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def experiment_names(url: str) -> list[ExperimentPublic]:
    """All experiments, running ones first, then newest first."""
    with session(url) as s:
        items = list_experiments(session=s)
    return sorted(items, key=lambda e: e.status != "running")


@dataclass(frozen=True)
class ExperimentData:
    """Everything the Experiment page shows about one experiment."""

    experiment: ExperimentPublic
    arm_reports: list[ArmReport]
    report: ExperimentReport | None
    latency_bins: list[insights.HistogramBin]
    histogram_upper: float
    ratings: list[insights.RatingCount]
    series: list[insights.SeriesPoint]
    bucket_s: int


def round_up(value: float) -> float:
    """The smallest of 1, 2 and 5 times a power of ten that is at least `value` (> 0)."""
    if value <= 0:
        return 1.0
    scale = 10 ** math.floor(math.log10(value))
    return float(next(m * scale for m in (1, 2, 5, 10) if m * scale >= value))


def histogram_range(eng: Engine, experiment: str) -> float:
    """The latency histogram's upper bound, from the running totals (no row is read): a round
    number above every arm's mean + 3 standard deviations."""
    with eng.connect() as conn:
        totals = read_rollup(conn, experiment)
    bounds = [0.0]
    for metrics in totals.values():
        stats = SampleStats(*metrics.get(LATENCY, (0, 0.0, 0.0)))
        if stats.n >= 2:
            bounds.append(stats.mean + 3 * stats.std)
        elif stats.n == 1:
            bounds.append(stats.mean * 2)
    return round_up(max(bounds)) if max(bounds) > 0 else 1000.0


def _in_session(eng: Engine, fn: Callable[..., T]) -> T:
    """Call `fn(session=...)` on a session of its own (for a worker thread)."""
    with Session(eng) as s:
        return fn(session=s)


def series_span(
    exp: ExperimentPublic, now: datetime, window_days: int | None
) -> tuple[datetime, datetime]:
    """The time series' range: the last `window_days` of the experiment (None: all of it)."""
    end = exp.stopped_at or now
    start = exp.started_at or exp.created_at
    return (start if window_days is None else max(start, end - timedelta(days=window_days))), end


@st.cache_data(ttl=TTL_S, show_spinner=False)
def load_experiment(url: str, name: str, window_days: int | None = 7) -> ExperimentData:
    """One experiment's report (per-arm rows, tests against the control), distributions and
    time series (over the last `window_days`). The independent aggregates run at once, each on
    its own connection.
    """
    eng = engine(url)
    with Session(eng) as s:
        exp = get_experiment(session=s, name=name)
    arms = arms_of(exp)
    start, end = series_span(exp, utcnow(), window_days)
    bucket_s = insights.bucket_seconds(start, end)
    upper = histogram_range(eng, name)
    with ThreadPoolExecutor(max_workers=4) as pool:
        rows = pool.submit(
            _in_session, eng, partial(insights.arm_reports, experiment=name, arms=arms)
        )
        bins = pool.submit(
            _in_session,
            eng,
            partial(
                insights.latency_histogram,
                experiment=name,
                upper=upper,
                bins=HISTOGRAM_BINS,
            ),
        )
        series = pool.submit(
            _in_session,
            eng,
            partial(
                insights.arm_timeseries, experiment=name, start=start, end=end, bucket_s=bucket_s
            ),
        )
        ratings = pool.submit(_in_session, eng, partial(insights.rating_histogram, experiment=name))
        report = experiment_report(eng, name, arms) if any(a.control for a in exp.arms) else None
        return ExperimentData(
            exp,
            rows.result(),
            report,
            bins.result(),
            upper,
            ratings.result(),
            series.result(),
            bucket_s,
        )


def clear_caches() -> None:
    """Forget every cached load (after the dashboard itself changed something)."""
    st.cache_data.clear()


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Show a store problem as one sentence on the page (and stop it), never as a traceback."""
    from larrylab.db import DatabaseURLError
    from larrylab.experiments import ConflictError, NotFoundError

    try:
        yield
    except (DatabaseURLError, NotFoundError, ConflictError) as exc:
        st.error(str(exc))
        st.stop()
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        st.error(
            f"The database cannot be read: {first}. Is LARRYLAB_DATABASE_URL right, and is the "
            "schema migrated (`larrylab db upgrade`)?"
        )
        st.stop()
