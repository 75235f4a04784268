"""The admin API's registry side: model history, eval results, gate decisions, promotion."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field

from larrylab.release import (
    MODEL_STATES,
    AuditEventPublic,
    EvalResultPublic,
    GateDecisionPublic,
    ModelPublic,
    Readiness,
    RolloutCheck,
    RolloutPublic,
    advance_rollouts,
    get_model,
    latest_eval_results,
    latest_gate_decision,
    list_events,
    list_rollouts,
    policy_from_settings,
    promote,
    promotion_readiness,
    rollback,
    transition_model,
)
from larrylab.router._admin import Page, apply_change, call_service
from larrylab.router._deps import SessionDep, StateDep
from larrylab.router._errors import ApiError, error_responses

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    responses=error_responses(401, 404, 409, 422),
)
ActorHeader = Annotated[str, Header(alias="x-larrylab-actor", max_length=200)]


class Transition(BaseModel):
    """A manual registry state change (for example retiring a model)."""

    model_config = ConfigDict(extra="forbid")

    to_state: str = Field(json_schema_extra={"enum": list(MODEL_STATES)})
    reason: str = Field(min_length=1, max_length=2000)


class PromoteRequest(BaseModel):
    """Start a guarded rollout of a gated model on a route."""

    model_config = ConfigDict(extra="forbid")

    route: str = Field(min_length=1, max_length=200)
    canary_weight: float = Field(default=10.0, gt=0, lt=100)


class RollbackRequest(BaseModel):
    """Why a route is rolled back."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="manual rollback", min_length=1, max_length=2000)


@router.get("/models/{name}/events", response_model=Page[AuditEventPublic])
def admin_model_events(name: str, session: SessionDep) -> Page[AuditEventPublic]:
    """A model's registry history (transitions, evals, gate decisions), newest first."""
    call_service(get_model, session=session, name=name)
    items = list_events(session=session, kind="model", subject=name)
    return Page(data=items, count=len(items))


@router.post("/models/{name}/transition", response_model=ModelPublic)
async def admin_transition_model(
    name: str,
    body: Transition,
    session: SessionDep,
    state: StateDep,
    actor: ActorHeader = "admin-api",
) -> ModelPublic:
    """Move a model to another registry state (illegal transitions get 409)."""
    return await apply_change(
        state,
        transition_model,
        session=session,
        name=name,
        to_state=body.to_state,
        actor=actor,
        reason=body.reason,
    )


@router.get("/models/{name}/evals", response_model=Page[EvalResultPublic])
def admin_model_evals(name: str, session: SessionDep) -> Page[EvalResultPublic]:
    """The model's newest eval result per task."""
    call_service(get_model, session=session, name=name)
    items = latest_eval_results(session=session, model=name)
    return Page(data=items, count=len(items))


@router.get("/models/{name}/gate", response_model=GateDecisionPublic)
def admin_model_gate(name: str, session: SessionDep) -> GateDecisionPublic:
    """The model's newest gate decision with its evidence."""
    call_service(get_model, session=session, name=name)
    decision = latest_gate_decision(session=session, candidate=name)
    if decision is None:
        raise ApiError(404, f"model {name!r} was never gated", code="not_found")
    return decision


@router.get("/models/{name}/readiness", response_model=Readiness)
def admin_model_readiness(name: str, route: str, session: SessionDep) -> Readiness:
    """Whether the model may be promoted on a route now, and if not, why."""
    return promotion_readiness(session=session, candidate=name, route=route)


@router.post("/models/{name}/promote", status_code=201, response_model=RolloutPublic)
async def admin_promote(
    name: str,
    body: PromoteRequest,
    session: SessionDep,
    state: StateDep,
    actor: ActorHeader = "admin-api",
) -> RolloutPublic:
    """Start a canary of a gated model; refused (409, with the reason) unless it passed."""
    return await apply_change(
        state,
        promote,
        session=session,
        candidate=name,
        route=body.route,
        canary_weight=body.canary_weight,
        actor=actor,
        policy=policy_from_settings(state.settings),
    )


@router.post("/routes/{name}/rollback", response_model=RolloutPublic)
async def admin_rollback(
    name: str,
    session: SessionDep,
    state: StateDep,
    body: RollbackRequest | None = None,
    actor: ActorHeader = "admin-api",
) -> RolloutPublic:
    """End a route's canary, or undo its last completed promotion."""
    reason = (body or RollbackRequest()).reason
    return await apply_change(
        state, rollback, session=session, route=name, actor=actor, reason=reason
    )


@router.get("/rollouts", response_model=Page[RolloutPublic])
def admin_list_rollouts(session: SessionDep, route: str | None = None) -> Page[RolloutPublic]:
    """Rollouts, newest first."""
    items = list_rollouts(session=session, route=route)
    return Page(data=items, count=len(items))


@router.post("/rollouts/tick", response_model=list[RolloutCheck])
async def admin_tick_rollouts(session: SessionDep, state: StateDep) -> list[RolloutCheck]:
    """Check every active rollout now (the router also does this periodically)."""
    return await apply_change(
        state, advance_rollouts, session=session, policy=policy_from_settings(state.settings)
    )


@router.get("/audit", response_model=Page[AuditEventPublic])
def admin_audit(
    session: SessionDep, kind: str | None = None, subject: str | None = None
) -> Page[AuditEventPublic]:
    """The audit log, newest first."""
    items = list_events(session=session, kind=kind, subject=subject)
    return Page(data=items, count=len(items))
