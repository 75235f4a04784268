"""Issue #27 through the real CLI: bad weights, names and key settings exit non-zero with a
sentence (never a traceback); the good values still work and `report` reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from larrylab.cli._main import app
from larrylab.config import ModelSpec
from larrylab.db._engine import make_engine, upgrade
from larrylab.release._registry import create_model

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        for name in ("gemini", "larry-v1"):
            create_model(
                session=session, name=name, spec=ModelSpec(base_url="http://127.0.0.1:9/v1")
            )
    engine.dispose()
    return url


def _create(db: str, *args: str, name: str = "e1", route: str = "larry") -> list[str]:
    return ["experiment", "create", name, "--route", route, *args, "--database-url", db]


def _refused(args: list[str], fragment: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output  # an uncaught exception would exit 1
    assert "Traceback" not in result.output
    assert "error: " in result.output and fragment in result.output, result.output
    return result.output


@pytest.mark.parametrize(
    ("w1", "w2"),
    [("Infinity", "1"), ("1e309", "1"), ("1e308", "1e308"), ("nan", "1"), ("-1", "1")],
)
def test_bad_weights_exit_with_a_sentence(db: str, w1: str, w2: str) -> None:
    arms = ["--arm", f"gemini={w1}:control", "--arm", f"larry-v1={w2}"]
    _refused(_create(db, *arms), "weight")
    assert "e1" not in runner.invoke(app, ["experiment", "list", "--database-url", db]).output
    good = ["--arm", "gemini=1:control", "--arm", "larry-v1=1"]
    assert runner.invoke(app, _create(db, *good)).exit_code == 0
    _refused(["experiment", "weights", "e1", *arms, "--database-url", db], "weight")


@pytest.mark.parametrize(
    ("where", "value"),
    [("name", "x" * 5000), ("route", "r" * 5000), ("name", "bad name"), ("route", "a/b")],
)
def test_bad_names_exit_with_a_sentence(db: str, where: str, value: str) -> None:
    arms = ["--arm", "gemini=1:control", "--arm", "larry-v1=1"]
    out = _refused(_create(db, *arms, **{where: value}), where)
    assert len(out) < 1000  # the sentence, not the 5,000 characters back


def test_the_largest_weights_work_and_report_reads_them(db: str) -> None:
    arms = ["--arm", "gemini=1e6:control", "--arm", "larry-v1=0.001"]
    assert runner.invoke(app, _create(db, *arms)).exit_code == 0
    report = runner.invoke(app, ["report", "e1", "--database-url", db])
    assert report.exit_code == 0, report.output
    assert "e1" in report.output


def test_serve_refuses_an_admin_key_that_is_also_a_client_key(tmp_path: Path) -> None:
    env = {"LARRYLAB_API_KEYS": "larry-key, s3cret-shared", "LARRYLAB_ADMIN_KEY": "s3cret-shared"}
    # Two workers on SQLite would stop it later anyway: the test never starts a server.
    args = ["serve", "--workers", "2", "--database-url", f"sqlite:///{tmp_path}/x.db"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2, result.output
    assert "LARRYLAB_ADMIN_KEY must differ from every client key" in result.output
    assert "s3cret-shared" not in result.output
