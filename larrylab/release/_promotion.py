"""Guarded promotion: only a gated model starts a canary, which ramps while live guardrails hold.

`promote` refuses unless the candidate's newest gate decision passed against the route's
current model and the current eval set. It then starts a canary experiment (current model as
control, candidate at the canary weight). `advance_rollouts` — run periodically by every
router process and by `larrylab rollout tick` — ramps the candidate through the steps
(10 -> 25 -> 50 -> 100 by default) while the sequential tests of the statistics module find
the candidate's error rate, fallback rate and high-rating share not significantly worse, and
rolls it back automatically the moment one is. Every step is written to the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from larrylab.config import ArmSpec, ExperimentSpec, Settings
from larrylab.db import Experiment, ModelEntry, Rollout, Route, utcnow
from larrylab.experiments import (
    ConflictError,
    NotFoundError,
    ReportOptions,
    create_experiment,
    experiment_report,
    update_experiment,
)
from larrylab.release._audit import record_event
from larrylab.release._evalstore import current_eval_set, endpoint_of, latest_gate_decision
from larrylab.release._registry import set_state
from larrylab.rollups import REQUESTS, read_rollup

ACTIVE = "active"
GUARDRAILS = ("error_rate", "fallback_rate", "high_rating_share")


@dataclass(frozen=True)
class RolloutPolicy:
    """When a canary may take its next step."""

    steps: tuple[float, ...] = (10.0, 25.0, 50.0, 100.0)
    min_step_s: float = 3600.0
    min_requests: int = 100
    alpha: float = 0.05


def policy_from_settings(settings: Settings) -> RolloutPolicy:
    """The rollout policy configured by `LARRYLAB_ROLLOUT_*` settings."""
    return RolloutPolicy(
        steps=settings.rollout_step_weights,
        min_step_s=settings.rollout_step_min_s,
        min_requests=settings.rollout_min_requests,
    )


class Readiness(BaseModel):
    """Whether a candidate may be promoted on a route now, and why not."""

    ok: bool
    reason: str
    baseline: str | None = None
    gate_decision_id: int | None = None


class RolloutPublic(BaseModel):
    """A rollout as the API, CLI and dashboard show it."""

    id: int
    route: str
    candidate: str
    baseline: str
    experiment: str
    gate_decision_id: int | None
    status: str
    weight: float
    steps: list[float]
    step_started_at: datetime
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class RolloutCheck(BaseModel):
    """What `advance_rollouts` did with one active rollout."""

    rollout: RolloutPublic
    action: str
    reasons: list[str]


def _public(r: Rollout) -> RolloutPublic:
    assert r.id is not None
    return RolloutPublic(
        id=r.id,
        route=r.route,
        candidate=r.candidate,
        baseline=r.baseline,
        experiment=r.experiment,
        gate_decision_id=r.gate_decision_id,
        status=r.status,
        weight=r.weight,
        steps=[float(s) for s in r.steps.split(",") if s],
        step_started_at=r.step_started_at,
        created_at=r.created_at,
        updated_at=r.updated_at,
        finished_at=r.finished_at,
    )


def _active(session: Session, route: str) -> Rollout | None:
    return session.exec(
        select(Rollout).where(Rollout.route == route, Rollout.status == ACTIVE)
    ).first()


def promotion_readiness(*, session: Session, candidate: str, route: str) -> Readiness:
    """Check, without changing anything, whether `candidate` may be promoted on `route`."""
    entry = session.get(ModelEntry, candidate)
    if entry is None:
        return Readiness(ok=False, reason=f"unknown model {candidate!r}")
    current = session.get(Route, route)
    if current is None:
        return Readiness(ok=False, reason=f"unknown route {route!r} (it has no default model)")
    baseline = current.model
    if baseline == candidate:
        return Readiness(ok=False, reason=f"{candidate!r} already serves route {route!r}")
    active = _active(session, route)
    if active is not None:
        return Readiness(
            ok=False,
            reason=f"route {route!r} is already rolling out {active.candidate!r}; "
            f"roll it back or let it finish first",
        )
    running = session.exec(
        select(Experiment).where(Experiment.route == route, Experiment.status == "running")
    ).first()
    if running is not None:
        return Readiness(
            ok=False, reason=f"route {route!r} runs experiment {running.name!r}; stop it first"
        )
    decision = latest_gate_decision(session=session, candidate=candidate)
    if decision is None:
        return Readiness(ok=False, reason=f"{candidate!r} was never gated; run `larrylab gate`")
    if not decision.passed:
        why = "; ".join(decision.reasons) or "failed"
        return Readiness(ok=False, reason=f"{candidate!r} failed the gate: {why}")
    if decision.baseline != baseline:
        return Readiness(
            ok=False,
            reason=f"{candidate!r} was gated against {decision.baseline!r}, but route "
            f"{route!r} is now served by {baseline!r}; gate it again",
        )
    eval_set = current_eval_set(session=session)
    if eval_set is None or decision.eval_set_hash != eval_set.eval_set_hash:
        return Readiness(
            ok=False,
            reason=f"{candidate!r} was gated on eval set {decision.eval_set_hash[:12]}, "
            "which is not the current eval set; gate it again",
        )
    gated = decision.evidence.get("candidate_endpoint")
    if gated is not None and gated != endpoint_of(entry):
        return Readiness(
            ok=False,
            reason=f"{candidate!r} now points at another endpoint than the one gated "
            f"({gated.get('base_url') or gated.get('litellm_model')}); gate it again",
        )
    if entry.state != "passed":
        return Readiness(
            ok=False, reason=f"{candidate!r} is in state {entry.state!r}, not 'passed'"
        )
    return Readiness(ok=True, reason="gate passed", baseline=baseline, gate_decision_id=decision.id)


def _arms(baseline: str, candidate: str, weight: float) -> list[ArmSpec]:
    # Control first: GrowthBook ranges then grow the candidate's range at the top end, so
    # threads already on the candidate stay there as it ramps.
    return [
        ArmSpec(model=baseline, weight=100.0 - weight, control=True),
        ArmSpec(model=candidate, weight=weight),
    ]


def promote(
    *,
    session: Session,
    candidate: str,
    route: str,
    actor: str,
    canary_weight: float = 10.0,
    policy: RolloutPolicy | None = None,
) -> RolloutPublic:
    """Start a canary of a gated candidate on a route; ConflictError says why it is refused."""
    policy = policy or RolloutPolicy()
    if not 0 < canary_weight < 100:
        raise ValueError("canary weight must be between 0 and 100 (exclusive)")
    ready = promotion_readiness(session=session, candidate=candidate, route=route)
    if not ready.ok:
        if ready.reason.startswith("unknown"):
            raise NotFoundError(ready.reason)
        raise ConflictError(f"promotion refused: {ready.reason}")
    assert ready.baseline is not None
    entry = session.get(ModelEntry, candidate)
    assert entry is not None
    steps = sorted({canary_weight, *(s for s in policy.steps if s > canary_weight), 100.0})
    now = utcnow()
    rollout = Rollout(
        route=route,
        candidate=candidate,
        baseline=ready.baseline,
        experiment="",
        gate_decision_id=ready.gate_decision_id,
        status=ACTIVE,
        weight=canary_weight,
        steps=",".join(f"{s:g}" for s in steps),
        step_started_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(rollout)
    session.flush()
    rollout.experiment = f"{route}-rollout-{rollout.id}"
    set_state(session, entry, "canary", actor=actor, reason=f"canary on route {route!r}")
    record_event(
        session=session,
        kind="rollout",
        subject=route,
        action="start",
        actor=actor,
        reason=f"canary {candidate!r} at {canary_weight:g}% against {ready.baseline!r}",
        details={"rollout_id": rollout.id, "gate_decision_id": ready.gate_decision_id},
    )
    spec = ExperimentSpec(
        name=rollout.experiment,
        route=route,
        arms=_arms(ready.baseline, candidate, canary_weight),
        seed=rollout.experiment,
        description=f"guarded rollout of {candidate} (gate decision {ready.gate_decision_id})",
    )
    try:
        create_experiment(session=session, spec=spec)  # commits the rollout with it
    except Exception:
        session.rollback()
        raise
    session.refresh(rollout)
    return _public(rollout)


def _finish(session: Session, rollout: Rollout, status: str, *, actor: str, reason: str) -> None:
    """Stop the rollout's experiment and close the rollout (the caller commits)."""
    now = utcnow()
    exp = session.exec(select(Experiment).where(Experiment.name == rollout.experiment)).first()
    if exp is not None and exp.status == "running":
        exp.status, exp.stopped_at, exp.updated_at = "stopped", now, now
        session.add(exp)
    rollout.status, rollout.finished_at, rollout.updated_at = status, now, now
    session.add(rollout)
    record_event(
        session=session,
        kind="rollout",
        subject=rollout.route,
        action=status,
        actor=actor,
        reason=reason,
        details={"rollout_id": rollout.id, "candidate": rollout.candidate},
    )


