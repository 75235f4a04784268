"""`larrylab dashboard`'s launcher: the streamlit command line and the database it is given."""

from __future__ import annotations

from typing import Any

import pytest

from larrylab.dashboard import launch
from larrylab.db._engine import DatabaseURLError


def _options(cmd: list[str]) -> dict[str, list[str]]:
    opts: dict[str, list[str]] = {}
    for flag, value in zip(cmd[5::2], cmd[6::2], strict=True):
        opts.setdefault(flag, []).append(value)
    return opts


def test_command_runs_the_guarded_app_headless_on_loopback() -> None:
    cmd = launch.streamlit_command(port=8601)
    assert cmd[1:4] == ["-m", "streamlit", "run"]
    assert cmd[4] == str(launch.SERVER) and launch.SERVER.name == "asgi.py"
    assert launch.SERVER.exists() and launch.APP.exists()
    opts = _options(cmd)
    assert opts["--server.port"] == ["8601"]
    assert opts["--server.address"] == ["127.0.0.1"]
    assert opts["--server.headless"] == ["true"]
    assert opts["--browser.gatherUsageStats"] == ["false"]
    assert opts["--server.enableCORS"] == opts["--server.enableXsrfProtection"] == ["true"]
    assert opts["--server.allowedHosts"] == ["localhost", "127.0.0.1", "::1"]
    assert "--server.corsAllowedOrigins" not in opts
    windowed = launch.streamlit_command(port=1, headless=False)
    assert _options(windowed)["--server.headless"] == ["false"]


def test_hosts_and_origins_beyond_loopback() -> None:
    opts = _options(
        launch.streamlit_command(
            port=8601, address="0.0.0.0", public_urls=["https://Dash.Team.example/"]
        )
    )
    assert opts["--server.allowedHosts"] == ["localhost", "127.0.0.1", "::1", "dash.team.example"]
    assert opts["--server.corsAllowedOrigins"] == ["https://dash.team.example"]
    lan = _options(launch.streamlit_command(port=8601, address="10.0.0.5"))
    assert lan["--server.allowedHosts"][-1] == "10.0.0.5"
    with pytest.raises(ValueError, match="not an http"):
        launch.streamlit_command(port=8601, public_urls=["dash.team.example"])


def test_binding_beyond_loopback_needs_the_admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    launch.check_bind("127.0.0.1", "")
    launch.check_bind("::1", "")
    launch.check_bind("0.0.0.0", "k3y")
    with pytest.raises(launch.BindRefused, match=r"refusing to bind 0\.0\.0\.0"):
        launch.check_bind("0.0.0.0", " ")
    monkeypatch.delenv("LARRYLAB_ADMIN_KEY", raising=False)
    with pytest.raises(launch.BindRefused):
        launch.run_dashboard(port=8502, database_url=None, address="192.168.1.2")


def test_exit_code() -> None:
    assert launch.exit_code(-15, stopped=True) == 0
    assert launch.exit_code(0, stopped=True) == 0
    assert launch.exit_code(-9, stopped=True) == 137
    assert launch.exit_code(3, stopped=False) == 3


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
        def __init__(self, command: list[str], env: dict[str, str], **kwargs: Any) -> None:
            seen["command"], seen["env"], seen["kwargs"] = command, env, kwargs

        def wait(self, timeout: float | None = None) -> int:
            return 3

        def poll(self) -> int:
            return 3

    monkeypatch.setattr(launch.subprocess, "Popen", FakeProcess)
    monkeypatch.setenv("LARRYLAB_DATABASE_URL", "sqlite:///elsewhere.db")
    code = launch.run_dashboard(port=8502, database_url="postgresql://u@db/larry")
    assert code == 3
    assert seen["env"]["LARRYLAB_DATABASE_URL"] == "postgresql+psycopg://u@db/larry"
    assert "8502" in seen["command"]
    assert seen["kwargs"]["start_new_session"]  # a terminal's Ctrl-C reaches it once, from us
    launch.run_dashboard(port=8502, database_url=None)
    assert seen["env"]["LARRYLAB_DATABASE_URL"] == "sqlite:///elsewhere.db"  # left as it was
