"""The documented `inspect eval` command against a router, over HTTP alone: the model under
test and the judge are routes of a `larrylab serve` router in front of `larrylab sim`, and the
inspect process has no database URL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from inspect_ai.log import read_eval_log

from larrylab.localproc import LocalProcess, start_router

pytestmark = pytest.mark.e2e

INSPECT = str(Path(sys.executable).parent / "inspect")


@pytest.fixture
def router(tmp_path: Path, fast_sim: LocalProcess) -> Iterator[LocalProcess]:
    config = tmp_path / "larrylab.yaml"
    config.write_text(
        "models:\n"
        f"  gemini-flash: {{api: openai, base_url: {fast_sim.url}/v1, model: gemini-2.5-flash}}\n"
        "routes:\n"
        "  larry: {model: gemini-flash}\n"
    )
    url = f"sqlite:///{tmp_path / 'router.db'}"
    proc = start_router(log_dir=tmp_path, database_url=url, config=config)
    yield proc
    proc.stop()


def _http_only_env(router: LocalProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LARRYLAB_")}
    return {**env, "OPENAI_BASE_URL": f"{router.url}/v1", "OPENAI_API_KEY": "unused"}


def test_inspect_eval_scores_through_the_router_with_no_database(
    router: LocalProcess, tmp_path: Path
) -> None:
    workdir = tmp_path / "outside"
    workdir.mkdir()
    log_dir = tmp_path / "logs"
    command = [
        INSPECT, "eval", "larrylab/problem_clarification",
        "--model", "openai/larry", "-M", "responses_api=false",
        "-T", "judge=openai/larry", "-T", "judge_args={responses_api: false}",
        "--limit", "2", "--log-dir", str(log_dir), "--log-format", "json", "--display", "none",
    ]  # fmt: skip
    done = subprocess.run(
        command,
        cwd=workdir,
        env=_http_only_env(router),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [log_file] = log_dir.glob("*.json")
    log = read_eval_log(str(log_file))
    assert log.status == "success", log.error
    assert log.results is not None and log.results.completed_samples == 2
    metrics = {s.name: s.metrics for s in log.results.scores}
    assert "score" in metrics and "mean" in metrics["score"]
    assert log.samples is not None
    for sample in log.samples:
        assert sample.scores is not None
        [score] = sample.scores.values()
        assert "judge failed" not in (score.explanation or "")
        assert set(score.value) == {"score", "judge", "checks"}  # type: ignore[arg-type]
    assert list(workdir.iterdir()) == []  # no database was created or needed
    requests = router.log()
    assert "Traceback" not in requests
