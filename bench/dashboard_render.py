"""How long each dashboard page takes to render with 1,000,000 request rows in PostgreSQL.

Fills a fresh database with realistic rows (`request_rows.py`: COPY, then the running totals
rebuilt and VACUUM ANALYZE) and records a pipeline run with 2,600 filtered items, then runs
every page through Streamlit's AppTest: a cold render (caches cleared, so every aggregate is
queried) and a warm one (within the cache's TTL), several times each. Also times the per-arm
summary both ways (`experiments.arm_reports` and `insights.arm_reports`; both read the rollups,
percentiles from the latency buckets). Usage:

    python bench/dashboard_render.py --postgres postgresql://postgres@127.0.0.1:5432/postgres
    python bench/dashboard_render.py --database-url URL   # an already filled database

Writes bench/results/dashboard_render.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import streamlit as st
from sqlalchemy.engine import make_url
from sqlmodel import Session
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from request_rows import CANDIDATE, CONTROL, EXPERIMENT, fill

from larrylab.dashboard.insights import arm_reports as insights_arm_reports
from larrylab.db._engine import make_engine, normalize_url
from larrylab.experiments._arm_report import arm_reports
from larrylab.pipeline.records import Record, atomic_writer, write_records
from larrylab.pipeline.runs import record_pipeline_stage

APP = Path(__file__).resolve().parents[1] / "larrylab" / "dashboard" / "app.py"
# (label, page, query parameters, time-series window); the experiment page's default window
# is the last 7 days, the whole experiment is its most expensive choice.
PAGES: list[tuple[str, str, dict[str, str], str | None]] = [
    ("overview", "overview", {}, None),
    ("experiment", "experiment", {"experiment": EXPERIMENT}, None),
    ("experiment, whole-experiment series", "experiment", {"experiment": EXPERIMENT},
     "whole experiment"),
    ("models", "models", {"model": CANDIDATE}, None),
    ("pipeline", "pipeline", {}, None),
]  # fmt: skip
ARMS = [(CONTROL, True, 50.0), (CANDIDATE, False, 50.0)]


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Rows as JSON lines, written the way the filter stage writes dropped.jsonl."""
    with atomic_writer(path) as fh:
        for row in rows:
            fh.write(orjson.dumps(row) + b"\n")


def _create_database(server: str) -> str:
    url = make_url(normalize_url(server))
    name = f"larrylab_dash_{uuid.uuid4().hex[:8]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')


def _pipeline_run(url: str, run_dir: Path, kept: int = 2000, dropped: int = 600) -> None:
    """A recorded pipeline run whose filter folder holds `kept` + `dropped` items."""
    categories = ("problem_clarification", "tta", "jtbd", "s_curve", "ackoff_dikw")

    def record(i: int) -> Record:
        category = categories[i % len(categories)]
        judge = {"model": "judge", "mean": 3.5 + (i % 4) / 2, "scores": {"fidelity": 4 + i % 2}}
        return Record(
            id=f"rec-{i}",
            messages=[
                {"role": "user", "content": f"Learner question {i} about {category}?"},
                {"role": "assistant", "content": "Coach reply, a few sentences long. " * 8},
            ],
            category=category,
            origin="generated",
            source_thread_id=f"t{i // 5}",
            strategy="persona",
            meta={"judge": judge},
        )

    write_records(run_dir / "filter" / "records.jsonl", (record(i) for i in range(kept)))
    write_jsonl(
        run_dir / "filter" / "dropped.jsonl",
        (
            {"step": "judge", "reason": "judge: mean 2.50 below 4", "record": asdict(record(i))}
            for i in range(kept, kept + dropped)
        ),
    )
    engine = make_engine(url)
    now = datetime.now(UTC)
    quotas = {"quotas": dict.fromkeys(categories, 500)}
    stages: list[tuple[str, dict[str, int], dict[str, Any]]] = [
        ("export", {"exported": 700}, {}),
        ("generate", {"variations": 2100}, {"params": quotas}),
        ("filter", {"kept": kept, "dropped_judge": dropped}, {}),
    ]
    with Session(engine) as s:
        for stage, counts, manifest in stages:
            record_pipeline_stage(
                session=s,
                run_dir=str(run_dir),
                stage=stage,
                status="done",
                counts=counts,
                manifest=manifest,
                started_at=now,
                finished_at=now,
            )
    engine.dispose()


def _time_pages(url: str, repeats: int) -> dict[str, dict[str, float]]:
    os.environ["LARRYLAB_DATABASE_URL"] = url
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()  # imports and the engine, once per process like a running server
    out: dict[str, dict[str, float]] = {}
    for label, page, query, window in PAGES:
        at.switch_page(f"views/{page}.py")
        for key, value in query.items():
            at.query_params[key] = value
        if window is not None:
            at.session_state["window"] = window
        cold, warm = [], []
        for _ in range(repeats):
            st.cache_data.clear()
            start = time.perf_counter()
            at.run()
            cold.append(time.perf_counter() - start)
            if at.exception:
                raise SystemExit(f"{page}: {[e.value for e in at.exception]}")
            start = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - start)
        out[label] = {
            "cold_median_s": round(statistics.median(cold), 3),
            "cold_max_s": round(max(cold), 3),
            "warm_median_s": round(statistics.median(warm), 3),
        }
        print(label, out[label], flush=True)
    return out


def _time_summaries(url: str, repeats: int) -> dict[str, float]:
    engine = make_engine(url)
    times: dict[str, list[float]] = {"experiments.arm_reports": [], "insights.arm_reports": []}
    for _ in range(repeats):
        start = time.perf_counter()
        arm_reports(engine, EXPERIMENT, ARMS)
        times["experiments.arm_reports"].append(time.perf_counter() - start)
        with Session(engine) as s:
            start = time.perf_counter()
            insights_arm_reports(session=s, experiment=EXPERIMENT, arms=ARMS)
            times["insights.arm_reports"].append(time.perf_counter() - start)
    engine.dispose()
    return {f"{k}_median_s": round(statistics.median(v), 3) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", help="PostgreSQL server URL to create a database on")
    parser.add_argument("--database-url", help="an already filled database (skips the fill)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the created database")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "dashboard_render.json")
    )
    args = parser.parse_args()
    if not args.postgres and not args.database_url:
        parser.error("give --postgres SERVER_URL or --database-url URL")
    fill_timing: dict[str, float] = {}
    url = normalize_url(args.database_url or _create_database(args.postgres))
    try:
        if not args.database_url:
            fill_timing = {k: round(v, 1) for k, v in fill(url, args.rows).items()}
            print("filled", fill_timing, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            _pipeline_run(url, Path(tmp) / "run")
            pages = _time_pages(url, args.repeats)
        summaries = _time_summaries(url, args.repeats)
    finally:
        if not args.database_url and not args.keep:
            _drop_database(url)
    report: dict[str, Any] = {
        "benchmark": "dashboard_render",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "backend": make_url(url).get_backend_name(),
        "rows": args.rows if not args.database_url else None,
        "repeats": args.repeats,
        "fill": fill_timing,
        "pages": pages,
        "summaries": summaries,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
