"""The admin API and CLI for the release side: history, gate-checked promotion, rollback."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import Session
from typer.testing import CliRunner

from larrylab.cli._main import app
from larrylab.config import ModelSpec, Settings
from larrylab.db._engine import make_engine
from larrylab.localproc import LocalProcess
from larrylab.release._evalstore import GateDecisionIn, record_gate_decision, register_eval_set
from larrylab.release._prepare import prepare_store
from larrylab.release._registry import register_trained_model
from tests.conftest import write_config
from tests.router.factories import error_message as _error
from tests.router.factories import router_client as _client

ADMIN = {"authorization": "Bearer adm", "x-larrylab-actor": "carol"}


def _gate(db: Path, candidate: str) -> None:
    engine = make_engine(f"sqlite:///{db}")
    with Session(engine) as session:
        register_eval_set(session=session, eval_set_hash="e" * 64, version="v1", n_samples=105)
        record_gate_decision(
            session=session,
            decision=GateDecisionIn(
                candidate=candidate,
                baseline="gemini-flash",
                eval_set_hash="e" * 64,
                passed=True,
                reasons=["overall 0.82 >= 0.60", "every category above its floor"],
            ),
            actor="larrylab gate",
        )
    engine.dispose()


def test_promotion_through_the_admin_api(tmp_path: Path, fast_sim: LocalProcess) -> None:
    for client in _client(tmp_path, fast_sim, admin_key="adm"):
        client.post("/admin/experiments/larry-v1-vs-gemini/stop", headers=ADMIN)
        made = client.post(
            "/admin/models",
            json={"name": "larry-v2", "base_url": f"{fast_sim.url}/v1", "model": "larry-v2"},
            headers=ADMIN,
        )
        assert made.json()["state"] == "registered"
        refused = client.post(
            "/admin/models/larry-v2/promote", json={"route": "larry"}, headers=ADMIN
        )
        assert "never gated" in _error(refused, 409)
        assert (
            "never gated"
            in client.get(
                "/admin/models/larry-v2/readiness", params={"route": "larry"}, headers=ADMIN
            ).json()["reason"]
        )
        assert _error(client.get("/admin/models/larry-v2/gate", headers=ADMIN), 404)
        assert _error(
            client.post("/admin/models/nope/promote", json={"route": "larry"}, headers=ADMIN), 404
        )
        assert _error(
            client.post(
                "/admin/models/larry-v2/promote",
                json={"route": "larry", "canary_weight": 100},
                headers=ADMIN,
            ),
            422,
        )

        _gate(tmp_path / "db.sqlite", "larry-v2")
        ok = client.post(
            "/admin/models/larry-v2/promote",
            json={"route": "larry", "canary_weight": 5},
            headers=ADMIN,
        )
        assert ok.status_code == 201, ok.text
        rollout = ok.json()
        assert (rollout["status"], rollout["weight"], rollout["steps"]) == (
            "active",
            5,
            [5, 10, 25, 50, 100],
        )
        # The router serves the canary at once: the experiment is live on the route.
        r = client.post(
            "/v1/chat/completions",
            json={"model": "larry", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.headers["x-larrylab-experiment"] == rollout["experiment"]

        ticks = client.post("/admin/rollouts/tick", headers=ADMIN).json()
        assert ticks[0]["action"] == "hold"
        back = client.post(
            "/admin/routes/larry/rollback", json={"reason": "learners confused"}, headers=ADMIN
        )
        assert back.status_code == 200, back.text
        assert back.json()["status"] == "rolled_back"
        events = client.get("/admin/models/larry-v2/events", headers=ADMIN).json()["data"]
        assert [(e["to_state"], e["actor"]) for e in events[:3]] == [
            ("failed", "carol"),
            ("canary", "carol"),
            ("passed", "larrylab gate"),
        ]
        audit = client.get("/admin/audit", params={"kind": "rollout"}, headers=ADMIN).json()
        assert [e["action"] for e in audit["data"]] == ["rolled_back", "start"]
        assert _error(
            client.post(
                "/admin/models/larry-v2/transition",
                json={"to_state": "promoted", "reason": "skip the gate"},
                headers=ADMIN,
            ),
            409,
        )


def test_cli_refuses_to_promote_an_ungated_model(tmp_path: Path, fast_sim: LocalProcess) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    config = write_config(tmp_path / "c.yaml", control_url=fast_sim.url, candidate_url=fast_sim.url)
    prepare_store(Settings(database_url=url, config=config))
    engine = make_engine(url)
    with Session(engine) as session:
        register_trained_model(
            session=session,
            name="larry-v2",
            spec=ModelSpec(base_url=f"{fast_sim.url}/v1", model="larry-v2"),
            lineage={"base_model": "tiny"},
            actor="test",
        )
    engine.dispose()
    runner = CliRunner()
    runner.invoke(app, ["experiment", "stop", "larry-v1-vs-gemini", "--database-url", url])
    result = runner.invoke(app, ["promote", "larry-v2", "--route", "larry", "--database-url", url])
    assert result.exit_code == 2
    assert "promotion refused: 'larry-v2' was never gated" in result.output
    _gate(tmp_path / "db.sqlite", "larry-v2")
    result = runner.invoke(app, ["promote", "larry-v2", "--route", "larry", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "canary started: larry-v2 at 10% of route larry" in result.output
    shown = runner.invoke(app, ["models", "show", "larry-v2", "--database-url", url, "--json"])
    assert '"state": "canary"' in shown.output
    listed = runner.invoke(app, ["rollout", "list", "--database-url", url])
    assert "larry-v2" in listed.output and "active" in listed.output
    result = runner.invoke(app, ["rollback", "larry", "--database-url", url])
    assert result.exit_code == 0 and "rolled back larry-v2" in result.output
