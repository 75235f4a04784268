"""What the Models page shows and does: the registry, eval results against the baseline, the
gate decision, and promotion or rollback through the same service functions as the CLI."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from larrylab.dashboard.data import TTL_S, clear_caches, session
from larrylab.experiments import list_routes
from larrylab.release import (
    AuditEventPublic,
    EvalResultPublic,
    EvalSetPublic,
    GateDecisionPublic,
    ModelPublic,
    Readiness,
    RolloutPublic,
    current_eval_set,
    get_model,
    latest_eval_results,
    latest_gate_decision,
    list_model_events,
    list_models,
    list_rollouts,
    promote,
    promotion_readiness,
    rollback,
    rollback_readiness,
)

ACTOR = "dashboard"


@dataclass(frozen=True)
class RegistryData:
    """The registry, the routes (route -> default model), rollouts and the current eval set."""

    models: list[ModelPublic]
    routes: dict[str, str]
    rollouts: list[RolloutPublic]
    eval_set: EvalSetPublic | None
    rollback: dict[str, Readiness]


@st.cache_data(ttl=TTL_S, show_spinner=False)
def load_registry(url: str) -> RegistryData:
    """Every model, route and rollout."""
    with session(url) as s:
        routes = {r.name: r.model for r in list_routes(session=s)}
        rollouts = list_rollouts(session=s)
        return RegistryData(
            models=list_models(session=s),
            routes=routes,
            rollouts=rollouts,
            eval_set=current_eval_set(session=s),
            rollback={
                route: rollback_readiness(session=s, route=route)
                for route in {*routes, *(r.route for r in rollouts)}
            },
        )


@dataclass(frozen=True)
class ModelDetail:
    """One model's history, eval results (and its baseline's), gate decision and readiness."""

    model: ModelPublic
    events: list[AuditEventPublic]
    decision: GateDecisionPublic | None
    baseline: str | None
    results: list[EvalResultPublic]
    baseline_results: list[EvalResultPublic]
    readiness: dict[str, Readiness]


@st.cache_data(ttl=TTL_S, show_spinner=False)
def load_model(url: str, name: str, baseline: str | None) -> ModelDetail:
    """A model's detail, compared with `baseline` (default: its gate decision's baseline)."""
    with session(url) as s:
        model = get_model(session=s, name=name)
        decision = latest_gate_decision(session=s, candidate=name)
        eval_set = decision.eval_set_hash if decision else None
        results = latest_eval_results(session=s, model=name, eval_set_hash=eval_set)
        baseline = baseline or (decision.baseline if decision else None)
        same_set = results[0].eval_set_hash if results else eval_set
        baseline_results = (
            latest_eval_results(session=s, model=baseline, eval_set_hash=same_set)
            if baseline and same_set
            else []
        )
        readiness = {
            route: promotion_readiness(session=s, candidate=name, route=route)
            for route in sorted(r.name for r in list_routes(session=s))
        }
        return ModelDetail(
            model=model,
            events=list_model_events(session=s, name=name),
            decision=decision,
            baseline=baseline,
            results=results,
            baseline_results=baseline_results,
            readiness=readiness,
        )


def run_promote(
    url: str, *, candidate: str, route: str, canary_weight: float, actor: str = ACTOR
) -> RolloutPublic:
    """Start a canary of `candidate` on `route` (the gate is checked again by the service)."""
    with session(url) as s:
        out = promote(
            session=s, candidate=candidate, route=route, canary_weight=canary_weight, actor=actor
        )
    clear_caches()
    return out


def run_rollback(url: str, *, route: str, reason: str, actor: str = ACTOR) -> RolloutPublic:
    """Roll back `route` (its active canary, or its last completed promotion)."""
    with session(url) as s:
        out = rollback(session=s, route=route, actor=actor, reason=reason)
    clear_caches()
    return out
