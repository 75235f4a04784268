"""Running the simulator in a background thread, for tests, benchmarks and the demo."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from larrylab.sim.app import build_server
from larrylab.sim.config import SimConfig

_START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class BackgroundSim:
    """A simulator served by uvicorn in a daemon thread.

    Attributes:
        url: Base URL, e.g. `http://127.0.0.1:41234` (OpenAI clients add `/v1`).
        server: The uvicorn server, for its state (`server_state.tasks`, ...).
        thread: The thread running it.
    """

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut the server down (hanging requests end at once) and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=timeout_s)


@contextmanager
def run_in_background(
    config: SimConfig, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[BackgroundSim]:
    """Serve `config` in a background thread for the duration of the block (port 0: any free)."""
    server = build_server(config, host=host, port=port)
    thread = threading.Thread(target=server.run, name="larrylab-sim", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"The simulator did not start on {host}:{port}.")
        time.sleep(0.005)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    running = BackgroundSim(f"http://{host}:{bound_port}", server, thread)
    try:
        yield running
    finally:
        running.stop()
