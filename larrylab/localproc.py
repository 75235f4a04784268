"""Start `larrylab sim` and `larrylab serve` as child processes on loopback.

Used by `larrylab demo`, the end-to-end tests and the benchmarks: real processes, real ports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalProcess:
    """A larrylab child process listening on a loopback port."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:8400."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """What the process has printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the process and wait for it to exit; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


def start(
    name: str,
    args: Sequence[str],
    *,
    port: int,
    log_dir: Path,
    env: dict[str, str] | None = None,
    health_path: str = "/healthz",
    timeout: float = 60.0,
    cwd: Path | None = None,
) -> LocalProcess:
    """Run `python -m larrylab ARGS` and wait until `health_path` answers 200.

    `cwd` is the child's working folder (default: the caller's). `python -m` imports from its
    working folder before `PYTHONPATH`, so a child meant to run another checkout's code
    (`PYTHONPATH=<checkout>` in `env`) must not start inside this one."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "larrylab", *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            cwd=cwd,
        )
    lp = LocalProcess(name, port, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{lp.log()}")
        try:
            if httpx.get(f"{lp.url}{health_path}", timeout=1.0).status_code == 200:
                return lp
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    lp.stop(signal.SIGKILL)
    raise RuntimeError(f"{name} did not become healthy within {timeout:.0f}s:\n{lp.log()}")


def start_sim(
    *, log_dir: Path, label: str, extra: Sequence[str] = (), port: int | None = None
) -> LocalProcess:
    """Start a simulated upstream (clearly labelled) on a free port."""
    port = port or free_port()
    args = ["sim", "--port", str(port), "--label", label, *extra]
    return start(f"sim-{label}", args, port=port, log_dir=log_dir)


def start_router(
    *,
    log_dir: Path,
    database_url: str,
    config: Path | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    extra: Sequence[str] = (),
    cwd: Path | None = None,
) -> LocalProcess:
    """Start `larrylab serve` on a free port against `database_url` (`cwd`: as in `start`)."""
    port = port or free_port()
    args = ["serve", "--port", str(port), "--database-url", database_url, *extra]
    if config is not None:
        args += ["--config", str(config)]
    return start("router", args, port=port, log_dir=log_dir, env=env, cwd=cwd)
