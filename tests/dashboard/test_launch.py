"""`larrylab dashboard`'s launcher: the streamlit command line and the database it is given."""

from __future__ import annotations

from typing import Any

import pytest

from larrylab.dashboard import launch
from larrylab.platform.db import DatabaseURLError


def test_command_runs_the_app_headless_on_loopback() -> None:
    cmd = launch.streamlit_command(port=8601)
    assert cmd[1:4] == ["-m", "streamlit", "run"]
    assert cmd[4] == str(launch.APP) and launch.APP.name == "app.py" and launch.APP.exists()
    opts = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert opts["--server.port"] == "8601"
    assert opts["--server.address"] == "127.0.0.1"
    assert opts["--server.headless"] == "true"
    assert opts["--browser.gatherUsageStats"] == "false"
    windowed = launch.streamlit_command(port=1, headless=False)
    assert dict(zip(windowed[5::2], windowed[6::2], strict=True))["--server.headless"] == "false"


def test_bad_port_and_bad_url_are_refused_with_a_sentence() -> None:
    with pytest.raises(ValueError, match="not a TCP port"):
        launch.streamlit_command(port=70000)
    with pytest.raises(DatabaseURLError, match="unsupported database"):
        launch.dashboard_env("mysql://localhost/x")


def test_run_dashboard_passes_the_database_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    class FakeProcess:
        def __init__(self, command: list[str], env: dict[str, str]) -> None:
            seen["command"], seen["env"] = command, env

        def wait(self) -> int:
            return 3

    monkeypatch.setattr(launch.subprocess, "Popen", FakeProcess)
    monkeypatch.setenv("LARRYLAB_DATABASE_URL", "sqlite:///elsewhere.db")
    code = launch.run_dashboard(port=8502, database_url="postgresql://u@db/larry")
    assert code == 3
    assert seen["env"]["LARRYLAB_DATABASE_URL"] == "postgresql+psycopg://u@db/larry"
    assert "8502" in seen["command"]
    launch.run_dashboard(port=8502, database_url=None)
    assert seen["env"]["LARRYLAB_DATABASE_URL"] == "sqlite:///elsewhere.db"  # left as it was
