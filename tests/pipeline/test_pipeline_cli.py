"""`larrylab pipeline ...` from the command line: stats, errors as sentences, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from larrylab.cli._pipeline import pipeline_app
from larrylab.db._engine import upgrade
from larrylab.sim import SimConfig
from tests.pipeline.factories import counting_sim, seed_store, simple_threads


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(pipeline_app, name="pipeline")

    @app.callback()
    def main() -> None:
        """Test entry point."""

    return app


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(_app(), ["pipeline", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    seed_store(url, simple_threads(3))
    return url


def test_help_lists_the_stages() -> None:
    code, out, _ = invoke("--help")
    assert code == 0
    for command in ("export", "generate", "filter", "dataset", "run"):
        assert command in out


def test_export_prints_its_stats_table(tmp_path: Path, store: str) -> None:
    code, out, err = invoke(
        "export",
        "--out",
        str(tmp_path / "run"),
        "--database-url",
        store,
        "--classifier",
        "keywords",
    )
    assert code == 0, err
    assert "export: done" in out and "threads_exported" in out and "problem_clarification" in out
    code, out, _ = invoke(
        "export",
        "--out",
        str(tmp_path / "run"),
        "--database-url",
        store,
        "--classifier",
        "keywords",
        "--json",
    )
    summary = json.loads(out)
    assert summary["counts"]["records"] == 3 and summary["status"] == "done"


def test_a_stage_without_its_input_exits_3(tmp_path: Path) -> None:
    code, _, err = invoke(
        "generate", "--out", str(tmp_path / "empty"), "--database-url", f"sqlite:///{tmp_path}/x.db"
    )
    assert code == 3 and "run `larrylab pipeline export` first" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--quota", "tta=lots"], "is not a whole number"),
        (["generate", "--quota", "astrology=5"], "CATEGORY=N"),
        (["filter", "--eval-set", "/nonexistent/evals.jsonl"], "does not exist"),
        (["export", "--classifier", "magic"], "classifier must be one of"),
        (["export", "--api-key-env", "LARRYLAB_TEST_UNSET_KEY"], "LARRYLAB_TEST_UNSET_KEY"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    code, _, err = invoke(
        *args, "--out", str(tmp_path / "run"), "--database-url", f"sqlite:///{tmp_path}/x.db"
    )
    assert code == 2 and message in err and "Traceback" not in err


def test_export_from_a_database_without_schema_says_what_to_do(tmp_path: Path) -> None:
    code, _, err = invoke(
        "export", "--out", str(tmp_path / "run"), "--database-url", f"sqlite:///{tmp_path}/new.db"
    )
    assert code == 2 and "larrylab db upgrade" in err


def test_failed_model_requests_stop_the_run_with_exit_1(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_KEY", "simulated")
    with counting_sim(SimConfig(error_rate=1.0, error_status=503, ttft_ms=1)) as (url, counter):
        code, out, err = invoke(
            "run", "--out", str(tmp_path / "run"), "--database-url", store, "--classifier", "keywords",
            "--model", "openai/gemini-2.5-flash", "--api-base", f"{url}/v1", "--api-key-env", "SIM_KEY",
            "--retries", "1", "--json",
        )  # fmt: skip
    assert code == 1 and "generate finished only partly" in err and "rerun" in err
    assert counter.requests == 3 * 2
    stages = json.loads(out)["stages"]
    assert [(s["stage"], s["status"]) for s in stages] == [
        ("export", "done"),
        ("generate", "partial"),
    ]
    assert stages[1]["counts"]["requests_failed"] == 3


def test_missing_provider_credentials_fail_before_any_retry(
    tmp_path: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = invoke("export", "--out", str(tmp_path / "run"), "--database-url", store)
    assert code == 2 and "gemini/gemini-2.5-flash: set" in err and "GEMINI_API_KEY" in err
