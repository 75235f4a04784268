"""A real `larrylab dashboard` process for the tests: started in its own process group on a
free loopback port, waited for until it serves, and killed (group and all) afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from larrylab.localproc import free_port


@dataclass
class Dashboard:
    """A running `larrylab dashboard`, its own process group."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        """Its own origin, http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"


def wait_until_serving(dash: Dashboard, timeout: float = 60.0) -> None:
    """Wait until the dashboard answers its health check (fails the test with its log)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{dash.base}/_stcore/health", timeout=2).text == "ok":
                return
        except httpx.HTTPError:
            pass
        if dash.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the dashboard did not start:\n{dash.log.read_text(errors='replace')}")
        time.sleep(0.3)


def start_dashboard(url: str, tmp: Path, env: dict[str, str] | None = None) -> Dashboard:
    """`larrylab dashboard --port P` on `url`'s store, serving (its log under `tmp`)."""
    port = free_port()
    log = tmp / f"dashboard-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "larrylab", "dashboard", "--port", str(port)],
            env={**os.environ, "LARRYLAB_DATABASE_URL": url, **(env or {})},
            stdout=out,
            stderr=out,
            start_new_session=True,  # the test can always clean up the whole group
        )
    dash = Dashboard(proc, port, log)
    wait_until_serving(dash)
    return dash


def stop_dashboard(dash: Dashboard) -> None:
    """Kill the dashboard's whole process group (a no-op once it has stopped)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(dash.proc.pid, signal.SIGKILL)
    dash.proc.wait(10)
