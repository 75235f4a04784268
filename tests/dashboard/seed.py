"""A small store seeded with larrylab's own functions, for the dashboard and insights tests.

Two experiments (one balanced, one with a sample ratio mismatch), a route outside any experiment,
a circuit breaker that rerouted requests minutes ago, ratings, a registry with a gated and a
failed candidate and their eval results, and a pipeline run with its stage folders.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import update
from sqlmodel import Session

from larrylab.config import ArmSpec, ExperimentSpec, ModelSpec
from larrylab.db._engine import make_engine, upgrade
from larrylab.db._schema import Experiment
from larrylab.experiments._experiments import create_experiment, set_route
from larrylab.experiments._feedback import Attribution, upsert_feedback
from larrylab.pipeline.records import Record, atomic_writer, write_records
from larrylab.pipeline.runs import record_pipeline_stage
from larrylab.release._evalstore import (
    EvalTaskResult,
    GateDecisionIn,
    record_eval_run,
    record_gate_decision,
    register_eval_set,
)
from larrylab.release._registry import create_model, register_trained_model
from larrylab.requestlog import RequestRecord
from tests.conftest import write_records as log_records

EXPERIMENT = "larry-v1-vs-gemini"
SKEWED = "skewed-split"
CONTROL, CANDIDATE = "gemini-flash", "larry-v1"
GATED, FAILED = "larry-v2", "larry-v3"
EVAL_SET = "5f2a" * 16
CATEGORIES = ("problem_clarification", "tta", "jtbd")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Rows as JSON lines, written the way the filter stage writes dropped.jsonl."""
    with atomic_writer(path) as fh:
        for row in rows:
            fh.write(orjson.dumps(row) + b"\n")


@dataclass
class Seeded:
    """What was written, for the tests to check the pages against."""

    url: str
    now: datetime
    records: list[RequestRecord] = field(default_factory=list)
    scores: dict[str, list[int]] = field(default_factory=dict)  # experiment arm -> ratings
    thumbs: dict[str, list[int]] = field(default_factory=dict)  # experiment arm -> 1 up, 0 down
    run_dir: Path | None = None


def _record(
    rid: str,
    thread: str,
    *,
    at: datetime,
    route: str = "larry",
    experiment: str | None = EXPERIMENT,
    arm: str | None = CONTROL,
    latency: float = 300.0,
    status: str = "ok",
    fallback_from: str | None = None,
    error_class: str | None = None,
) -> RequestRecord:
    served = CONTROL if fallback_from else (arm or CONTROL)
    return RequestRecord(
        id=rid,
        thread_id=thread,
        unit_source="user",
        route=route,
        experiment=experiment,
        arm=arm,
        model=served,
        upstream_model=served,
        stream=True,
        status=status,
        http_status=200 if status == "ok" else 502,
        error_class=error_class or ("http_502" if status == "error" else None),
        error_message="upstream failed" if status == "error" else None,
        fallback_from=fallback_from,
        latency_ms=latency,
        ttft_ms=latency / 4 if status == "ok" else None,
        upstream_ms=latency - 1,
        overhead_ms=1.0,
        prompt_tokens=12,
        completion_tokens=30,
        protocol="openai",
        ineligible=None,
        stripped=False,
        created_at=at,
        finished_at=at + timedelta(milliseconds=latency),
        prompt=[{"role": "user", "content": f"How do I start with {thread}?"}],
        reply={"role": "assistant", "content": "Start from the problem, not the solution."},
    )


