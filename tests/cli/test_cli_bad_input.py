"""Bad input on the command line: one sentence, a non-zero exit, never a traceback.

Covers `--out` folders that cannot be written, experiments whose stored arm weights overflow,
ports out of range or already in use, and a few other obviously bad inputs.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from larrylab.cli._main import app
from larrylab.db._engine import make_engine, upgrade
from larrylab.experiments._report import experiment_report
from larrylab.experiments.stats import srm_pvalue

runner = CliRunner()
PIPELINE_STAGES = ["export", "generate", "filter", "dataset", "run"]


def assert_sentence(result: Result, words: str, code: int | None = None) -> None:
    """The command failed with `words` in its output, by a clean exit, not an exception."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert words in result.output, result.output
    assert "Traceback" not in result.output


def strict_json(text: str) -> Any:
    """Parse `text` as strict JSON: NaN and Infinity are refused."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def larrylab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real `larrylab` command (as a user would) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "larrylab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "afile"
    path.write_text("not a folder\n")
    return path


# --out that cannot be a folder -------------------------------------------------------------


@pytest.mark.parametrize("stage", PIPELINE_STAGES)
def test_pipeline_out_naming_a_file_is_a_sentence(tmp_path: Path, a_file: Path, stage: str) -> None:
    result = runner.invoke(
        app,
        ["pipeline", stage, "--out", str(a_file), "--database-url", f"sqlite:///{tmp_path}/x.db"],
    )
    assert_sentence(result, f"--out {a_file}: is a file, not a folder", code=2)


@pytest.mark.parametrize("stage", PIPELINE_STAGES)
def test_pipeline_out_under_a_file_is_a_sentence(tmp_path: Path, a_file: Path, stage: str) -> None:
    out = a_file / "sub"
    result = runner.invoke(
        app, ["pipeline", stage, "--out", str(out), "--database-url", f"sqlite:///{tmp_path}/x.db"]
    )
    assert_sentence(result, f"--out {out}: {a_file} is a file, not a folder", code=2)


def test_pipeline_out_in_an_unwritable_folder_is_a_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, which chmod does not stop: make the access check say no instead,
    # as it does on a read-only file system.
    import larrylab.cli._kit

    monkeypatch.setattr(larrylab.cli._kit.os, "access", lambda *args, **kwargs: False)
    out = tmp_path / "ro" / "run"
    result = runner.invoke(
        app,
        ["pipeline", "export", "--out", str(out), "--database-url", f"sqlite:///{tmp_path}/x.db"],
    )
    assert_sentence(result, f"cannot write to {tmp_path}: permission denied", code=2)


@pytest.mark.parametrize("under", [False, True])
def test_train_out_that_cannot_be_a_folder_is_a_sentence(
    tmp_path: Path, a_file: Path, under: bool
) -> None:
    out = a_file / "sub" if under else a_file
    result = runner.invoke(
        app,
        ["pipeline", "train", "--dataset", str(tmp_path), "--out", str(out), "--tiny",
         "--no-register"],
    )  # fmt: skip
    assert_sentence(result, "is a file, not a folder", code=2)


def test_demo_dir_naming_a_file_is_a_sentence(a_file: Path) -> None:
    result = runner.invoke(app, ["demo", "--dir", str(a_file)])
    assert_sentence(result, f"--dir {a_file}: is a file, not a folder", code=2)


def test_eval_log_dir_naming_a_file_is_a_sentence(tmp_path: Path, a_file: Path) -> None:
    result = runner.invoke(
        app,
        [
            "eval",
            "run",
            "m",
            "--log-dir",
            str(a_file),
            "--database-url",
            f"sqlite:///{tmp_path}/x.db",
        ],
    )
    assert_sentence(result, f"--log-dir {a_file}: is a file, not a folder", code=2)


def test_sqlite_database_under_a_file_is_a_sentence(a_file: Path) -> None:
    result = runner.invoke(app, ["db", "upgrade", "--database-url", f"sqlite:///{a_file}/x.db"])
    assert_sentence(result, f"{a_file}", code=1)
    assert "is not a folder" in result.output


def test_package_with_a_missing_system_file_is_a_sentence(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    result = runner.invoke(
        app,
        ["pipeline", "package", "--adapter", str(tmp_path), "--name", "x",
         "--system-file", str(missing)],
    )  # fmt: skip
    assert_sentence(result, f"cannot use {missing}: no such file or directory", code=2)
    assert "Errno" not in result.output


# experiments whose stored weights overflow --------------------------------------------------


def _experiment_with_weights(tmp_path: Path, *weights: float) -> str:
    """A SQLite store with experiment e1 whose arms hold `weights` (written past validation)
    and some threads per arm."""
    db = tmp_path / "x.db"
    url = f"sqlite:///{db}"
    upgrade(url)
    with sqlite3.connect(db) as conn:
        for name in ("a", "b"):
            conn.execute(
                "INSERT INTO model (name, api, base_url, connect_timeout_s, first_token_timeout_s,"
                " total_timeout_s, state, lineage, created_at, updated_at) VALUES (?, 'openai',"
                " 'http://127.0.0.1:9/v1', 1, 1, 1, 'registered', '{}', '2026-01-01', '2026-01-01')",
                (name,),
            )
    made = runner.invoke(
        app,
        ["experiment", "create", "e1", "--route", "r", "--arm", "a=1:control", "--arm", "b=1",
         "--database-url", url],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    with sqlite3.connect(db) as conn:
        for model, weight in zip(("a", "b"), weights, strict=True):
            conn.execute("UPDATE arm SET weight = ? WHERE model = ?", (weight, model))
        conn.executemany(
            "INSERT INTO arm_stat VALUES ('e1', ?, 'threads', ?, ?, ?)",
            [("a", 10, 10, 10), ("b", 12, 12, 12)],
        )
    return url


@pytest.mark.parametrize(
    "weights", [(1e308, 1e308), (1.0, float("inf"))], ids=["overflowing", "infinite"]
)
def test_report_on_overflowing_weights_prints_what_it_can(
    tmp_path: Path, weights: tuple[float, float]
) -> None:
    url = _experiment_with_weights(tmp_path, *weights)
    result = runner.invoke(app, ["report", "e1", "--database-url", url])
    assert_sentence(result, "arm weights", code=1)
    assert "a (control)" in result.output  # the per-arm table still printed
    assert "larrylab experiment weights" in result.output
    as_json = runner.invoke(app, ["report", "e1", "--json", "--database-url", url])
    assert as_json.exit_code == 1
    data = strict_json(as_json.stdout)
    assert data["weights_problem"]
    assert data["candidates"][0]["verdict"] == "invalid"
    assert [a["arm"] for a in data["arms"]] == ["a", "b"]
    shown = runner.invoke(app, ["experiment", "show", "e1", "--json", "--database-url", url])
    assert shown.exit_code == 0, shown.output
    assert [a["arm"] for a in strict_json(shown.stdout)["report"]] == ["a", "b"]


def test_report_survives_non_finite_weights(tmp_path: Path) -> None:
    url = _experiment_with_weights(tmp_path, 1e308, 1e308)
    engine = make_engine(url)
    for weights in ((1e308, 1e308), (float("inf"), 1.0), (float("nan"), 1.0)):
        arms = [("a", True, weights[0]), ("b", False, weights[1])]
        result = experiment_report(engine, "e1", arms)
        assert result.weights_problem and not result.srm
        assert result.candidates[0].verdict == "invalid"


def test_srm_survives_weights_whose_sum_overflows() -> None:
    assert srm_pvalue([10, 12], [1e308, 1e308]) == pytest.approx(srm_pvalue([10, 12], [1, 1]))


# ports --------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["sim", "serve"])
@pytest.mark.parametrize("port", ["99999", "-1"])
def test_port_out_of_range_is_refused(tmp_path: Path, command: str, port: str) -> None:
    args = [command, "--port", port]
    if command == "serve":
        args += ["--database-url", f"sqlite:///{tmp_path}/x.db"]
    done = larrylab(*args, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{port} is not a TCP port: use 0 to 65535" in done.stderr
    assert "Traceback" not in done.stderr
    assert "listening" not in done.stdout and "router on" not in done.stdout


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another socket is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", ["sim", "serve"])
def test_busy_port_is_refused_before_the_banner(
    tmp_path: Path, busy_port: int, command: str
) -> None:
    args = [command, "--port", str(busy_port)]
    if command == "serve":
        args += ["--database-url", f"sqlite:///{tmp_path}/x.db"]
    done = larrylab(*args, timeout=30)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {busy_port} on 127.0.0.1 is already in use" in done.stderr
    assert "Traceback" not in done.stderr
    assert "listening" not in done.stdout and "router on" not in done.stdout
    if command == "serve":
        assert not (tmp_path / "x.db").exists()  # nothing started, nothing migrated