def _model(session: Session, name: str) -> ModelEntry:
    entry = session.get(ModelEntry, name)
    if entry is None:
        raise NotFoundError(f"unknown model {name!r}")
    return entry


def _rollback_target(session: Session, route: str) -> Rollout | None:
    """What `rollback` would undo: the active canary, else the completed promotion serving."""
    rollout = _active(session, route)
    if rollout is not None:
        return rollout
    done = session.exec(
        select(Rollout)
        .where(Rollout.route == route, Rollout.status == "completed")
        .order_by(col(Rollout.id).desc())
    ).first()
    current = session.get(Route, route)
    if done is None or current is None or current.model != done.candidate:
        return None
    return done


def rollback_readiness(*, session: Session, route: str) -> Readiness:
    """Whether `route` has something to roll back, and what (or why not)."""
    target = _rollback_target(session, route)
    if target is None:
        return Readiness(
            ok=False, reason=f"route {route} has no active or completed rollout to roll back"
        )
    if target.status == ACTIVE:
        what = (
            f"ends the canary of {target.candidate} ({target.weight:g}%) and keeps "
            f"{target.baseline}"
        )
    else:
        what = f"puts {target.baseline} back in place of {target.candidate}"
    return Readiness(ok=True, reason=what, baseline=target.baseline)


