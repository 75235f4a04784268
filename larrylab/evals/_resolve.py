"""Resolving registry names to call targets, through the routing table the router reads.

An eval calls a model exactly as the router would: the `Target` comes from
`larrylab.router._routing.load_routing_table`. A target travels to inspect (model and task
arguments, which inspect writes into its logs) as a spec without secrets: the credential stays
in the environment variable the entry names.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from larrylab.config import Settings
from larrylab.db import make_engine, sqlite_file
from larrylab.experiments import NotFoundError
from larrylab.router import RoutingTable, Target, load_routing_table

_SPEC_FIELDS = tuple(f.name for f in fields(Target) if f.name != "name")


def routing_table(database_url: str | None = None) -> RoutingTable:
    """A fresh routing table from `database_url` (default: `LARRYLAB_DATABASE_URL`).

    NotFoundError for a SQLite file that does not exist: resolving names never creates a store
    (inspect-ai instantiates `larrylab/<name>` models with no arguments to look up their info).
    """
    url = database_url or Settings().database_url
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise NotFoundError(
            f"no larrylab database at {path}: set LARRYLAB_DATABASE_URL or pass database_url"
        )
    engine = make_engine(url)
    try:
        return load_routing_table(engine)
    finally:
        engine.dispose()


def model_target(table: RoutingTable, name: str) -> Target:
    """The target of registry model `name`; NotFoundError listing the known models if none."""
    target = table.models.get(name)
    if target is None:
        known = ", ".join(sorted(table.models)) or "none"
        raise NotFoundError(f"unknown model {name!r} (registered: {known})")
    return target


def control_model(table: RoutingTable, route: str | None) -> str:
    """The control model of `route`: its experiment's control arm, else its default model.

    With no route named, the only route is used; several routes need an explicit choice.
    """
    routes = sorted(set(table.routes) | set(table.experiments))
    if route is None:
        if len(routes) != 1:
            listed = ", ".join(routes) or "none"
            raise ValueError(f"name a route or a judge model: there are several routes ({listed})")
        route = routes[0]
    plan = table.experiments.get(route)
    if plan is not None:
        return plan.control
    model = table.routes.get(route)
    if model is None:
        raise NotFoundError(f"unknown route {route!r}")
    return model


def target_spec(target: Target) -> dict[str, Any]:
    """A target as plain JSON values, without its name (no secrets: only the key's variable)."""
    spec = asdict(target)
    spec.pop("name")
    return spec


def target_from_spec(name: str, spec: dict[str, Any]) -> Target:
    """Rebuild a target from `target_spec` output; ValueError on unknown or missing fields."""
    unknown = set(spec) - set(_SPEC_FIELDS)
    missing = set(_SPEC_FIELDS) - set(spec)
    if unknown or missing:
        raise ValueError(
            f"target spec for {name!r}: unknown fields {sorted(unknown)}, missing {sorted(missing)}"
        )
    return Target(name=name, **spec)
