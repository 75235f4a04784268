"""The model registry: every model larrylab can route to, with how to reach it and its state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel
from sqlmodel import Session, select

from larrylab.config import ModelSpec
from larrylab.platform.experiments import ConflictError, NotFoundError
from larrylab.platform.models import Experiment, ModelEntry, Route, utcnow


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
        state=entry.state,
        lineage=orjson.loads(entry.lineage or "{}"),
        created_at=entry.created_at,
        updated_at=entry.updated_at,
    )


def _apply(entry: ModelEntry, spec: ModelSpec) -> None:
    entry.api = spec.api
    entry.base_url = spec.base_url
    entry.upstream_model = spec.model
    entry.api_key_env = spec.api_key_env
    entry.litellm_model = spec.litellm_model
    entry.connect_timeout_s = spec.connect_timeout_s
    entry.first_token_timeout_s = spec.first_token_timeout_s
    entry.total_timeout_s = spec.total_timeout_s


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
) -> ModelPublic:
    """Register a model under a new name."""
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


def update_model(*, session: Session, name: str, spec: ModelSpec) -> ModelPublic:
    """Change how a model is reached (base URL, upstream model, credentials, timeouts)."""
    entry = session.get(ModelEntry, name)
    if entry is None:
        raise NotFoundError(f"unknown model {name!r}")
    _apply(entry, spec)
    entry.updated_at = utcnow()
    session.add(entry)
    session.commit()
    session.refresh(entry)
    return to_public(entry)
