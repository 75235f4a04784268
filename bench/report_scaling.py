"""How long `larrylab report` (summary + analysis) takes over 1k, 100k and 1M request rows.

The analysis reads per-arm running totals (arm_stat), so it costs the same at any size; the
summary's counts come from the same totals and its percentiles from the per-arm latency
buckets (arm_latency). Rows are bulk-inserted behind the log writer, so the totals are rebuilt
once (timed apart). Usage:

    python bench/report_scaling.py [--postgres URL] [--sizes 1000,100000,1000000]

Writes bench/results/report_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import insert
from sqlalchemy.engine import make_url
from sqlmodel import Session

from larrylab.config import ArmSpec, ExperimentSpec, ModelSpec
from larrylab.db._engine import make_engine, normalize_url, upgrade
from larrylab.db._schema import Feedback, RequestLog
from larrylab.experiments._arm_report import arm_reports
from larrylab.experiments._experiments import create_experiment
from larrylab.experiments._report import experiment_report
from larrylab.release._registry import create_model
from larrylab.rollups import rebuild_rollups

ARMS = [("gemini", True, 90.0), ("larry-v1", False, 10.0)]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _fill(url: str, rows: int, seed: int = 1) -> None:
    engine = make_engine(url)
    with Session(engine) as session:
        for name in ("gemini", "larry-v1"):
            create_model(
                session=session, name=name, spec=ModelSpec(base_url="http://127.0.0.1:9/v1")
            )
        create_experiment(
            session=session,
            spec=ExperimentSpec(
                name="exp",
                route="larry",
                arms=[ArmSpec(model=m, weight=w, control=c) for m, c, w in ARMS],
            ),
        )
    rng = random.Random(seed)
    batch: list[dict[str, Any]] = []
    ratings: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for i in range(rows):
            arm = "larry-v1" if rng.random() < 0.1 else "gemini"
            latency = rng.lognormvariate(6.6 if arm == "gemini" else 5.2, 0.3)
            error = rng.random() < 0.01
            rid = f"r{i}"
            batch.append(
                {
                    "id": rid,
                    "thread_id": f"t{i // 4}",
                    "unit_source": "user",
                    "route": "larry",
                    "experiment": "exp",
                    "arm": arm,
                    "model": arm,
                    "upstream_model": arm,
                    "stream": True,
                    "status": "error" if error else "ok",
                    "http_status": 200,
                    "error_class": None,
                    "error_message": None,
                    "fallback_from": None,
                    "latency_ms": latency,
                    "ttft_ms": latency / 3,
                    "upstream_ms": latency - 0.4,
                    "overhead_ms": 0.4,
                    "prompt_tokens": 100,
                    "completion_tokens": 60,
                    "prompt_message_id": None,
                    "reply_message_id": None,
                    "created_at": T0,
                    "finished_at": T0,
                }
            )
            if rng.random() < 0.3:
                ratings.append(
                    {
                        "target": f"request:{rid}",
                        "request_id": rid,
                        "thread_id": f"t{i // 4}",
                        "experiment": "exp",
                        "arm": arm,
                        "score": rng.randint(1, 5),
                        "comment": None,
                        "source": "user",
                        "created_at": T0,
                        "updated_at": T0,
                    }
                )
            if len(batch) >= 20_000:
                conn.execute(insert(RequestLog.__table__), batch)  # type: ignore[attr-defined]
                if ratings:
                    conn.execute(insert(Feedback.__table__), ratings)  # type: ignore[attr-defined]
                batch, ratings = [], []
        if batch:
            conn.execute(insert(RequestLog.__table__), batch)  # type: ignore[attr-defined]
        if ratings:
            conn.execute(insert(Feedback.__table__), ratings)  # type: ignore[attr-defined]
    engine.dispose()


def _time_report(url: str, repeats: int = 3) -> dict[str, float]:
    engine = make_engine(url)
    out: dict[str, float] = {}
    for name, fn in (
        ("arm_reports", lambda: arm_reports(engine, "exp", ARMS)),
        ("experiment_report", lambda: experiment_report(engine, "exp", ARMS)),
    ):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[f"{name}_s"] = min(times)
    engine.dispose()
    return out


def _postgres_db(base: str) -> str:
    url = make_url(normalize_url(base))
    name = f"larrylab_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(
        url.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_postgres_db(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument(
        "--postgres", default=None, help="PostgreSQL server URL to create a database on"
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "report_scaling.json")
    )
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    backends = ["sqlite"] + (["postgresql"] if args.postgres else [])
    for backend in backends:
        for size in (int(s) for s in args.sizes.split(",")):
            tmp = tempfile.mkdtemp()
            url = (
                f"sqlite:///{tmp}/bench.db" if backend == "sqlite" else _postgres_db(args.postgres)
            )
            upgrade(url)
            start = time.perf_counter()
            _fill(url, size)
            fill_s = time.perf_counter() - start
            start = time.perf_counter()
            engine = make_engine(url)
            rebuild_rollups(engine)  # bulk-inserted rows bypass the writer's running totals
            engine.dispose()
            rebuild_s = time.perf_counter() - start
            timing = _time_report(url)
            results.append(
                {
                    "backend": backend,
                    "rows": size,
                    "fill_s": round(fill_s, 2),
                    "rebuild_rollups_s": round(rebuild_s, 2),
                    **{k: round(v, 4) for k, v in timing.items()},
                }
            )
            print(json.dumps(results[-1]), flush=True)
            if backend == "postgresql":
                _drop_postgres_db(url)
    report = {
        "benchmark": "report_scaling",
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
