"""Eval sets, eval results and gate decisions, as the evals package stores them.

The evals package runs inspect-ai and decides the gate; the platform keeps the outcome, so
that promotion (server-side) can check that exactly this registry entry passed against the
current baseline and eval set.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import Session, col, select

from larrylab.db import EvalResult, EvalSet, GateDecision, ModelEntry, utcnow
from larrylab.experiments import NotFoundError
from larrylab.release._audit import record_event
from larrylab.release._registry import set_state

# States from which a gate decision moves a model to passed or failed; a canary or promoted
# model keeps its state (the decision is still stored and audited).
_GATEABLE = frozenset({"registered", "evaluating", "passed", "failed", "retired"})


class EvalTaskResult(BaseModel):
    """One task's scores for one model: mean in [0, 1], its standard error and 95% CI."""

    task: str
    category: str
    n_samples: int
    mean: float
    stderr: float
    ci_low: float
    ci_high: float
    metrics: dict[str, float] = Field(default_factory=dict)
    sample_scores: dict[str, float] = Field(default_factory=dict)
    log_path: str | None = None


class EvalResultPublic(EvalTaskResult):
    """A stored eval result."""

    run_id: str
    model: str
    eval_set_hash: str
    judge: str | None
    created_at: datetime


class EvalSetPublic(BaseModel):
    """A frozen eval set known to the store."""

    eval_set_hash: str
    version: str
    n_samples: int
    created_at: datetime


class GateDecisionIn(BaseModel):
    """The gate's verdict as the evals package computes it."""

    candidate: str
    baseline: str
    eval_set_hash: str
    passed: bool
    reasons: list[str]
    evidence: dict[str, Any] = Field(default_factory=dict)


class GateDecisionPublic(GateDecisionIn):
    """A stored gate decision."""

    id: int
    actor: str
    created_at: datetime


def register_eval_set(
    *, session: Session, eval_set_hash: str, version: str, n_samples: int
) -> None:
    """Record an eval set; the most recently registered one is the current one."""
    existing = session.get(EvalSet, eval_set_hash)
    if existing is not None:
        return
    session.add(EvalSet(hash=eval_set_hash, version=version, n_samples=n_samples))
    session.commit()


def current_eval_set(*, session: Session) -> EvalSetPublic | None:
    """The eval set registered last, or None before any eval has run."""
    row = session.exec(
        select(EvalSet).order_by(col(EvalSet.created_at).desc(), col(EvalSet.hash))
    ).first()
    if row is None:
        return None
    return EvalSetPublic(
        eval_set_hash=row.hash,
        version=row.version,
        n_samples=row.n_samples,
        created_at=row.created_at,
    )


def record_eval_run(
    *,
    session: Session,
    model: str,
    eval_set_hash: str,
    results: list[EvalTaskResult],
    judge: str | None,
    log_dir: str | None = None,
) -> str:
    """Store one eval run's per-task results for a model; returns the run id."""
    if session.get(ModelEntry, model) is None:
        raise NotFoundError(f"unknown model {model!r}")
    run_id = uuid.uuid4().hex
    now = utcnow()
    for r in results:
        session.add(
            EvalResult(
                run_id=run_id,
                model=model,
                eval_set_hash=eval_set_hash,
                task=r.task,
                category=r.category,
                judge=judge,
                n_samples=r.n_samples,
                mean=r.mean,
                stderr=r.stderr,
                ci_low=r.ci_low,
                ci_high=r.ci_high,
                metrics=orjson.dumps(r.metrics).decode(),
                sample_scores=orjson.dumps(r.sample_scores).decode(),
                log_path=r.log_path or log_dir,
                created_at=now,
            )
        )
    record_event(
        session=session,
        kind="model",
        subject=model,
        action="eval",
        actor="larrylab eval",
        reason=f"{len(results)} task(s) on eval set {eval_set_hash[:12]}",
        details={"run_id": run_id, "tasks": {r.task: r.mean for r in results}},
    )
    session.commit()
    return run_id


