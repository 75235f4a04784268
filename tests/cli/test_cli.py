"""The `larrylab` command: help everywhere, clear sentences and exit codes on bad input."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from larrylab.cli._main import app
from larrylab.db._engine import upgrade

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["serve"],
        ["sim"],
        ["demo"],
        ["db"],
        ["db", "upgrade"],
        ["experiment"],
        ["experiment", "list"],
        ["experiment", "create"],
        ["experiment", "update"],
        ["models", "list"],
        ["models", "show"],
        ["models", "retire"],
        ["pipeline"],
        ["pipeline", "run"],
        ["pipeline", "train"],
        ["pipeline", "package"],
        ["eval", "run"],
        ["gate"],
        ["promote"],
        ["rollback"],
        ["rollout", "list"],
        ["rollout", "tick"],
        ["dashboard"],
    ],
)
def test_every_command_has_help(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_serve_refuses_a_bad_config_with_file_key_and_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("models:\n  m: {api: openai}\n")
    result = runner.invoke(
        app, ["serve", "--config", str(config), "--database-url", f"sqlite:///{tmp_path}/x.db"]
    )
    assert result.exit_code == 2
    assert f"{config}: models.m: an `api: openai` model needs `base_url`" in result.output


def test_serve_refuses_public_bind_without_keys(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["serve", "--host", "0.0.0.0", "--database-url", f"sqlite:///{tmp_path}/x.db"]
    )
    assert result.exit_code == 2
    assert "LARRYLAB_API_KEYS and LARRYLAB_ADMIN_KEY" in result.output


def test_serve_on_postgres_needs_upgrade_first(postgres_url: str) -> None:
    result = runner.invoke(app, ["serve", "--port", "0", "--database-url", postgres_url])
    assert result.exit_code == 2
    assert "larrylab db upgrade" in result.output


def test_bad_database_url_is_a_sentence() -> None:
    result = runner.invoke(app, ["db", "upgrade", "--database-url", "mysql://x@y/z"])
    assert result.exit_code == 2
    assert "unsupported database 'mysql'" in result.output


def test_experiment_commands(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/x.db"
    upgrade(db)
    with sqlite3.connect(tmp_path / "x.db") as conn:
        for name in ("gemini", "larry-v1"):
            conn.execute(
                "INSERT INTO model (name, api, base_url, connect_timeout_s, first_token_timeout_s, total_timeout_s,"
                " state, lineage, created_at, updated_at) VALUES (?, 'openai', 'http://127.0.0.1:9/v1', 1, 1, 1,"
                " 'registered', '{}', '2026-01-01', '2026-01-01')",
                (name,),
            )
    ok = runner.invoke(
        app,
        [
            "experiment",
            "create",
            "e1",
            "--route",
            "larry",
            "--arm",
            "gemini=90:control",
            "--arm",
            "larry-v1=10",
            "--database-url",
            db,
        ],
    )
    assert ok.exit_code == 0, ok.output
    listed = json.loads(
        runner.invoke(app, ["experiment", "list", "--json", "--database-url", db]).output
    )
    assert listed["count"] == 1 and listed["data"][0]["arms"][1] == {
        "model": "larry-v1",
        "weight": 10.0,
        "control": False,
    }
    assert (
        runner.invoke(
            app,
            [
                "experiment",
                "weights",
                "e1",
                "--arm",
                "gemini=50:control",
                "--arm",
                "larry-v1=50",
                "--database-url",
                db,
            ],
        ).exit_code
        == 0
    )
    shown = json.loads(
        runner.invoke(app, ["experiment", "show", "e1", "--json", "--database-url", db]).output
    )
    assert [a["weight"] for a in shown["arms"]] == [50.0, 50.0]
    assert [s["requests"] for s in shown["report"]] == [0, 0]
    assert shown["unsupported"] == "control"
    stopped = runner.invoke(app, ["experiment", "stop", "e1", "--database-url", db])
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    missing = runner.invoke(app, ["experiment", "stop", "nope", "--database-url", db])
    assert missing.exit_code == 3 and "unknown experiment 'nope'" in missing.output
    bad_arm = runner.invoke(
        app, ["experiment", "weights", "e1", "--arm", "gemini", "--database-url", db]
    )
    assert bad_arm.exit_code == 2 and "MODEL=WEIGHT" in bad_arm.output
    ghost = runner.invoke(
        app,
        [
            "experiment",
            "create",
            "e2",
            "--route",
            "r2",
            "--arm",
            "ghost=1:control",
            "--database-url",
            db,
        ],
    )
    assert ghost.exit_code == 3 and "unknown model 'ghost'" in ghost.output


def test_experiment_unsupported_setting(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/x.db"
    upgrade(db)
    with sqlite3.connect(tmp_path / "x.db") as conn:
        conn.execute(
            "INSERT INTO model (name, api, base_url, connect_timeout_s, first_token_timeout_s,"
            " total_timeout_s, state, lineage, created_at, updated_at) VALUES ('gemini',"
            " 'openai', 'http://127.0.0.1:9/v1', 1, 1, 1, 'registered', '{}', '2026-01-01',"
            " '2026-01-01')"
        )
    create = ["experiment", "create", "e1", "--route", "larry", "--arm", "gemini=1:control"]
    bad = runner.invoke(app, [*create, "--unsupported", "drop", "--database-url", db])
    assert bad.exit_code == 2 and "--unsupported must be `control` or `strip`" in bad.output
    ok = runner.invoke(app, [*create, "--unsupported", "strip", "--database-url", db])
    assert ok.exit_code == 0, ok.output

    def shown() -> dict[str, object]:
        out = runner.invoke(app, ["experiment", "show", "e1", "--json", "--database-url", db])
        return dict(json.loads(out.output))

    assert shown()["unsupported"] == "strip"
    text = runner.invoke(app, ["experiment", "show", "e1", "--database-url", db]).output
    assert "answered by the candidate without the feature" in text
    listed = runner.invoke(app, ["experiment", "list", "--database-url", db]).output
    assert "strip" in listed
    update = ["experiment", "update", "e1", "--database-url", db]
    changed = runner.invoke(app, [*update, "--unsupported", "control"])
    assert changed.exit_code == 0 and "served by the control" in changed.output
    assert shown()["unsupported"] == "control"
    wrong = runner.invoke(app, [*update, "--unsupported", "STRIP"])
    assert wrong.exit_code == 2 and "not 'STRIP'" in wrong.output
    nothing = runner.invoke(app, update)
    assert nothing.exit_code == 2 and "nothing to change" in nothing.output
    missing = runner.invoke(
        app, ["experiment", "update", "ghost", "--unsupported", "strip", "--database-url", db]
    )
    assert missing.exit_code == 3 and "unknown experiment 'ghost'" in missing.output
    assert shown()["unsupported"] == "control"


@pytest.mark.e2e
def test_demo_runs_the_whole_flywheel_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A smaller `larrylab demo`: traffic, A/B report, pipeline, tiny fine-tune, evals, gate."""
    args = ["demo", "--threads", "12", "--dir", str(tmp_path), "--eval-limit", "2", "--epochs", "1"]
    out = subprocess.run(
        [sys.executable, "-m", "larrylab", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "SIMULATED Gemini-like upstream" in text
    assert "larry-v1-vs-gemini" in text and "0 errors" in text
    for step in ("[3/6] pipeline", "[4/6] fine-tune", "[5/6] evals", "[6/6]"):
        assert step in text
    assert "registered 'larry-tiny'" in text and "ollama create larry-tiny -f" in text
    assert "gate: larry-tiny vs gemini-flash" in text
    db = tmp_path / "larrylab.db"
    with sqlite3.connect(db) as conn:
        requests = conn.execute("SELECT count(*) FROM request WHERE status = 'ok'").fetchone()[0]
        stages = dict(conn.execute("SELECT stage, status FROM pipeline_stage").fetchall())
        lineage = conn.execute("SELECT lineage FROM model WHERE name = 'larry-tiny'").fetchone()
        evals = conn.execute("SELECT model, count(*) FROM eval_result GROUP BY model").fetchall()
        gate = conn.execute("SELECT passed, baseline FROM gate_decision").fetchall()
        state = conn.execute("SELECT state FROM model WHERE name = 'larry-tiny'").fetchone()[0]
        rollouts = conn.execute("SELECT status FROM rollout").fetchall()
    assert requests >= 24  # 12 threads of 2 to 4 turns
    assert stages == {"export": "done", "generate": "done", "filter": "done", "dataset": "done"}
    assert '"base_model"' in lineage[0] and '"dataset_manifest_hash"' in lineage[0]
    assert dict(evals) == {"gemini-flash": 7, "larry-tiny": 7}
    [(passed, baseline)] = gate
    assert baseline == "gemini-flash"
    # Whatever the gate decided, the registry and the rollouts agree with it.
    if passed:
        assert state == "canary" and rollouts == [("active",)]
    else:
        assert state == "failed" and rollouts == [] and "gate refused larry-tiny" in text
    assert f"larrylab dashboard --database-url sqlite:///{db}" in text

    # The dashboard opens the demo's database.
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LARRYLAB_DATABASE_URL", f"sqlite:///{db}")
    app = Path(__file__).resolve().parents[2] / "larrylab" / "dashboard" / "app.py"
    for page in ("overview", "experiment", "models", "pipeline"):
        at = AppTest.from_file(str(app), default_timeout=60)
        at.run()
        at.switch_page(f"views/{page}.py")
        at.run()
        assert not at.exception, (page, [e.value for e in at.exception])
