"""The admin API under `/admin`: experiments and their reports, models, routes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any, Generic, Literal, TypeVar

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from larrylab.config import ArmSpec, Description, ExperimentSpec, ModelSpec, Name
from larrylab.experiments import (
    ArmReport,
    ConflictError,
    ExperimentPublic,
    NotFoundError,
    create_experiment,
    experiment_report,
    get_experiment,
    list_experiments,
    list_routes,
    report_dict,
    set_route,
    update_experiment,
)
from larrylab.release import ModelPublic, create_model, get_model, list_models, update_model
from larrylab.router._deps import SessionDep, StateDep
from larrylab.router._errors import ApiError, error_responses

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    responses=error_responses(401, 404, 409, 422),
)
T = TypeVar("T")
Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    """A list response: the items and how many there are."""

    data: list[Item]
    count: int


class ExperimentUpdate(BaseModel):
    """Fields of an experiment that may change."""

    model_config = ConfigDict(extra="forbid")

    arms: list[ArmSpec] | None = Field(default=None, min_length=1)
    status: Literal["running", "stopped"] | None = None
    description: Description | None = None
    unsupported: Literal["control", "strip"] | None = Field(
        default=None,
        description="A request using a feature a candidate cannot serve (tools, a cached "
        "context, non-text parts): the control serves it (`control`), or the candidate answers "
        "without the feature (`strip`).",
    )


class ModelCreate(ModelSpec):
    """A model to register: its name and how to reach it."""

    name: Name


class RouteUpdate(BaseModel):
    """The model a route falls back to when no experiment runs on it."""

    model_config = ConfigDict(extra="forbid")

    model: Name


class RoutePublic(BaseModel):
    """A route and its default model."""

    name: str
    model: str


class ExperimentReportOut(BaseModel):
    """An experiment's report: per-arm rows, each candidate against the control (tests,
    verdicts, `experiments.ExperimentReport`), the SRM check, and the arms' breaker states."""

    experiment: str
    route: str
    status: str
    unsupported: str
    control: str
    method: str
    alpha: float
    srm_p_value: float | None
    srm: bool
    threads: dict[str, int]
    arms: list[ArmReport]
    candidates: list[dict[str, Any]]
    weights_problem: str | None
    breakers: dict[str, str]


def call_service(fn: Callable[..., T], **kwargs: Any) -> T:
    try:
        return fn(**kwargs)
    except NotFoundError as exc:
        raise ApiError(404, str(exc), code="not_found") from None
    except ConflictError as exc:
        raise ApiError(409, str(exc), code="conflict") from None
    except ValueError as exc:
        raise ApiError(422, str(exc), code="invalid_value") from None


async def apply_change(state: StateDep, fn: Callable[..., T], **kwargs: Any) -> T:
    """Apply a change in a worker thread, then reload this process's routing table at once."""
    out: T = await asyncio.to_thread(partial(call_service, fn, **kwargs))
    await state.routing.reload()
    return out


@router.get("/experiments", response_model=Page[ExperimentPublic])
def admin_list_experiments(session: SessionDep, route: str | None = None) -> Page[ExperimentPublic]:
    """All experiments, newest first."""
    items = list_experiments(session=session, route=route)
    return Page(data=items, count=len(items))


@router.post("/experiments", status_code=201, response_model=ExperimentPublic)
async def admin_create_experiment(
    spec: ExperimentSpec, session: SessionDep, state: StateDep
) -> ExperimentPublic:
    """Create an experiment; it runs at once unless `status` is `stopped`."""
    return await apply_change(state, create_experiment, session=session, spec=spec)


@router.get("/experiments/{name}", response_model=ExperimentPublic)
def admin_get_experiment(name: str, session: SessionDep) -> ExperimentPublic:
    """One experiment."""
    return call_service(get_experiment, session=session, name=name)


@router.patch("/experiments/{name}", response_model=ExperimentPublic)
async def admin_update_experiment(
    name: str, change: ExperimentUpdate, session: SessionDep, state: StateDep
) -> ExperimentPublic:
    """Change arms and weights, start or stop, edit the description, or choose what candidates
    do with requests they cannot serve (`unsupported`)."""
    return await apply_change(
        state,
        update_experiment,
        session=session,
        name=name,
        arms=change.arms,
        status=change.status,
        description=change.description,
        unsupported=change.unsupported,
    )


