"""Which models judge and which is the baseline, read from the routing table."""

from __future__ import annotations

from pathlib import Path

import pytest

from larrylab.evals._resolve import control_model, model_target, routing_table
from larrylab.evals.gate import route_model
from larrylab.experiments._experiments import NotFoundError
from larrylab.router._assignment import ArmRanges
from larrylab.router._routing import ExperimentPlan, RoutingTable, Target


def _target(name: str) -> Target:
    return Target(name, "openai", "http://127.0.0.1:9/v1", name, None, None, 1.0, 1.0, 1.0)


def _table(*, experiment: bool, routes: tuple[str, ...] = ("larry",)) -> RoutingTable:
    models = {n: _target(n) for n in ("gemini-flash", "larry-v1", "gemini-pro")}
    plans = {}
    if experiment:
        ranges = ArmRanges.from_weights(["gemini-pro", "larry-v1"], [90.0, 10.0])
        plans["larry"] = ExperimentPlan("canary", "larry", "seed", "gemini-pro", ranges)
    return RoutingTable(
        models=models, routes=dict.fromkeys(routes, "gemini-flash"), experiments=plans
    )


def test_the_judge_is_the_experiments_control_arm_else_the_routes_model() -> None:
    assert control_model(_table(experiment=False), None) == "gemini-flash"
    assert control_model(_table(experiment=True), "larry") == "gemini-pro"


def test_the_baseline_is_the_routes_model_even_during_an_experiment() -> None:
    assert route_model(_table(experiment=True), None) == "gemini-flash"


def test_several_routes_need_a_choice_and_unknown_names_are_not_found() -> None:
    table = _table(experiment=False, routes=("larry", "larry-eu"))
    with pytest.raises(ValueError, match="several routes \\(larry, larry-eu\\)"):
        control_model(table, None)
    with pytest.raises(ValueError, match="name a route or a baseline model"):
        route_model(table, None)
    with pytest.raises(NotFoundError, match="unknown route 'nope'"):
        control_model(table, "nope")
    with pytest.raises(NotFoundError, match="unknown model 'gpt' \\(registered: gemini-flash"):
        model_target(table, "gpt")


def test_resolving_against_a_missing_sqlite_file_creates_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LARRYLAB_DATABASE_URL", raising=False)
    with pytest.raises(NotFoundError, match=r"no larrylab database at larrylab\.db"):
        routing_table()  # the default URL: ./larrylab.db
    with pytest.raises(NotFoundError, match="no larrylab database"):
        routing_table(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert list(tmp_path.iterdir()) == []
