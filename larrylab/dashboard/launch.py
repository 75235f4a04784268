"""Start the dashboard: `streamlit run asgi.py` in a child process, the database URL passed in
the environment (`LARRYLAB_DATABASE_URL`), as `larrylab dashboard` does.

The child gets Streamlit's protections switched on explicitly (CORS and XSRF, the allowed hosts
and origins that `guard` enforces) and stops with its launcher: SIGTERM, SIGINT and SIGHUP are
passed on to it and waited for.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from larrylab.config import is_loopback
from larrylab.dashboard.guard import LOOPBACK_NAMES
from larrylab.db import normalize_url

HERE = Path(__file__).resolve().parent
APP = HERE / "app.py"
SERVER = HERE / "asgi.py"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1


class BindRefused(ValueError):
    """An address beyond loopback without an admin key."""


def check_bind(address: str, admin_key: str) -> None:
    """Raise BindRefused for an address beyond loopback when no admin key is set."""
    if not is_loopback(address) and not admin_key.strip():
        raise BindRefused(
            f"refusing to bind {address}: set LARRYLAB_ADMIN_KEY to serve the dashboard "
            "beyond loopback (its Promote and Rollback then need the key)"
        )


def public_origin(url: str) -> str:
    """The origin (scheme://host[:port]) of a URL users open the dashboard at."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL such as https://dashboard.example")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def allowed_hosts(address: str, public_urls: Sequence[str] = ()) -> list[str]:
    """The host names the dashboard answers to: loopback names, the bound address unless it
    is a wildcard, and the hosts of `public_urls`."""
    names = list(LOOPBACK_NAMES)
    try:
        wildcard = ipaddress.ip_address(address.strip("[]")).is_unspecified
    except ValueError:
        wildcard = False
    extra = [] if wildcard else [address.strip("[]").lower()]
    extra += [urlsplit(public_origin(u)).hostname or "" for u in public_urls]
    return names + [n for n in dict.fromkeys(extra) if n and n not in names]


def streamlit_command(
    *,
    port: int,
    address: str = "127.0.0.1",
    headless: bool = True,
    public_urls: Sequence[str] = (),
) -> list[str]:
    """The `streamlit run` command line for the dashboard."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is not a TCP port (1-65535)")
    hosts = [f for h in allowed_hosts(address, public_urls) for f in ("--server.allowedHosts", h)]
    origins = [f for u in public_urls for f in ("--server.corsAllowedOrigins", public_origin(u))]
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(SERVER),
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
        "--server.enableCORS",
        "true",
        "--server.enableXsrfProtection",
        "true",
        *hosts,
        *origins,
    ]


def dashboard_env(database_url: str | None) -> dict[str, str]:
    """This process's environment with the dashboard's database URL set (checked first)."""
    env = dict(os.environ)
    if database_url:
        env["LARRYLAB_DATABASE_URL"] = normalize_url(database_url)
    return env


def _die_with_parent() -> None:
    """In the child, before exec (Linux): get SIGTERM when the launcher dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> int:
    """Terminate `proc` if it still runs, kill it after `grace_s`; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def _forwarder(
    proc: subprocess.Popen[bytes], seen: list[int]
) -> Callable[[int, FrameType | None], None]:
    """A signal handler that records the signal in `seen` and asks `proc` to stop (SIGTERM,
    whichever signal came: streamlit's shutdown is the same), killing it on the next one."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        seen.append(signum)
        if proc.poll() is not None:
            return
        if len(seen) == 1:
            proc.terminate()
        else:
            proc.kill()

    return forward


@contextmanager
def forwarding_signals(proc: subprocess.Popen[bytes]) -> Iterator[list[int]]:
    """Pass SIGTERM, SIGINT and SIGHUP on to `proc` while the block runs (main thread only),
    yielding the signals received; on leaving, stop `proc` if it still runs."""
    seen: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        handler = _forwarder(proc, seen)
        previous = {s: signal.signal(s, handler) for s in FORWARDED}
    try:
        yield seen
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        stop(proc)


def run_dashboard(
    *,
    port: int,
    database_url: str | None,
    headless: bool = True,
    address: str = "127.0.0.1",
    public_urls: Sequence[str] = (),
) -> int:
    """Run the dashboard until it stops (or this process is signalled); streamlit's exit code.

    Beyond loopback it needs `LARRYLAB_ADMIN_KEY` (BindRefused otherwise); its Promote and
    Rollback then need the key, entered in the sidebar (see `auth`).
    """
    env = dashboard_env(database_url)
    check_bind(address, env.get("LARRYLAB_ADMIN_KEY", ""))
    command = streamlit_command(
        port=port, address=address, headless=headless, public_urls=public_urls
    )
    proc = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    with forwarding_signals(proc) as signals:
        code = proc.wait()
    return exit_code(code, stopped=bool(signals))


def exit_code(code: int, *, stopped: bool) -> int:
    """The launcher's exit code for the child's `code`: 0 when the child stopped as asked,
    128 + N when signal N ended it otherwise (as a shell reports it)."""
    if stopped and code in (0, -signal.SIGTERM):
        return 0
    return 128 - code if code < 0 else code