def rollback(*, session: Session, route: str, actor: str, reason: str) -> RolloutPublic:
    """Roll back a route: end its active canary, or undo its last completed promotion."""
    target = _rollback_target(session, route)
    if target is None:
        raise ConflictError(f"route {route!r} has no active or completed rollout to roll back")
    if target.status == ACTIVE:
        rollout = target
        _finish(session, rollout, "rolled_back", actor=actor, reason=reason)
        candidate = _model(session, rollout.candidate)
        set_state(session, candidate, "failed", actor=actor, reason=f"rolled back: {reason}")
        session.commit()
        session.refresh(rollout)
        return _public(rollout)
    done, current = target, session.get(Route, route)
    assert current is not None
    current.model, current.updated_at = done.baseline, utcnow()
    session.add(current)
    set_state(session, _model(session, done.candidate), "retired", actor=actor, reason=reason)
    baseline = _model(session, done.baseline)
    if baseline.state != "promoted":
        set_state(session, baseline, "promoted", actor=actor, reason=f"restored: {reason}")
    done.status, done.updated_at = "rolled_back", utcnow()
    session.add(done)
    record_event(
        session=session,
        kind="rollout",
        subject=route,
        action="rolled_back",
        actor=actor,
        reason=reason,
        details={"rollout_id": done.id, "restored": done.baseline},
    )
    session.commit()
    session.refresh(done)
    return _public(done)


def list_rollouts(*, session: Session, route: str | None = None) -> list[RolloutPublic]:
    """Rollouts, newest first (optionally of one route)."""
    query = select(Rollout).order_by(col(Rollout.id).desc())
    if route is not None:
        query = query.where(Rollout.route == route)
    return [_public(r) for r in session.exec(query)]


def _guardrail_failures(engine: Engine, rollout: Rollout, alpha: float) -> list[str]:
    arms = [
        (rollout.baseline, True, 100.0 - rollout.weight),
        (rollout.candidate, False, rollout.weight),
    ]
    report = experiment_report(engine, rollout.experiment, arms, ReportOptions(alpha=alpha))
    return [
        f"{m.metric} is significantly worse than {rollout.baseline!r} "
        f"({m.treatment['mean']:.3f} vs {m.control['mean']:.3f})"
        for m in report.candidates[0].metrics
        if m.metric in GUARDRAILS and m.outcome == "worse"
    ]


