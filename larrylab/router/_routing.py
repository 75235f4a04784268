"""The routing table: which models exist, what each route runs, read from the store.

The table is an immutable snapshot; a `RoutingCache` swaps in a fresh one after an admin change
in this process and every few seconds (so several worker processes converge).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session, select

from larrylab.config import GEMINI_BASE_URL, check_key_env_name
from larrylab.db import Arm, Experiment, ModelEntry, Route
from larrylab.router._assignment import ArmRanges, assign

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    """How to call one model."""

    name: str
    api: str
    base_url: str | None
    upstream_model: str
    api_key_env: str | None
    litellm_model: str | None
    connect_timeout_s: float
    first_token_timeout_s: float
    total_timeout_s: float
    ca_file: str | None = None  # a PEM bundle of the CAs to trust (https), instead of the system's
    verify: bool = True  # whether to verify the upstream's TLS certificate

    def api_key(self) -> str | None:
        """The credential from the provider's environment variable, if one is named."""
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return key.strip() if key else None  # a key read from a file keeps its newline

    @classmethod
    def from_entry(cls, m: ModelEntry) -> Target:
        """The call target for a registry entry; a key variable it may not read is dropped."""
        return cls(
            name=m.name,
            api=m.api,
            base_url=(m.base_url or "").rstrip("/")
            or (GEMINI_BASE_URL if m.api == "gemini" else None),
            upstream_model=m.upstream_model or m.name,
            api_key_env=m.api_key_env if _key_env_refused(m) is None else None,
            litellm_model=m.litellm_model,
            connect_timeout_s=m.connect_timeout_s,
            first_token_timeout_s=m.first_token_timeout_s,
            total_timeout_s=m.total_timeout_s,
            ca_file=m.ca_file,
            verify=m.verify,
        )


def _key_env_refused(m: ModelEntry) -> str | None:
    """Why the entry's key variable may not be read (a row stored before the rule, such as
    `LARRYLAB_ADMIN_KEY`: its value is never sent anywhere), or None if it may."""
    if m.api_key_env is None:
        return None
    try:
        check_key_env_name(m.api_key_env)
    except ValueError as exc:
        return str(exc)
    return None


def _weights_ok(weights: list[float]) -> bool:
    """Finite, non-negative weights with a positive, finite sum."""
    return all(math.isfinite(w) and w >= 0 for w in weights) and 0 < math.fsum(weights) < math.inf


@dataclass(frozen=True, slots=True)
class ExperimentPlan:
    """A running experiment, ready for assignment."""

    name: str
    route: str
    seed: str
    control: str
    ranges: ArmRanges
    unsupported: str = "control"  # or "strip": see `Experiment.unsupported`

    def arm_for(self, unit: str) -> str:
        """The arm (model name) serving `unit`."""
        return assign(self.seed, unit, self.ranges)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a request's `model` field resolved to."""

    route: str
    target: Target
    experiment: ExperimentPlan | None
    arm: str | None
    control: Target | None


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """An immutable snapshot of models, routes and running experiments."""

    models: Mapping[str, Target]
    routes: Mapping[str, str]
    experiments: Mapping[str, ExperimentPlan]
    refused_keys: frozenset[tuple[str, str]] = frozenset()  # (model, why its key is not read)

    def is_route(self, name: str) -> bool:
        """Whether `name` is a route (or a route an experiment runs on), not only a model."""
        return name in self.routes or name in self.experiments

    def names(self) -> list[str]:
        """Every name a client may put in `model`: routes first, then models."""
        routes = sorted(set(self.routes) | set(self.experiments))
        return routes + sorted(n for n in self.models if n not in routes)

    def resolve(self, name: str, unit: str) -> Resolution | None:
        """Resolve `name` (a route or a model) for thread `unit`; None if unknown."""
        plan = self.experiments.get(name)
        if plan is not None:
            arm = plan.arm_for(unit)
            target = self.models[arm]
            control = self.models[plan.control] if arm != plan.control else None
            return Resolution(name, target, plan, arm, control)
        model = self.routes.get(name)
        if model is not None and model in self.models:
            return Resolution(name, self.models[model], None, None, None)
        if name in self.models:
            return Resolution(name, self.models[name], None, None, None)
        return None


def load_routing_table(engine: Engine) -> RoutingTable:
    """Read a fresh routing table from the store."""
    with Session(engine) as session:
        entries = list(session.exec(select(ModelEntry)))
        models = {m.name: Target.from_entry(m) for m in entries}
        refused = {(m.name, why) for m in entries if (why := _key_env_refused(m)) is not None}
        routes = {r.name: r.model for r in session.exec(select(Route))}
        experiments: dict[str, ExperimentPlan] = {}
        running = session.exec(select(Experiment).where(Experiment.status == "running"))
        for exp in running:
            query = select(Arm).where(Arm.experiment_id == exp.id)
            arms = sorted(session.exec(query), key=lambda a: a.position)
            controls = [a.model for a in arms if a.control]
            weights = [a.weight for a in arms]
            if (
                not arms
                or len(controls) != 1
                or any(a.model not in models for a in arms)
                or not _weights_ok(weights)
            ):
                log.warning("experiment %s is inconsistent and is skipped", exp.name)
                continue
            ranges = ArmRanges.from_weights([a.model for a in arms], weights)
            experiments[exp.route] = ExperimentPlan(
                exp.name, exp.route, exp.seed, controls[0], ranges, exp.unsupported
            )
    return RoutingTable(
        models=models, routes=routes, experiments=experiments, refused_keys=frozenset(refused)
    )


def key_warnings(table: RoutingTable) -> frozenset[tuple[str, str]]:
    """(model, problem) for each model that will be called without its key."""
    missing = {
        (t.name, f"api_key_env {t.api_key_env} is not set in the router's environment")
        for t in table.models.values()
        if t.api_key_env is not None and t.api_key() is None
    }
    return frozenset(missing | table.refused_keys)


class RoutingCache:
    """Holds the current routing table and refreshes it from the store."""

    def __init__(self, engine: Engine, refresh_s: float) -> None:
        self._engine = engine
        self._refresh_s = refresh_s
        self._warned: frozenset[tuple[str, str]] = frozenset()
        self.table = self._checked(load_routing_table(engine))

    def _checked(self, table: RoutingTable) -> RoutingTable:
        """Warn once (per problem, while it lasts) about each model called without its key."""
        problems = key_warnings(table)
        for model, why in sorted(problems - self._warned):
            log.warning("model %s: %s; its requests go without a key", model, why)
        self._warned = problems
        return table

    async def reload(self) -> None:
        """Swap in a fresh table read from the store."""
        self.table = self._checked(await asyncio.to_thread(load_routing_table, self._engine))

    async def run(self) -> None:
        """Refresh forever (cancel to stop); a failed read keeps the last good table."""
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.reload()
            except Exception as exc:  # the database may be briefly unreachable
                log.warning("routing table refresh failed: %s", exc)
