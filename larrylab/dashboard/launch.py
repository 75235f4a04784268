"""Start the dashboard: `streamlit run app.py` in a child process, the database URL passed in
the environment (`LARRYLAB_DATABASE_URL`), as `larrylab dashboard` does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from larrylab.platform.db import normalize_url

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_command(*, port: int, address: str = "127.0.0.1", headless: bool = True) -> list[str]:
    """The `streamlit run` command line for the dashboard."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not a TCP port (1-65535)")
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true" if headless else "false",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
    ]


def dashboard_env(database_url: str | None) -> dict[str, str]:
    """This process's environment with the dashboard's database URL set (checked first)."""
    env = dict(os.environ)
    if database_url:
        env["LARRYLAB_DATABASE_URL"] = normalize_url(database_url)
    return env


def run_dashboard(
    *, port: int, database_url: str | None, headless: bool = True, address: str = "127.0.0.1"
) -> int:
    """Run the dashboard until it stops (Ctrl-C); returns streamlit's exit code.

    The dashboard has no login of its own and its buttons change the registry: keep it on
    loopback, or put an authenticating proxy in front of it.
    """
    command = streamlit_command(port=port, address=address, headless=headless)
    proc = subprocess.Popen(command, env=dashboard_env(database_url))
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the child got the same Ctrl-C and shuts down
        return proc.wait()
