"""Realistic request and rating rows for benchmarks, bulk-loaded (PostgreSQL COPY or SQLite
multi-row INSERT), then the running totals rebuilt once.

Shape: route `larry` runs experiment `larry-v1-vs-gemini` (gemini-flash control 50%, larry-v1
50%) over the last 14 days with a daily rhythm; route `summaries` is served by gemini-flash
outside any experiment. Threads of 1-8 requests; lognormal latency and time to first token
(gemini-flash slower, larry-v1 faster); about 1% errors; larry-v1 falls back to the control
on 1% of requests, and its circuit breaker rerouted the last few minutes' requests; 10% of
requests rated 1-5 (larry-v1 a little better). Usage:

    python bench/request_rows.py --rows 1000000 --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import io
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from sqlalchemy import insert, update
from sqlalchemy.engine import make_url
from sqlmodel import Session, col

from larrylab.config import ArmSpec, ExperimentSpec, ModelSpec
from larrylab.db._engine import make_engine, normalize_url, upgrade
from larrylab.db._schema import Experiment, Feedback, RequestLog
from larrylab.experiments._experiments import create_experiment, set_route
from larrylab.release._evalstore import (
    EvalTaskResult,
    GateDecisionIn,
    record_eval_run,
    record_gate_decision,
    register_eval_set,
)
from larrylab.release._registry import create_model
from larrylab.rollups import rebuild_rollups

EXPERIMENT = "larry-v1-vs-gemini"
CONTROL, CANDIDATE = "gemini-flash", "larry-v1"
DAYS = 14
REQUEST_COLUMNS = [
    *("id", "thread_id", "unit_source", "route", "experiment", "arm", "model"),
    *("upstream_model", "stream", "status", "http_status", "error_class", "error_message"),
    *("fallback_from", "latency_ms", "ttft_ms", "upstream_ms", "overhead_ms"),
    *("prompt_tokens", "completion_tokens", "created_at", "finished_at"),
]
FEEDBACK_COLUMNS = [
    *("target", "request_id", "thread_id", "experiment", "arm", "score", "source"),
    *("created_at", "updated_at"),
]


@dataclass(frozen=True)
class Generated:
    """Column arrays of the generated requests (one entry per request)."""

    now: datetime
    created: np.ndarray  # seconds before `now`
    route_exp: np.ndarray  # True: route larry (experiment), False: route summaries
    candidate: np.ndarray  # True: larry-v1 arm
    thread: np.ndarray
    status_error: np.ndarray
    fallback: np.ndarray
    circuit_open: np.ndarray
    stream: np.ndarray
    latency: np.ndarray
    ttft: np.ndarray
    rated: np.ndarray
    score: np.ndarray


def generate(rows: int, *, now: datetime, seed: int = 7) -> Generated:
    """Draw `rows` requests ending at `now` (vectorised; about a second per million)."""
    rng = np.random.default_rng(seed)
    # A daily rhythm: more traffic in working hours (rejection-free: mix of two uniforms).
    day = rng.integers(0, DAYS, rows)
    busy = rng.random(rows) < 0.8
    hour = np.where(busy, rng.uniform(8, 18, rows), rng.uniform(0, 24, rows))
    created = day * 86400.0 + (24 - hour) * 3600.0 - rng.uniform(0, 3600, rows).clip(0)
    created = np.clip(created, 1.0, DAYS * 86400.0)
    route_exp = rng.random(rows) < 0.9
    thread = rng.integers(0, max(1, rows // 4), rows)
    candidate = route_exp & ((thread * 2654435761 % 1000) < 500)  # by thread, as the router
    status_error = rng.random(rows) < np.where(candidate, 0.012, 0.008)
    fallback = candidate & ~status_error & (rng.random(rows) < 0.01)
    circuit_open = candidate & (created < 300.0)  # the breaker opened 5 minutes ago
    fallback |= circuit_open
    served_candidate = candidate & ~fallback
    latency = rng.lognormal(np.where(served_candidate, np.log(700), np.log(1800)), 0.35)
    ttft = latency * rng.uniform(0.15, 0.35, rows)
    rated = route_exp & (rng.random(rows) < 0.1)
    probs_c = [0.05, 0.10, 0.25, 0.35, 0.25]
    probs_t = [0.04, 0.08, 0.22, 0.38, 0.28]
    score = np.where(
        candidate, rng.choice(5, rows, p=probs_t) + 1, rng.choice(5, rows, p=probs_c) + 1
    )
    return Generated(
        now,
        created,
        route_exp,
        candidate,
        thread,
        status_error,
        fallback,
        circuit_open,
        rng.random(rows) < 0.8,
        latency,
        ttft,
        rated,
        score,
    )


def _request_row(g: Generated, i: int) -> tuple[Any, ...]:
    at = g.now - timedelta(seconds=float(g.created[i]))
    exp = bool(g.route_exp[i])
    arm = (CANDIDATE if g.candidate[i] else CONTROL) if exp else None
    served = CONTROL if (not exp or g.fallback[i]) else arm
    error = bool(g.status_error[i])
    err_class = "circuit_open" if g.circuit_open[i] else ("http_500" if error else None)
    if g.fallback[i] and not g.circuit_open[i]:
        err_class = "http_503"
    latency = float(g.latency[i])
    return (
        f"chatcmpl-{i:09d}",
        f"{'t' if exp else 's'}{int(g.thread[i])}",
        "user",
        "larry" if exp else "summaries",
        EXPERIMENT if exp else None,
        arm,
        served,
        served,
        bool(g.stream[i]),
        "error" if error else "ok",
        500 if error else 200,
        err_class,
        "upstream returned 500" if error else None,
        CANDIDATE if g.fallback[i] else None,
        latency,
        None if error else float(g.ttft[i]),
        latency - 0.5,
        0.5,
        None if error else 350,
        None if error else 180,
        at,
        at + timedelta(milliseconds=latency),
    )


def _feedback_row(g: Generated, i: int) -> tuple[Any, ...]:
    rid = f"chatcmpl-{i:09d}"
    at = g.now - timedelta(seconds=float(g.created[i])) + timedelta(minutes=2)
    arm = CANDIDATE if g.candidate[i] else CONTROL
    return (f"request:{rid}", rid, f"t{int(g.thread[i])}", EXPERIMENT, arm, int(g.score[i]),
            "user", at, at)  # fmt: skip


def _copy_text(rows: list[tuple[Any, ...]]) -> bytes:
    def cell(v: Any) -> str:
        if v is None:
            return "\\N"
        if isinstance(v, bool):
            return "t" if v else "f"
        if isinstance(v, datetime):
            return v.isoformat()
        return str(v)

    buf = io.StringIO()
    for row in rows:
        buf.write("\t".join(cell(v) for v in row))
        buf.write("\n")
    return buf.getvalue().encode()


def _load_postgres(url: str, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for start in range(0, len(rows), 50_000):
                copy.write(_copy_text(rows[start : start + 50_000]))
        conn.commit()


def _load_sqlite(url: str, model: Any, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        for start in range(0, len(rows), 20_000):
            chunk = [dict(zip(columns, r, strict=True)) for r in rows[start : start + 20_000]]
            conn.execute(insert(model.__table__), chunk)
    engine.dispose()


def _evals(session: Session) -> None:
    """Eval results of both models on one eval set, and a passed gate for the candidate."""
    eval_set = "e" * 64
    register_eval_set(session=session, eval_set_hash=eval_set, version="bench", n_samples=140)
    for model, base in ((CONTROL, 0.70), (CANDIDATE, 0.78)):
        results = [
            EvalTaskResult(
                task=f"pws_{c}",
                category=c,
                n_samples=20,
                mean=base + 0.01 * k,
                stderr=0.03,
                ci_low=base + 0.01 * k - 0.06,
                ci_high=base + 0.01 * k + 0.06,
            )
            for k, c in enumerate(
                (
                    "problem_clarification",
                    "tta",
                    "jtbd",
                    "s_curve",
                    "ackoff_dikw",
                    "red_team",
                    "error_recovery",
                )
            )
        ]
        record_eval_run(
            session=session, model=model, eval_set_hash=eval_set, results=results, judge="bench"
        )
    record_gate_decision(
        session=session,
        decision=GateDecisionIn(
            candidate=CANDIDATE,
            baseline=CONTROL,
            eval_set_hash=eval_set,
            passed=True,
            reasons=["overall score clears the floor"],
        ),
        actor="bench",
    )


def setup_registry(url: str, *, started_at: datetime) -> None:
    """Migrate, then register the models, routes and the experiment the rows belong to."""
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        for name in (CONTROL, CANDIDATE):
            create_model(
                session=session, name=name, spec=ModelSpec(base_url="http://127.0.0.1:9/v1")
            )
        set_route(session=session, name="summaries", model=CONTROL)
        create_experiment(
            session=session,
            spec=ExperimentSpec(
                name=EXPERIMENT,
                route="larry",
                arms=[
                    ArmSpec(model=CONTROL, weight=50, control=True),
                    ArmSpec(model=CANDIDATE, weight=50),
                ],
            ),
        )
        _evals(session)
    with engine.begin() as conn:  # the experiment started when its first rows arrived
        conn.execute(
            update(Experiment)
            .where(col(Experiment.name) == EXPERIMENT)
            .values(created_at=started_at, started_at=started_at)
        )
    engine.dispose()


def fill(url: str, rows: int, *, now: datetime | None = None, seed: int = 7) -> dict[str, float]:
    """Set up the registry and load `rows` requests with their ratings; returns timings."""
    url = normalize_url(url)
    now = now or datetime.now(UTC)
    setup_registry(url, started_at=now - timedelta(days=DAYS, hours=1))
    t0 = time.perf_counter()
    g = generate(rows, now=now, seed=seed)
    requests = [_request_row(g, i) for i in range(rows)]
    ratings = [_feedback_row(g, i) for i in np.flatnonzero(g.rated)]
    t1 = time.perf_counter()
    pg = make_url(url).get_backend_name() == "postgresql"
    if pg:
        _load_postgres(url, "request", REQUEST_COLUMNS, requests)
        _load_postgres(url, "feedback", FEEDBACK_COLUMNS, ratings)
    else:
        _load_sqlite(url, RequestLog, REQUEST_COLUMNS, requests)
        _load_sqlite(url, Feedback, FEEDBACK_COLUMNS, ratings)
    t2 = time.perf_counter()
    engine = make_engine(url)
    rebuild_rollups(engine)  # bulk-loaded rows bypass the writer's running totals
    if pg:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    t3 = time.perf_counter()
    return {"generate_s": t1 - t0, "load_s": t2 - t1, "rollups_and_vacuum_s": t3 - t2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    print(fill(args.database_url, args.rows))


if __name__ == "__main__":
    main()