@router.post("/experiments/{name}/start", response_model=ExperimentPublic)
async def admin_start_experiment(
    name: str, session: SessionDep, state: StateDep
) -> ExperimentPublic:
    """Start (or resume) an experiment."""
    return await apply_change(
        state, update_experiment, session=session, name=name, status="running"
    )


@router.post("/experiments/{name}/stop", response_model=ExperimentPublic)
async def admin_stop_experiment(
    name: str, session: SessionDep, state: StateDep
) -> ExperimentPublic:
    """Stop an experiment; its route goes back to its default model."""
    return await apply_change(
        state, update_experiment, session=session, name=name, status="stopped"
    )


@router.get("/experiments/{name}/report", response_model=ExperimentReportOut)
async def admin_experiment_report(
    name: str, session: SessionDep, state: StateDep
) -> ExperimentReportOut:
    """The experiment's report: per arm its requests, threads, errors, fallbacks, latency
    percentiles, ratings and ineligible requests; each candidate tested against the control
    with a verdict; the SRM check; breaker states."""
    exp = call_service(get_experiment, session=session, name=name)
    await state.writer.flush()
    arms = [(a.model, a.control, a.weight) for a in exp.arms]
    report = await asyncio.to_thread(experiment_report, state.engine, exp.name, arms)
    breakers = {a.model: state.breakers.state(a.model) for a in exp.arms}
    return ExperimentReportOut.model_validate(
        {
            **report_dict(report),
            "route": exp.route,
            "status": exp.status,
            "unsupported": exp.unsupported,
            "breakers": breakers,
        }
    )


@router.get(
    "/experiments/{name}/summary",
    response_model=ExperimentReportOut,
    deprecated=True,
    summary="Deprecated alias of the experiment's report",
)
async def admin_experiment_summary(
    name: str, session: SessionDep, state: StateDep
) -> ExperimentReportOut:
    """The same body as `GET /admin/experiments/{name}/report`, which replaces it."""
    return await admin_experiment_report(name, session, state)


@router.get("/models", response_model=Page[ModelPublic])
def admin_list_models(session: SessionDep) -> Page[ModelPublic]:
    """Every registered model."""
    items = list_models(session=session)
    return Page(data=items, count=len(items))


@router.post("/models", status_code=201, response_model=ModelPublic)
async def admin_create_model(
    body: ModelCreate, session: SessionDep, state: StateDep
) -> ModelPublic:
    """Register a model."""
    spec = ModelSpec.model_validate(body.model_dump(exclude={"name"}))
    return await apply_change(
        state,
        create_model,
        session=session,
        name=body.name,
        spec=spec,
        allowed_key_envs=state.settings.allowed_key_envs,
    )


@router.get("/models/{name}", response_model=ModelPublic)
def admin_get_model(name: str, session: SessionDep) -> ModelPublic:
    """One registered model."""
    return call_service(get_model, session=session, name=name)


@router.put("/models/{name}", response_model=ModelPublic)
async def admin_update_model(
    name: str, spec: ModelSpec, session: SessionDep, state: StateDep
) -> ModelPublic:
    """Change how a model is reached."""
    return await apply_change(
        state,
        update_model,
        session=session,
        name=name,
        spec=spec,
        allowed_key_envs=state.settings.allowed_key_envs,
    )


@router.get("/routes", response_model=Page[RoutePublic])
def admin_list_routes(session: SessionDep) -> Page[RoutePublic]:
    """Routes and their default models."""
    items = [RoutePublic(name=r.name, model=r.model) for r in list_routes(session=session)]
    return Page(data=items, count=len(items))


@router.put("/routes/{name}", response_model=RoutePublic)
async def admin_set_route(
    name: str, body: RouteUpdate, session: SessionDep, state: StateDep
) -> RoutePublic:
    """Create a route or point it at another model."""
    route = await apply_change(state, set_route, session=session, name=name, model=body.model)
    return RoutePublic(name=route.name, model=route.model)
