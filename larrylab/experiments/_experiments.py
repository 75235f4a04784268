"""Experiments and their arms: create, list, change weights, start and stop.

Used by the admin API and the CLI alike; keyword-only functions over a Session.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlmodel import Session, select

from larrylab.config import ArmSpec, ExperimentSpec, check_arms, check_name
from larrylab.db import Arm, Experiment, ModelEntry, Route, utcnow


class NotFoundError(LookupError):
    """No such experiment, model or route."""


class ConflictError(ValueError):
    """The change contradicts the store (duplicate name, second running experiment, ...)."""


class ArmPublic(BaseModel):
    """An arm as the API and CLI show it (stored rows, shown as they are)."""

    model: str
    weight: float
    control: bool


class ExperimentPublic(BaseModel):
    """An experiment as the API and CLI show it."""

    name: str
    route: str
    seed: str
    status: str
    description: str
    unsupported: str
    arms: list[ArmPublic]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None


def _arms(session: Session, exp: Experiment) -> list[Arm]:
    return list(session.exec(select(Arm).where(Arm.experiment_id == exp.id).order_by(Arm.position)))  # type: ignore[arg-type]


def _public(session: Session, exp: Experiment) -> ExperimentPublic:
    arms = [
        ArmPublic(model=a.model, weight=a.weight, control=a.control) for a in _arms(session, exp)
    ]
    return ExperimentPublic(
        name=exp.name,
        route=exp.route,
        seed=exp.seed,
        status=exp.status,
        description=exp.description,
        unsupported=exp.unsupported,
        arms=arms,
        created_at=exp.created_at,
        updated_at=exp.updated_at,
        started_at=exp.started_at,
        stopped_at=exp.stopped_at,
    )


def _get(session: Session, name: str) -> Experiment:
    exp = session.exec(select(Experiment).where(Experiment.name == name)).first()
    if exp is None:
        raise NotFoundError(f"unknown experiment {name!r}")
    return exp


def _check_models(session: Session, arms: list[ArmSpec]) -> None:
    for arm in arms:
        if session.get(ModelEntry, arm.model) is None:
            raise NotFoundError(f"unknown model {arm.model!r} in arms; register it first")


def _check_running(session: Session, route: str, except_name: str | None = None) -> None:
    other = session.exec(
        select(Experiment).where(Experiment.route == route, Experiment.status == "running")
    ).first()
    if other is not None and other.name != except_name:
        raise ConflictError(
            f"route {route!r} already runs experiment {other.name!r}; stop it first"
        )


def list_experiments(*, session: Session, route: str | None = None) -> list[ExperimentPublic]:
    """All experiments, newest first (optionally of one route)."""
    query = select(Experiment).order_by(Experiment.created_at.desc())  # type: ignore[attr-defined]
    if route is not None:
        query = query.where(Experiment.route == route)
    return [_public(session, e) for e in session.exec(query)]


def get_experiment(*, session: Session, name: str) -> ExperimentPublic:
    """One experiment by name."""
    return _public(session, _get(session, name))


def create_experiment(*, session: Session, spec: ExperimentSpec) -> ExperimentPublic:
    """Create an experiment with its arms (running unless the spec says stopped)."""
    if session.exec(select(Experiment).where(Experiment.name == spec.name)).first() is not None:
        raise ConflictError(f"experiment {spec.name!r} already exists")
    if session.get(ModelEntry, spec.route) is not None:
        raise ConflictError(f"route {spec.route!r} is already the name of a model")
    _check_models(session, spec.arms)
    if spec.status == "running":
        _check_running(session, spec.route)
    now = utcnow()
    exp = Experiment(
        name=spec.name,
        route=spec.route,
        seed=spec.seed or spec.name,
        status=spec.status,
        description=spec.description,
        unsupported=spec.unsupported,
        created_at=now,
        updated_at=now,
        started_at=now if spec.status == "running" else None,
    )
    session.add(exp)
    session.flush()
    assert exp.id is not None
    for i, arm in enumerate(spec.arms):
        session.add(
            Arm(
                experiment_id=exp.id,
                model=arm.model,
                weight=arm.weight,
                control=arm.control,
                position=i,
            )
        )
    session.commit()
    return _public(session, exp)


def update_experiment(
    *,
    session: Session,
    name: str,
    arms: list[ArmSpec] | None = None,
    status: str | None = None,
    description: str | None = None,
    unsupported: str | None = None,
) -> ExperimentPublic:
    """Change an experiment's arms (weights), status (running/stopped), description, or what
    its candidates do with requests they cannot serve (`unsupported`: control or strip)."""
    exp = _get(session, name)
    now = utcnow()
    if arms is not None:
        check_arms(arms)
        _check_models(session, arms)
        for old in _arms(session, exp):
            session.delete(old)
        session.flush()
        assert exp.id is not None
        for i, arm in enumerate(arms):
            session.add(
                Arm(
                    experiment_id=exp.id,
                    model=arm.model,
                    weight=arm.weight,
                    control=arm.control,
                    position=i,
                )
            )
    if status is not None and status != exp.status:
        if status == "running":
            _check_running(session, exp.route, except_name=exp.name)
            exp.started_at = exp.started_at or now
            exp.stopped_at = None
        else:
            exp.stopped_at = now
        exp.status = status
    if description is not None:
        exp.description = description
    if unsupported is not None:
        if unsupported not in ("control", "strip"):
            raise ValueError(f"unsupported must be 'control' or 'strip', not {unsupported!r}")
        exp.unsupported = unsupported
    exp.updated_at = now
    session.add(exp)
    session.commit()
    return _public(session, exp)


def set_route(*, session: Session, name: str, model: str) -> Route:
    """Point a route at a model (the model that serves it when no experiment runs)."""
    check_name(name, "route name")
    if session.get(ModelEntry, model) is None:
        raise NotFoundError(f"unknown model {model!r}")
    if session.get(ModelEntry, name) is not None:
        raise ConflictError(f"{name!r} is the name of a model, not a route")
    route = session.get(Route, name) or Route(name=name, model=model)
    route.model = model
    route.updated_at = utcnow()
    session.add(route)
    session.commit()
    session.refresh(route)
    return route


def list_routes(*, session: Session) -> list[Route]:
    """All routes with a default model."""
    return list(session.exec(select(Route).order_by(Route.name)))