def _requests(now: datetime) -> list[RequestRecord]:
    out = []
    for i in range(60):  # balanced experiment: 30 threads per arm, two requests each
        arm = CANDIDATE if i % 2 else CONTROL
        for j in range(2):
            n = i * 2 + j
            error = arm == CANDIDATE and n % 10 == 3
            latency = (120.0 + (n * 37) % 90) if arm == CANDIDATE else (300.0 + (n * 53) % 210)
            out.append(
                _record(
                    f"req-{n:03d}",
                    f"thread-{i:02d}",
                    at=now - timedelta(minutes=3 * i + j, seconds=30),
                    arm=arm,
                    latency=latency,
                    status="error" if error else "ok",
                )
            )
    for k in range(3):  # larry-v1's breaker is open: its traffic went to the control
        out.append(
            _record(
                f"open-{k}",
                f"thread-{k * 2 + 1:02d}",
                at=now - timedelta(minutes=2, seconds=k),
                arm=CANDIDATE,
                latency=310.0 + k,
                fallback_from=CANDIDATE,
                error_class="circuit_open",
            )
        )
    for k, reasons in enumerate(["tools", "tools,cached_content", "non_text_parts", "tools"]):
        # Requests the candidate could not serve as sent, served by the control in its threads.
        out.append(
            replace(
                _record(
                    f"inel-{k}",
                    f"thread-{k * 2:02d}",
                    at=now - timedelta(minutes=6 * k + 1),
                    arm=CONTROL,
                    latency=700.0 + k,
                ),
                ineligible=reasons,
            )
        )
    for i in range(48):  # 40 threads on the control, 8 on the candidate at 50/50: SRM
        arm = CANDIDATE if i < 8 else CONTROL
        out.append(
            _record(
                f"skew-{i:02d}",
                f"skew-thread-{i:02d}",
                at=now - timedelta(hours=5, minutes=i),
                route="workshop",
                experiment=SKEWED,
                arm=arm,
                latency=200.0 + i,
            )
        )
    for i in range(6):  # a route outside any experiment; two requests older than a day
        out.append(
            _record(
                f"sum-{i}",
                f"sum-thread-{i}",
                at=now - (timedelta(days=2) if i < 2 else timedelta(minutes=10 * i)),
                route="summaries",
                experiment=None,
                arm=None,
                latency=90.0 + i,
                status="error" if i == 5 else "ok",
            )
        )
    return out


def _registry(session: Session, now: datetime) -> None:
    for name in (CONTROL, CANDIDATE):
        create_model(
            session=session,
            name=name,
            spec=ModelSpec(base_url="http://127.0.0.1:9/v1", model=name),
            state="promoted" if name == CONTROL else "canary",
        )
    set_route(session=session, name="coach", model=CONTROL)
    set_route(session=session, name="summaries", model=CONTROL)
    for name, route, weights in ((EXPERIMENT, "larry", 50), (SKEWED, "workshop", 50)):
        create_experiment(
            session=session,
            spec=ExperimentSpec(
                name=name,
                route=route,
                arms=[
                    ArmSpec(model=CONTROL, weight=100 - weights, control=True),
                    ArmSpec(model=CANDIDATE, weight=weights),
                ],
            ),
        )
    # The experiments started a day ago, before their first requests.
    session.execute(
        update(Experiment).values(
            created_at=now - timedelta(days=1), started_at=now - timedelta(days=1)
        )
    )
    session.commit()


def _rate(url: str, records: list[RequestRecord], seeded: Seeded) -> None:
    engine = make_engine(url)
    pattern = {CONTROL: [3, 4, 2, 5, 3, 4], CANDIDATE: [4, 5, 4, 3, 5, 5]}
    rated = (
        r for r in records if r.experiment == EXPERIMENT and r.status == "ok" and not r.ineligible
    )
    for n, rec in enumerate(rated):
        assert rec.arm is not None
        # Two in three rated with stars, one in three with a thumb alone; a thumb every other.
        score = None if n % 3 == 2 else pattern[rec.arm][n % 6]
        thumb = (1 if score is None or score >= 4 else 0) if n % 2 == 0 or score is None else None
        upsert_feedback(
            engine,
            target=Attribution(rec.thread_id, rec.experiment, rec.arm),
            request_id=rec.id,
            score=score,
            thumb=thumb,
            comment=None,
            source="user",
        )
        if score is not None:
            seeded.scores.setdefault(rec.arm, []).append(score)
        if thumb is not None:
            seeded.thumbs.setdefault(rec.arm, []).append(thumb)
    engine.dispose()


def _task(category: str, mean: float, n: int = 10) -> EvalTaskResult:
    scores = {f"{category}-{i}": min(1.0, max(0.0, mean + (i % 3 - 1) * 0.05)) for i in range(n)}
    return EvalTaskResult(
        task=f"pws_{category}",
        category=category,
        n_samples=n,
        mean=mean,
        stderr=0.03,
        ci_low=mean - 0.06,
        ci_high=mean + 0.06,
        sample_scores=scores,
    )


