"""`larrylab eval run` and `larrylab gate` end to end, against models served by the simulator.

The simulator answers structured-output requests with schema-valid values, so the judge's
grades are random but well formed; these tests check the plumbing (registry resolution, the
router's provider layer, inspect logs, stored scores, gate decisions), not the scores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import typer
from inspect_ai.log import read_eval_log
from sqlmodel import Session
from typer.testing import CliRunner

from larrylab.cli._evals import eval_app, gate_command
from larrylab.config import ModelSpec, load_config_file
from larrylab.db._engine import make_engine, upgrade
from larrylab.evals.evalset import eval_set_hash
from larrylab.evals.runner import EvalRunError, result_from_log
from larrylab.localproc import LocalProcess
from larrylab.release._bootstrap import bootstrap
from larrylab.release._evalstore import current_eval_set, latest_eval_results
from larrylab.release._registry import create_model, get_model, update_model

pytestmark = pytest.mark.e2e


def _cli() -> typer.Typer:
    # the wiring larrylab/cli/_main.py does for these commands
    app = typer.Typer()
    app.add_typer(eval_app, name="eval")
    app.command("gate")(gate_command)
    return app


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, fast_sim: LocalProcess) -> dict[str, str]:
    """A SQLite store: route `larry` served by a control model, and a candidate (simulated)."""
    root = tmp_path_factory.mktemp("evals")
    url = f"sqlite:///{root / 'larrylab.db'}"
    config = root / "larrylab.yaml"
    config.write_text(
        "models:\n"
        f"  gemini-flash: {{api: openai, base_url: {fast_sim.url}/v1, model: gemini-2.5-flash}}\n"
        "routes:\n"
        "  larry: {model: gemini-flash}\n"
    )
    upgrade(url)
    bootstrap(make_engine(url), load_config_file(config))
    with Session(make_engine(url)) as session:
        spec = ModelSpec(base_url=f"{fast_sim.url}/v1", model="larry-v1-q4")
        create_model(session=session, name="larry-v1", spec=spec)  # a new, ungated candidate
    return {"url": url, "root": str(root)}


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(_cli(), list(args))
    return result.exit_code, result.output


def test_eval_run_writes_inspect_logs_and_stores_scores(store: dict[str, str]) -> None:
    log_dir = Path(store["root"]) / "run-logs"
    code, out = _invoke(
        "eval", "run", "larry-v1", "--tasks", "problem_clarification,red_team", "--limit", "2",
        "--log-dir", str(log_dir), "--database-url", store["url"], "--json",
    )  # fmt: skip
    assert code == 0, out
    payload = json.loads(out)
    assert payload["eval_set_hash"] == eval_set_hash()
    tasks = {r["task"]: r for r in payload["results"]}
    assert set(tasks) == {"problem_clarification", "red_team"}
    for result in tasks.values():
        assert result["n_samples"] == 2
        assert 0.0 <= result["ci_low"] <= result["mean"] <= result["ci_high"] <= 1.0
        assert all(0.0 <= s <= 1.0 for s in result["sample_scores"].values())
        log = read_eval_log(result["log_path"])
        assert log.status == "success" and Path(result["log_path"]).parent == log_dir
        assert log.samples is not None
        # the registry name was resolved to its upstream model and called through it
        assert {s.output.model for s in log.samples} == {"larry-v1-q4"}
        assert all(s.scores and "pws_scorer" in s.scores for s in log.samples)
    with Session(make_engine(store["url"])) as session:
        stored = latest_eval_results(session=session, model="larry-v1")
        current = current_eval_set(session=session)
    assert {r.task: r.sample_scores for r in stored} == {
        t: r["sample_scores"] for t, r in tasks.items()
    }
    assert {r.judge for r in stored} == {"gemini-flash"}  # the route's control model
    assert current is not None and current.eval_set_hash == eval_set_hash()

    # a failed task refuses to become a result
    broken = log.model_copy(update={"status": "error"})
    with pytest.raises(EvalRunError, match="did not finish"):
        result_from_log(broken)


def test_gate_stores_a_decision_and_reuses_stored_evals(store: dict[str, str]) -> None:
    args = ["gate", "larry-v1", "--limit", "2", "--database-url", store["url"], "--json",
            "--log-dir", str(Path(store["root"]) / "gate-logs")]  # fmt: skip
    code, out = _invoke(*args)
    decision = json.loads(out)
    assert code == (0 if decision["passed"] else 1), out
    assert decision["baseline"] == "gemini-flash"  # the model route larry serves
    assert decision["eval_set_hash"] == eval_set_hash()
    assert decision["evidence"]["n_paired"] == 14
    logs = decision["evidence"]["tasks"]
    assert set(logs) == {"candidate", "baseline"}
    assert all(Path(t["log_path"]).exists() for side in logs.values() for t in side.values())
    with Session(make_engine(store["url"])) as session:
        state = get_model(session=session, name="larry-v1").state
    runs = _run_ids(store["url"], "larry-v1")
    assert state == ("passed" if decision["passed"] else "failed")

    code, out = _invoke(*args)
    again = json.loads(out)
    assert again["evidence"]["tasks"] == logs  # the same stored runs were reused
    assert _run_ids(store["url"], "larry-v1") == runs

    # pointed at another endpoint, the candidate is evaluated again; the baseline is not
    baseline_runs = _run_ids(store["url"], "gemini-flash")
    with Session(make_engine(store["url"])) as session:
        spec = ModelSpec(base_url=get_model(session=session, name="larry-v1").base_url,
                         model="larry-v1-q8")  # fmt: skip
        update_model(session=session, name="larry-v1", spec=spec)
    code, out = _invoke(*args)
    assert json.loads(out)["evidence"]["tasks"]["baseline"] == logs["baseline"]
    assert _run_ids(store["url"], "larry-v1").isdisjoint(runs)
    assert _run_ids(store["url"], "gemini-flash") == baseline_runs


def _run_ids(url: str, model: str) -> set[str]:
    with Session(make_engine(url)) as session:
        return {r.run_id for r in latest_eval_results(session=session, model=model)}


def test_eval_run_prints_a_table(store: dict[str, str]) -> None:
    log_dir = Path(store["root"]) / "table-logs"
    code, out = _invoke(
        "eval", "run", "larry-v1", "--tasks", "tta", "--limit", "1", "--judge", "gemini-flash",
        "--log-dir", str(log_dir), "--database-url", store["url"],
    )  # fmt: skip
    assert code == 0, out
    assert "larry-v1 on eval set pws_eval_v1" in out
    assert "tta" in out and f"inspect view --log-dir {log_dir}" in out


def test_cli_errors_are_sentences(store: dict[str, str]) -> None:
    code, out = _invoke("eval", "run", "nope", "--database-url", store["url"])
    assert code == 3 and "unknown model 'nope'" in out
    code, out = _invoke(
        "eval", "run", "larry-v1", "--tasks", "poetry", "--database-url", store["url"]
    )
    assert code == 2 and "unknown task(s) ['poetry']" in out
    code, out = _invoke("gate", "gemini-flash", "--database-url", store["url"])
    assert code == 2 and "is the baseline itself" in out
    code, out = _invoke("gate", "larry-v1", "--route", "nope", "--database-url", store["url"])
    assert code == 3 and "unknown route 'nope'" in out
    code, out = _invoke(
        "eval", "run", "larry-v1", "--judge", "oracle", "--database-url", store["url"]
    )
    assert code == 3 and "unknown model 'oracle'" in out


@pytest.mark.skipif(
    not any(ep.name == "larrylab" for ep in entry_points(group="inspect_ai")),
    reason="larrylab's inspect_ai entry point is not installed (pip install -e .)",
)
def test_inspect_eval_finds_the_tasks_and_model_api(store: dict[str, str]) -> None:
    log_dir = Path(store["root"]) / "inspect-logs"
    env = {**os.environ, "LARRYLAB_DATABASE_URL": store["url"]}
    proc = subprocess.run(
        [sys.executable, "-m", "inspect_ai", "eval", "larrylab/tta", "--model",
         "larrylab/larry-v1", "-T", "judge=gemini-flash", "--limit", "1",
         "--log-dir", str(log_dir), "--display", "none"],
        env=env, capture_output=True, text=True, timeout=120,
        cwd=store["root"],  # in the repository root, `larrylab/tta` would name a folder
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (path,) = log_dir.glob("*.eval")
    log = read_eval_log(str(path))
    assert log.status == "success"
    assert (log.eval.task_registry_name, log.eval.model) == ("larrylab/tta", "larrylab/larry-v1")