def _requests_per_arm(engine: Engine, rollout: Rollout) -> dict[str, int]:
    with engine.connect() as conn:
        totals = read_rollup(conn, rollout.experiment)
    return {arm: int(metrics.get(REQUESTS, (0, 0.0, 0.0))[0]) for arm, metrics in totals.items()}


def _check_one(
    session: Session, engine: Engine, rollout: Rollout, policy: RolloutPolicy, now: datetime
) -> RolloutCheck:
    actor = "rollout-controller"
    failures = _guardrail_failures(engine, rollout, policy.alpha)
    if failures:
        _finish(session, rollout, "rolled_back", actor=actor, reason="; ".join(failures))
        candidate = _model(session, rollout.candidate)
        set_state(session, candidate, "failed", actor=actor, reason="guardrail failed")
        return RolloutCheck(rollout=_public(rollout), action="rolled_back", reasons=failures)
    waiting: list[str] = []
    if now - rollout.step_started_at < timedelta(seconds=policy.min_step_s):
        waiting.append(f"step at {rollout.weight:g}% has run less than {policy.min_step_s:g} s")
    counts = _requests_per_arm(engine, rollout)
    for arm in (rollout.baseline, rollout.candidate):
        if counts.get(arm, 0) < policy.min_requests:
            waiting.append(f"{arm!r} has {counts.get(arm, 0)} of {policy.min_requests} requests")
    if waiting:
        return RolloutCheck(rollout=_public(rollout), action="hold", reasons=waiting)
    later = [s for s in _public(rollout).steps if s > rollout.weight]
    step = later[0] if later else 100.0
    if step >= 100.0:
        _complete(session, rollout, actor=actor)
        return RolloutCheck(
            rollout=_public(rollout), action="completed", reasons=["guardrails held"]
        )
    record_event(
        session=session,
        kind="rollout",
        subject=rollout.route,
        action="ramp",
        actor=actor,
        reason=f"guardrails held; {rollout.candidate!r} {rollout.weight:g}% -> {step:g}%",
        details={"rollout_id": rollout.id, "requests": counts},
    )
    rollout.weight, rollout.step_started_at, rollout.updated_at = step, now, now
    session.add(rollout)
    # Commits the new weights together with the rollout row and its audit event.
    update_experiment(
        session=session,
        name=rollout.experiment,
        arms=_arms(rollout.baseline, rollout.candidate, step),
    )
    return RolloutCheck(rollout=_public(rollout), action="ramped", reasons=["guardrails held"])


def _complete(session: Session, rollout: Rollout, *, actor: str) -> None:
    route = session.get(Route, rollout.route)
    assert route is not None
    route.model, route.updated_at = rollout.candidate, utcnow()
    session.add(route)
    rollout.weight = 100.0
    _finish(session, rollout, "completed", actor=actor, reason="guardrails held at every step")
    set_state(
        session,
        _model(session, rollout.candidate),
        "promoted",
        actor=actor,
        reason="ramped to 100%",
    )
    baseline = _model(session, rollout.baseline)
    if baseline.state != "retired":
        set_state(
            session, baseline, "retired", actor=actor, reason=f"replaced by {rollout.candidate!r}"
        )


def advance_rollouts(
    *, session: Session, policy: RolloutPolicy | None = None, now: datetime | None = None
) -> list[RolloutCheck]:
    """Check every active rollout once: roll back, hold, ramp or complete it."""
    policy = policy or RolloutPolicy()
    now = now or utcnow()
    engine = session.get_bind()
    assert isinstance(engine, Engine)
    out: list[RolloutCheck] = []
    ids = list(session.exec(select(Rollout.id).where(Rollout.status == ACTIVE)))
    for rollout_id in ids:
        # Row lock on PostgreSQL so that several router processes never act twice.
        rollout = session.exec(
            select(Rollout)
            .where(Rollout.id == rollout_id, Rollout.status == ACTIVE)
            .with_for_update()
        ).first()
        if rollout is None:
            session.rollback()
            continue
        out.append(_check_one(session, engine, rollout, policy, now))
        session.commit()
    return out