def _evals(session: Session) -> None:
    lineage = {
        "base_model": "Qwen/Qwen2.5-0.5B-Instruct",
        "dataset_manifest_hash": "d1e2f3a4b5c6d7e8f9a0",
        "adapter_path": "/runs/2026-11-20/adapter",
        "training_metrics": {"train_loss": 1.234, "eval_loss": 1.456},
    }
    for name in (GATED, FAILED):
        register_trained_model(
            session=session,
            name=name,
            spec=ModelSpec(base_url="http://127.0.0.1:9/v1", model=name),
            lineage=lineage,
            actor="larrylab train",
        )
    register_eval_set(session=session, eval_set_hash=EVAL_SET, version="pws-v1", n_samples=30)
    means = {CONTROL: 0.70, GATED: 0.82, FAILED: 0.41}
    for model, m in means.items():
        results = [_task(c, m + 0.02 * k) for k, c in enumerate(CATEGORIES)]
        record_eval_run(
            session=session, model=model, eval_set_hash=EVAL_SET, results=results, judge="sim"
        )
    for candidate, passed in ((GATED, True), (FAILED, False)):
        categories = {
            c: {"n": 10, "candidate": means[candidate] + 0.02 * k, "baseline": 0.70 + 0.02 * k}
            for k, c in enumerate(CATEGORIES)
        }
        reasons = (
            ["overall score 0.840 clears the floor 0.60"]
            if passed
            else ["overall score 0.430 is below the floor 0.60"]
        )
        record_gate_decision(
            session=session,
            decision=GateDecisionIn(
                candidate=candidate,
                baseline=CONTROL,
                eval_set_hash=EVAL_SET,
                passed=passed,
                reasons=reasons,
                evidence={"categories": categories, "n_paired": 30},
            ),
            actor="larrylab gate",
        )


def _pipeline(session: Session, run_dir: Path, now: datetime) -> None:
    def rec(i: int, category: str, judge: float | None) -> Record:
        meta = {}
        if judge is not None:
            meta["judge"] = {
                "model": "sim-judge",
                "mean": judge,
                "scores": {"pws_fidelity": 5, "socratic": 4},
                "rationales": {"pws_fidelity": "names the job", "socratic": "asks first"},
            }
        return Record(
            id=f"rec-{i}",
            messages=[
                {"role": "user", "content": f"Question {i} about {category}"},
                {"role": "assistant", "content": f"Coach answer number {i} on {category}"},
            ],
            category=category,
            origin="generated",
            source_thread_id=f"thread-{i}",
            strategy="persona",
            meta=meta,
        )

    kept = [rec(1, "tta", 4.5), rec(2, "tta", 4.0), rec(3, "jtbd", 4.25)]
    write_records(run_dir / "filter" / "records.jsonl", kept)
    dropped = [
        {
            "step": "judge",
            "reason": "judge: socratic 2 below 3",
            "record": as_object(rec(4, "tta", 2.5)),
        },
        {
            "step": "rules",
            "reason": "reply shorter than 20 characters",
            "record": as_object(rec(5, "jtbd", None)),
        },
    ]
    write_jsonl(run_dir / "filter" / "dropped.jsonl", dropped)
    stages = [
        ("export", {"threads": 12, "exported": 12}, {}),
        (
            "generate",
            {"variations": 20, "requests_failed": 1},
            {"params": {"quotas": {"tta": 4, "jtbd": 2, "s_curve": 3}}},
        ),
        ("filter", {"kept": 3, "dropped_judge": 1, "dropped_rules": 1}, {"params": {}}),
    ]
    for k, (stage, counts, manifest) in enumerate(stages):
        record_pipeline_stage(
            session=session,
            run_dir=str(run_dir),
            stage=stage,
            status="done",
            counts=counts,
            manifest=manifest,
            started_at=now - timedelta(minutes=30 - 5 * k),
            finished_at=now - timedelta(minutes=27 - 5 * k),
        )


def as_object(rec: Record) -> dict[str, object]:
    """A record as the JSON object the pipeline writes."""
    value: dict[str, object] = orjson.loads(rec.to_json())
    return value


def seed(url: str, run_dir: Path | None = None) -> Seeded:
    """Migrate `url` and fill it (see the module docstring)."""
    upgrade(url)
    now = datetime.now(UTC).replace(microsecond=0)
    seeded = Seeded(url=url, now=now)
    engine = make_engine(url)
    with Session(engine) as session:
        _registry(session, now)
    seeded.records = _requests(now)
    log_records(url, seeded.records, batch_size=25)
    _rate(url, seeded.records, seeded)
    with Session(engine) as session:
        _evals(session)
        if run_dir is not None:
            _pipeline(session, run_dir, now)
            seeded.run_dir = run_dir
    engine.dispose()
    return seeded