def _result_public(row: EvalResult) -> EvalResultPublic:
    return EvalResultPublic(
        task=row.task,
        category=row.category,
        n_samples=row.n_samples,
        mean=row.mean,
        stderr=row.stderr,
        ci_low=row.ci_low,
        ci_high=row.ci_high,
        metrics=orjson.loads(row.metrics or "{}"),
        sample_scores=orjson.loads(row.sample_scores or "{}"),
        log_path=row.log_path,
        run_id=row.run_id,
        model=row.model,
        eval_set_hash=row.eval_set_hash,
        judge=row.judge,
        created_at=row.created_at,
    )


def latest_eval_results(
    *, session: Session, model: str, eval_set_hash: str | None = None
) -> list[EvalResultPublic]:
    """The newest result per task for a model (on one eval set, or on the newest one used)."""
    if eval_set_hash is None:
        newest = session.exec(
            select(EvalResult.eval_set_hash)
            .where(EvalResult.model == model)
            .order_by(col(EvalResult.id).desc())
        ).first()
        if newest is None:
            return []
        eval_set_hash = newest
    newest_ids = (
        select(func.max(EvalResult.id))
        .where(EvalResult.model == model, EvalResult.eval_set_hash == eval_set_hash)
        .group_by(EvalResult.task)
    )
    rows = session.exec(
        select(EvalResult).where(col(EvalResult.id).in_(newest_ids)).order_by(EvalResult.task)
    )
    return [_result_public(r) for r in rows]


def _decision_public(row: GateDecision) -> GateDecisionPublic:
    assert row.id is not None
    return GateDecisionPublic(
        id=row.id,
        candidate=row.candidate,
        baseline=row.baseline,
        eval_set_hash=row.eval_set_hash,
        passed=row.passed,
        reasons=orjson.loads(row.reasons or "[]"),
        evidence=orjson.loads(row.evidence or "{}"),
        actor=row.actor,
        created_at=row.created_at,
    )


def endpoint_of(entry: ModelEntry) -> dict[str, str | None]:
    """What decides which model answers when an entry is called (its serving identity)."""
    return {
        "api": entry.api,
        "base_url": entry.base_url,
        "model": entry.upstream_model,
        "litellm_model": entry.litellm_model,
    }


def record_gate_decision(
    *, session: Session, decision: GateDecisionIn, actor: str
) -> GateDecisionPublic:
    """Store a gate decision and move the candidate to `passed` or `failed` (audited)."""
    entry = session.get(ModelEntry, decision.candidate)
    if entry is None:
        raise NotFoundError(f"unknown model {decision.candidate!r}")
    if session.get(ModelEntry, decision.baseline) is None:
        raise NotFoundError(f"unknown baseline model {decision.baseline!r}")
    # The decision holds for this exact entry: how it was reached when it was gated.
    evidence = {**decision.evidence, "candidate_endpoint": endpoint_of(entry)}
    row = GateDecision(
        candidate=decision.candidate,
        baseline=decision.baseline,
        eval_set_hash=decision.eval_set_hash,
        passed=decision.passed,
        reasons=orjson.dumps(decision.reasons).decode(),
        evidence=orjson.dumps(evidence, option=orjson.OPT_NON_STR_KEYS).decode(),
        actor=actor,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    verdict = "passed" if decision.passed else "failed"
    why = "; ".join(decision.reasons) or verdict
    summary = {"gate_decision_id": row.id, "baseline": decision.baseline}
    if entry.state in _GATEABLE:
        set_state(session, entry, verdict, actor=actor, reason=f"gate: {why}", details=summary)
    else:
        record_event(
            session=session,
            kind="model",
            subject=entry.name,
            action="gate",
            actor=actor,
            reason=f"gate {verdict} (state {entry.state} kept): {why}",
            details=summary,
        )
    session.commit()
    session.refresh(row)
    return _decision_public(row)


def latest_gate_decision(*, session: Session, candidate: str) -> GateDecisionPublic | None:
    """The newest gate decision about a candidate, or None if it was never gated."""
    row = session.exec(
        select(GateDecision)
        .where(GateDecision.candidate == candidate)
        .order_by(col(GateDecision.id).desc())
    ).first()
    return None if row is None else _decision_public(row)


def get_gate_decision(*, session: Session, decision_id: int) -> GateDecisionPublic:
    """One gate decision by id."""
    row = session.get(GateDecision, decision_id)
    if row is None:
        raise NotFoundError(f"unknown gate decision {decision_id}")
    return _decision_public(row)
