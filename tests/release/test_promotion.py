"""The registry's history, gate decisions and guarded rollouts, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from larrylab.config import ModelSpec
from larrylab.dashboard.insights import rollback_alerts
from larrylab.db._engine import make_engine
from larrylab.db._schema import Route
from larrylab.experiments._experiments import ConflictError, get_experiment, set_route
from larrylab.release._evalstore import (
    EvalTaskResult,
    GateDecisionIn,
    latest_eval_results,
    record_eval_run,
    record_gate_decision,
    register_eval_set,
)
from larrylab.release._promotion import (
    RolloutPolicy,
    advance_rollouts,
    list_rollouts,
    promote,
    promotion_readiness,
    rollback,
)
from larrylab.release._registry import (
    create_model,
    get_model,
    list_model_events,
    register_trained_model,
    transition_model,
    update_model,
)
from larrylab.requestlog import RequestRecord
from tests.conftest import write_records

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
FAST = RolloutPolicy(steps=(10, 25, 50, 100), min_step_s=0, min_requests=20)


def _spec(name: str) -> ModelSpec:
    return ModelSpec(api="openai", base_url="http://127.0.0.1:9/v1", model=name)


@pytest.fixture
def session(migrated_url: str) -> Iterator[Session]:
    engine = make_engine(migrated_url)
    with Session(engine) as s:
        create_model(session=s, name="gemini", spec=_spec("gemini"))
        set_route(session=s, name="larry", model="gemini")
        register_eval_set(session=s, eval_set_hash="a" * 64, version="v1", n_samples=105)
        yield s
    engine.dispose()


def _candidate(session: Session, name: str) -> None:
    register_trained_model(
        session=session,
        name=name,
        spec=_spec(name),
        lineage={"base_model": "tiny", "dataset_manifest_hash": "d" * 64},
        actor="test",
    )


def _gate(
    session: Session, name: str, passed: bool, *, baseline: str = "gemini", eval_set: str = "a" * 64
) -> None:
    reasons = ["all floors met"] if passed else ["category red_team 0.41 < floor 0.50"]
    record_gate_decision(
        session=session,
        decision=GateDecisionIn(
            candidate=name,
            baseline=baseline,
            eval_set_hash=eval_set,
            passed=passed,
            reasons=reasons,
            evidence={"overall": 0.8},
        ),
        actor="test",
    )


def _traffic(url: str, experiment: str, arm: str, n: int, *, errors: int = 0) -> None:
    records = []
    for i in range(n):
        failed = i < errors
        records.append(
            RequestRecord(
                id=f"{experiment}-{arm}-{i}",
                thread_id=f"{arm}-t{i}",
                unit_source="user",
                route="larry",
                experiment=experiment,
                arm=arm,
                model=arm,
                upstream_model=arm,
                stream=False,
                status="error" if failed else "ok",
                http_status=502 if failed else 200,
                error_class="upstream_error" if failed else None,
                error_message="boom" if failed else None,
                fallback_from=None,
                latency_ms=100.0 + i % 7,
                ttft_ms=50.0,
                upstream_ms=99.0,
                overhead_ms=1.0,
                prompt_tokens=3,
                completion_tokens=4,
                protocol="openai",
                ineligible=None,
                stripped=False,
                created_at=T0,
                finished_at=T0 + timedelta(milliseconds=100),
                prompt=[{"role": "user", "content": f"question {i}"}],
                reply={"role": "assistant", "content": f"answer {i}"},
            )
        )
    write_records(url, records)


def test_trained_model_history_is_audited(session: Session) -> None:
    _candidate(session, "larry-tiny")
    with pytest.raises(ConflictError, match="cannot go from 'registered' to 'promoted'"):
        transition_model(
            session=session, name="larry-tiny", to_state="promoted", actor="t", reason="skip"
        )
    transition_model(
        session=session, name="larry-tiny", to_state="evaluating", actor="ci", reason="evals"
    )
    events = list_model_events(session=session, name="larry-tiny")
    assert [(e.from_state, e.to_state, e.actor) for e in events] == [
        ("registered", "evaluating", "ci"),
        (None, "registered", "test"),
    ]
    assert get_model(session=session, name="larry-tiny").lineage["base_model"] == "tiny"


def test_eval_results_keep_the_newest_per_task(session: Session) -> None:
    _candidate(session, "larry-tiny")

    def result(task: str, mean: float) -> EvalTaskResult:
        return EvalTaskResult(
            task=task,
            category=task,
            n_samples=2,
            mean=mean,
            stderr=0.1,
            ci_low=mean - 0.2,
            ci_high=mean + 0.2,
            sample_scores={"s1": mean, "s2": mean},
        )

    for mean in (0.5, 0.7):
        record_eval_run(
            session=session,
            model="larry-tiny",
            eval_set_hash="a" * 64,
            results=[result("tta", mean), result("jtbd", 0.9)],
            judge="gemini",
        )
    latest = {r.task: r.mean for r in latest_eval_results(session=session, model="larry-tiny")}
    assert latest == {"jtbd": 0.9, "tta": 0.7}


def test_promotion_is_refused_without_a_passed_gate(session: Session) -> None:
    _candidate(session, "larry-tiny")
    with pytest.raises(ConflictError, match="never gated"):
        promote(session=session, candidate="larry-tiny", route="larry", actor="t")
    _gate(session, "larry-tiny", passed=False)
    assert get_model(session=session, name="larry-tiny").state == "failed"
    with pytest.raises(ConflictError, match="failed the gate: category red_team"):
        promote(session=session, candidate="larry-tiny", route="larry", actor="t")
    # Passing against another baseline, or on an older eval set, is not enough either.
    create_model(session=session, name="other", spec=_spec("other"))
    _gate(session, "larry-tiny", passed=True, baseline="other")
    ready = promotion_readiness(session=session, candidate="larry-tiny", route="larry")
    assert not ready.ok and "gated against 'other'" in ready.reason
    _gate(session, "larry-tiny", passed=True)
    register_eval_set(session=session, eval_set_hash="b" * 64, version="v2", n_samples=110)
    ready = promotion_readiness(session=session, candidate="larry-tiny", route="larry")
    assert not ready.ok and "not the current eval set" in ready.reason
    # A decision holds for the exact entry: re-pointing it after the gate needs a new gate.
    _gate(session, "larry-tiny", passed=True, eval_set="b" * 64)
    assert promotion_readiness(session=session, candidate="larry-tiny", route="larry").ok
    update_model(session=session, name="larry-tiny", spec=_spec("other-weights"))
    ready = promotion_readiness(session=session, candidate="larry-tiny", route="larry")
    assert not ready.ok and "another endpoint than the one gated" in ready.reason
    assert list_rollouts(session=session) == []


def test_guardrail_failure_rolls_the_canary_back(session: Session, migrated_url: str) -> None:
    _candidate(session, "larry-tiny")
    _gate(session, "larry-tiny", passed=True)
    rollout = promote(session=session, candidate="larry-tiny", route="larry", actor="alice")
    assert rollout.status == "active" and rollout.weight == 10
    arms = {
        a.model: (a.weight, a.control)
        for a in get_experiment(session=session, name=rollout.experiment).arms
    }
    assert arms == {"gemini": (90, True), "larry-tiny": (10, False)}
    assert get_model(session=session, name="larry-tiny").state == "canary"

    _traffic(migrated_url, rollout.experiment, "gemini", 60)
    _traffic(migrated_url, rollout.experiment, "larry-tiny", 60, errors=30)
    [check] = advance_rollouts(session=session, policy=FAST)
    assert check.action == "rolled_back"
    assert "error_rate is significantly worse" in check.reasons[0]
    assert get_model(session=session, name="larry-tiny").state == "failed"
    assert get_experiment(session=session, name=rollout.experiment).status == "stopped"
    assert session.get(Route, "larry").model == "gemini"  # type: ignore[union-attr]
    assert advance_rollouts(session=session, policy=FAST) == []
    # The dashboard's overview raises it as an alert.
    [alert] = rollback_alerts(session=session)
    assert alert.kind == "guardrail" and "error_rate is significantly worse" in alert.message


def test_healthy_canary_ramps_to_full_and_can_be_rolled_back(
    session: Session, migrated_url: str
) -> None:
    _candidate(session, "larry-tiny")
    _gate(session, "larry-tiny", passed=True)
    rollout = promote(session=session, candidate="larry-tiny", route="larry", actor="alice")

    [check] = advance_rollouts(session=session, policy=FAST)
    assert check.action == "hold" and "0 of 20 requests" in check.reasons[0]

    _traffic(migrated_url, rollout.experiment, "gemini", 30)
    _traffic(migrated_url, rollout.experiment, "larry-tiny", 30)
    seen = []
    for _ in range(3):
        [check] = advance_rollouts(session=session, policy=FAST)
        seen.append((check.action, check.rollout.weight))
    assert seen == [("ramped", 25), ("ramped", 50), ("completed", 100)]
    session.expire_all()
    assert session.get(Route, "larry").model == "larry-tiny"  # type: ignore[union-attr]
    assert get_model(session=session, name="larry-tiny").state == "promoted"
    assert get_model(session=session, name="gemini").state == "retired"
    assert get_experiment(session=session, name=rollout.experiment).status == "stopped"

    undone = rollback(session=session, route="larry", actor="bob", reason="workshop complaints")
    assert undone.status == "rolled_back"
    session.expire_all()
    assert session.get(Route, "larry").model == "gemini"  # type: ignore[union-attr]
    assert get_model(session=session, name="gemini").state == "promoted"
    assert get_model(session=session, name="larry-tiny").state == "retired"
    with pytest.raises(ConflictError, match="no active or completed rollout"):
        rollback(session=session, route="larry", actor="bob", reason="again")
