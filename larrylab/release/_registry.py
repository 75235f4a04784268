"""The model registry: every model larrylab can route to, with how to reach it and its state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel
from sqlmodel import Session, select

from larrylab.config import ModelSpec, Settings, check_key_env, check_name
from larrylab.db import Experiment, ModelEntry, Route, utcnow
from larrylab.experiments import ConflictError, NotFoundError
from larrylab.release._audit import AuditEventPublic, list_events, record_event

ModelEventPublic = AuditEventPublic

MODEL_STATES = ("registered", "evaluating", "passed", "failed", "canary", "promoted", "retired")

# Which states a model may move to from each state. Gate decisions move a model to passed or
# failed; promotion moves passed -> canary -> promoted; a rollback or a failed guardrail moves
# a canary to failed; a newer promotion retires the model it replaces.
TRANSITIONS: dict[str, frozenset[str]] = {
    "registered": frozenset({"evaluating", "passed", "failed", "retired"}),
    "evaluating": frozenset({"registered", "passed", "failed", "retired"}),
    "passed": frozenset({"evaluating", "passed", "failed", "canary", "promoted", "retired"}),
    "failed": frozenset({"evaluating", "passed", "failed", "retired"}),
    "canary": frozenset({"promoted", "failed", "passed", "retired"}),
    "promoted": frozenset({"retired", "failed", "canary"}),
    "retired": frozenset({"evaluating", "passed", "failed", "promoted"}),
}


class ModelPublic(BaseModel):
    """A registry entry as the API and CLI show it."""

    name: str
    api: str
    base_url: str | None
    model: str | None
    api_key_env: str | None
    litellm_model: str | None
    connect_timeout_s: float
    first_token_timeout_s: float
    total_timeout_s: float
    ca_file: str | None
    verify: bool
    state: str
    lineage: dict[str, Any]
    created_at: datetime
    updated_at: datetime


def to_public(entry: ModelEntry) -> ModelPublic:
    """The public view of an entry."""
    return ModelPublic(
        name=entry.name,
        api=entry.api,
        base_url=entry.base_url,
        model=entry.upstream_model,
        api_key_env=entry.api_key_env,
        litellm_model=entry.litellm_model,
        connect_timeout_s=entry.connect_timeout_s,
        first_token_timeout_s=entry.first_token_timeout_s,
        total_timeout_s=entry.total_timeout_s,
        ca_file=entry.ca_file,
        verify=entry.verify,
        state=entry.state,
        lineage=orjson.loads(entry.lineage or "{}"),
        created_at=entry.created_at,
        updated_at=entry.updated_at,
    )


def check_spec_key_env(spec: ModelSpec, allowed_key_envs: str | None = None) -> None:
    """Refuse a spec whose `api_key_env` the deployment does not allow.

    `allowed_key_envs` is `LARRYLAB_ALLOWED_KEY_ENVS`; None reads it from the environment.
    """
    if spec.api_key_env is not None:
        allowed = Settings().allowed_key_envs if allowed_key_envs is None else allowed_key_envs
        check_key_env(spec.api_key_env, allowed)


def _apply(entry: ModelEntry, spec: ModelSpec) -> None:
    entry.api = spec.api
    entry.base_url = spec.base_url
    entry.upstream_model = spec.model
    entry.api_key_env = spec.api_key_env
    entry.litellm_model = spec.litellm_model
    entry.connect_timeout_s = spec.connect_timeout_s
    entry.first_token_timeout_s = spec.first_token_timeout_s
    entry.total_timeout_s = spec.total_timeout_s
    entry.ca_file = spec.ca_file
    entry.verify = spec.verify


def list_models(*, session: Session) -> list[ModelPublic]:
    """Every registered model, by name."""
    return [to_public(m) for m in session.exec(select(ModelEntry).order_by(ModelEntry.name))]


def get_model(*, session: Session, name: str) -> ModelPublic:
    """One model by name."""
    entry = session.get(ModelEntry, name)
    if entry is None:
        raise NotFoundError(f"unknown model {name!r}")
    return to_public(entry)


def create_model(
    *,
    session: Session,
    name: str,
    spec: ModelSpec,
    state: str = "registered",
    lineage: dict[str, Any] | None = None,
    allowed_key_envs: str | None = None,
) -> ModelPublic:
    """Register a model under a new name (see `check_spec_key_env` for `allowed_key_envs`)."""
    check_name(name, "model name")
    check_spec_key_env(spec, allowed_key_envs)
    if session.get(ModelEntry, name) is not None:
        raise ConflictError(f"model {name!r} already exists")
    if (
        session.get(Route, name) is not None
        or session.exec(select(Experiment).where(Experiment.route == name)).first() is not None
    ):
        raise ConflictError(f"{name!r} is already the name of a route")
    entry = ModelEntry(name=name, state=state, lineage=orjson.dumps(lineage or {}).decode())
    _apply(entry, spec)
    session.add(entry)
    session.commit()
    session.refresh(entry)
    return to_public(entry)


def update_model(
    *, session: Session, name: str, spec: ModelSpec, allowed_key_envs: str | None = None
) -> ModelPublic:
    """Change how a model is reached (base URL, upstream model, credentials, timeouts)."""
    entry = session.get(ModelEntry, name)
    if entry is None:
        raise NotFoundError(f"unknown model {name!r}")
    check_spec_key_env(spec, allowed_key_envs)
    _apply(entry, spec)
    entry.updated_at = utcnow()
    session.add(entry)
    session.commit()
    session.refresh(entry)
    return to_public(entry)


def _entry(session: Session, name: str) -> ModelEntry:
    entry = session.get(ModelEntry, name)
    if entry is None:
        raise NotFoundError(f"unknown model {name!r}")
    return entry


def register_trained_model(
    *,
    session: Session,
    name: str,
    spec: ModelSpec,
    lineage: dict[str, Any],
    actor: str,
    reason: str = "trained",
) -> ModelPublic:
    """Register a newly trained model (state `registered`) with its lineage, audited."""
    if session.get(ModelEntry, name) is not None:
        raise ConflictError(f"model {name!r} already exists; choose another name")
    record_event(
        session=session,
        kind="model",
        subject=name,
        action="register",
        actor=actor,
        reason=reason,
        to_state="registered",
        details={"lineage": lineage},
    )
    return create_model(session=session, name=name, spec=spec, lineage=lineage)


def update_lineage(*, session: Session, name: str, lineage: dict[str, Any]) -> ModelPublic:
    """Merge keys into a model's lineage (for example how it is served once packaged)."""
    entry = _entry(session, name)
    merged = {**orjson.loads(entry.lineage or "{}"), **lineage}
    entry.lineage = orjson.dumps(merged).decode()
    entry.updated_at = utcnow()
    session.add(entry)
    session.commit()
    session.refresh(entry)
    return to_public(entry)


