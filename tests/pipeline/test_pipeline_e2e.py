"""End to end on the simulator: traffic through a real router, rated by simulated learners,
then `larrylab pipeline run` to a dataset on disk; a second run does no work."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import typer
from datasets import load_from_disk
from sqlmodel import Session
from typer.testing import CliRunner

from larrylab.cli._pipeline import pipeline_app
from larrylab.db._engine import make_engine
from larrylab.demo.learners import LearnerTaste
from larrylab.demo.traffic import send_workshop_traffic
from larrylab.localproc import LocalProcess, start_router
from larrylab.pipeline.runs import list_pipeline_runs
from larrylab.sim import SimConfig
from tests.conftest import write_config
from tests.pipeline.factories import counting_sim

pytestmark = pytest.mark.e2e

HAPPY = LearnerTaste(weights={}, default=(0.0, 0.0, 0.1, 0.4, 0.5))


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(pipeline_app, name="pipeline")

    @app.callback()
    def main() -> None:
        """Test entry point."""

    return app


def _traffic(tmp_path: Path, fast_sim: LocalProcess) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = write_config(
        tmp_path / "larrylab.yaml", control_url=fast_sim.url, candidate_url=fast_sim.url
    )
    router = start_router(log_dir=tmp_path, database_url=url, config=config)
    try:
        sent = send_workshop_traffic(
            router.url, route="larry", threads=14, seed=7, taste=HAPPY, rate_share=1.0
        )
    finally:
        assert router.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert sent.errors == 0 and sent.ratings == sent.requests > 14
    return url


def test_pipeline_run_from_router_traffic_to_a_dataset(
    tmp_path: Path, fast_sim: LocalProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _traffic(tmp_path, fast_sim)
    eval_set = tmp_path / "evals.jsonl"
    eval_set.write_text(
        json.dumps({"id": "e1", "messages": [{"role": "user", "content": "What is a JTBD?"}]})
        + "\n"
    )
    out = tmp_path / "run"
    monkeypatch.setenv("SIM_KEY", "simulated")
    judge_approves = SimConfig(ttft_ms=1, tokens_per_s=0, seed=11, structured_bias=0.85)
    with counting_sim(judge_approves) as (sim_url, counter):
        args = [
            "pipeline", "run", "--out", str(out), "--database-url", store,
            "--model", "openai/gemini-2.5-flash", "--api-base", f"{sim_url}/v1",
            "--api-key-env", "SIM_KEY", "--eval-set", str(eval_set), "--json",
        ]  # fmt: skip
        first = CliRunner().invoke(_app(), args)
        assert first.exit_code == 0, first.output
        stages = {s["stage"]: s for s in json.loads(first.stdout)["stages"]}
        paid = counter.requests
        second = CliRunner().invoke(_app(), args)
        assert second.exit_code == 0, second.output
        assert counter.requests == paid  # the second run asked the model nothing
    assert [s["status"] for s in json.loads(second.stdout)["stages"]] == ["skipped"] * 4

    exported = stages["export"]["counts"]["records"]
    assert exported >= 5 and stages["generate"]["counts"]["variations"] == 5 * exported
    f = stages["filter"]["counts"]
    judged = f["kept_generated"] + f["dropped_judge"]  # the variations that reached the judge
    assert f["judge_requests"] == judged > 0
    assert paid == exported + exported + judged  # classify, generate, judge: each paid once
    kept = f["kept"]
    assert 0 < kept < exported * 6 and f["dropped_judge"] > 0

    data = load_from_disk(str(out / "dataset/hf"))
    assert len(data["train"]) + len(data["validation"]) == kept
    assert len(data["validation"]) > 0
    train_threads = set(data["train"]["source_thread_id"])
    assert train_threads.isdisjoint(data["validation"]["source_thread_id"])
    lines = (out / "dataset/train.jsonl").read_text().splitlines()
    assert len(lines) == len(data["train"]) and set(json.loads(lines[0])) == {"messages"}
    card = (out / "dataset/README.md").read_text()
    assert "## Counts per category" in card and "## Judge scores" in card
    assert "gemini-flash" in card or "larry-v1" in card  # lineage: the models that served

    manifest = json.loads((out / "generate/manifest.json").read_text())
    assert manifest["inputs"]["export"]["sha256"] and manifest["models"]["generator"]
    assert manifest["library_versions"]["litellm"] and manifest["timings"]["seconds"] >= 0

    with Session(make_engine(store)) as session:
        recorded = list_pipeline_runs(session=session)
    assert sorted((r.stage, r.status) for r in recorded) == sorted(
        [(s, "done") for s in stages] + [(s, "skipped") for s in stages]
    )
