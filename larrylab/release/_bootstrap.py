"""Bootstrapping the store from the YAML config file.

The file seeds what the database lacks: models, routes and experiments whose names are new are
added; anything already in the database is left as it is (the database is the source of truth
once it exists, and the admin API changes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlmodel import Session, select

from larrylab.config import ConfigFile
from larrylab.db import Experiment, ModelEntry, Route
from larrylab.experiments import create_experiment, set_route
from larrylab.release._registry import create_model


@dataclass
class BootstrapReport:
    """What a bootstrap added and what it left alone."""

    added: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def bootstrap(engine: Engine, config: ConfigFile) -> BootstrapReport:
    """Add the config's models, routes and experiments that the store does not have yet."""
    report = BootstrapReport()
    with Session(engine) as session:
        for name, spec in config.models.items():
            if session.get(ModelEntry, name) is None:
                create_model(session=session, name=name, spec=spec, state="promoted")
                report.added.append(f"model {name}")
            else:
                report.kept.append(f"model {name}")
        for name, route in config.routes.items():
            if session.get(Route, name) is None:
                set_route(session=session, name=name, model=route.model)
                report.added.append(f"route {name}")
            else:
                report.kept.append(f"route {name}")
        for exp in config.experiments:
            if session.exec(select(Experiment).where(Experiment.name == exp.name)).first() is None:
                running = session.exec(
                    select(Experiment).where(
                        Experiment.route == exp.route, Experiment.status == "running"
                    )
                ).first()
                exp_spec = exp if running is None else exp.model_copy(update={"status": "stopped"})
                create_experiment(session=session, spec=exp_spec)
                report.added.append(
                    f"experiment {exp.name}" + (" (stopped: route busy)" if running else "")
                )
            else:
                report.kept.append(f"experiment {exp.name}")
    return report