def set_state(
    session: Session,
    entry: ModelEntry,
    to_state: str,
    *,
    actor: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Move a model to a state inside the caller's transaction, with an audit event."""
    if to_state not in MODEL_STATES:
        raise ConflictError(f"unknown state {to_state!r}; states: {', '.join(MODEL_STATES)}")
    if to_state not in TRANSITIONS[entry.state]:
        raise ConflictError(
            f"model {entry.name!r} cannot go from {entry.state!r} to {to_state!r}; "
            f"allowed: {', '.join(sorted(TRANSITIONS[entry.state]))}"
        )
    record_event(
        session=session,
        kind="model",
        subject=entry.name,
        action="transition",
        actor=actor,
        reason=reason,
        from_state=entry.state,
        to_state=to_state,
        details=details,
    )
    entry.state = to_state
    entry.updated_at = utcnow()
    session.add(entry)


def transition_model(
    *,
    session: Session,
    name: str,
    to_state: str,
    actor: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> ModelPublic:
    """Move a model to another registry state; illegal transitions raise ConflictError."""
    entry = _entry(session, name)
    set_state(session, entry, to_state, actor=actor, reason=reason, details=details)
    session.commit()
    session.refresh(entry)
    return to_public(entry)


def list_model_events(*, session: Session, name: str | None = None) -> list[AuditEventPublic]:
    """A model's (or every model's) registry history, newest first."""
    return list_events(session=session, kind="model", subject=name)
