"""A real `larrylab dashboard` process on loopback: its websocket refuses foreign origins and
hosts (DNS rebinding), and SIGTERM or SIGINT stops it and its streamlit child, freeing the port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.dashboard.running import Dashboard, start_dashboard, stop_dashboard
from tests.dashboard.seed import Seeded

pytestmark = pytest.mark.e2e
STREAM = "/_stcore/stream"


@pytest.fixture(scope="module")
def dashboard(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """One dashboard for the origin tests of this module."""
    dash = start_dashboard(seeded.url, tmp_path_factory.mktemp("dashboard"))
    try:
        yield dash
    finally:
        stop_dashboard(dash)


def _handshake(port: int, *, host: str, origin: str | None) -> int:
    """Open `/_stcore/stream` on 127.0.0.1:port with this Host and Origin; the HTTP status."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        with connect(
            f"ws://{host}{STREAM}",
            sock=sock,
            origin=Origin(origin) if origin is not None else None,
            proxy=None,
            open_timeout=10,
        ):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def test_websocket_accepts_its_own_origin(dashboard: Dashboard) -> None:
    own = f"127.0.0.1:{dashboard.port}"
    assert _handshake(dashboard.port, host=own, origin=f"http://{own}") == 101
    local = f"localhost:{dashboard.port}"
    assert _handshake(dashboard.port, host=local, origin=f"http://{local}") == 101
    assert _handshake(dashboard.port, host=own, origin=None) == 101  # not a browser


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://localhost:1",  # another web app on this machine is another origin
        "https://127.0.0.1:{port}",  # same host and port, other scheme
        "null",
    ],
)
def test_websocket_refuses_a_foreign_origin(dashboard: Dashboard, origin: str) -> None:
    own = f"127.0.0.1:{dashboard.port}"
    assert _handshake(dashboard.port, host=own, origin=origin.format(port=dashboard.port)) == 403


def test_websocket_and_pages_refuse_a_foreign_host(dashboard: Dashboard) -> None:
    """DNS rebinding: a page on evil.example, rebound to 127.0.0.1, is same-origin with itself."""
    rebound = f"evil.example:{dashboard.port}"
    assert _handshake(dashboard.port, host=rebound, origin=f"http://{rebound}") == 403
    assert _handshake(dashboard.port, host=rebound, origin=None) == 403
    page = httpx.get(f"{dashboard.base}/", headers={"Host": rebound}, timeout=10)
    assert page.status_code == 403
    assert httpx.get(f"{dashboard.base}/", timeout=10).status_code == 200


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_dashboard_and_its_streamlit_child(
    seeded: Seeded, tmp_path: Path, signum: signal.Signals
) -> None:
    dash = start_dashboard(seeded.url, tmp_path)
    try:
        children = psutil.Process(dash.proc.pid).children(recursive=True)
        assert children, "larrylab dashboard runs streamlit in a child process"
        own = f"http://127.0.0.1:{dash.port}"
        with connect(f"ws://127.0.0.1:{dash.port}{STREAM}", origin=Origin(own), proxy=None):
            os.kill(dash.proc.pid, signum)  # the parent only, as a service manager does
            try:
                code = dash.proc.wait(15)
            except subprocess.TimeoutExpired:
                pytest.fail(f"larrylab dashboard is still running 15 s after {signum.name}")
        _, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"streamlit child left running after {signum.name}: {alive}"
        assert _port_is_free(dash.port)
        assert code == 0, dash.log.read_text(errors="replace")  # stopped as asked
    finally:
        stop_dashboard(dash)


def test_a_non_loopback_address_needs_the_admin_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LARRYLAB_ADMIN_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "larrylab", "dashboard", "--host", "0.0.0.0", "--port", "1"],
        env={**env, "LARRYLAB_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "refusing to bind 0.0.0.0: set LARRYLAB_ADMIN_KEY" in done.stdout + done.stderr
