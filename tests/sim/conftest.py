"""Fixtures for the simulator tests: real uvicorn servers on free loopback ports."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import pytest
import uvicorn

from larrylab.sim import SimConfig
from larrylab.sim.app import build_server

FAST = SimConfig(ttft_ms=0.0, tokens_per_s=0.0, seed=7, label="test")


@dataclass(frozen=True)
class RunningSim:
    """A simulator served by uvicorn in a background thread."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextmanager
def run_sim(config: SimConfig) -> Iterator[RunningSim]:
    """Serve `config` on a free loopback port for the duration of the block."""
    server = build_server(config, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the simulator did not start")
        time.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    running = RunningSim(f"http://127.0.0.1:{port}", server, thread)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def sim_server() -> Callable[[SimConfig], AbstractContextManager[RunningSim]]:
    """`with sim_server(config) as sim:` serves `config` at `sim.url`."""
    return run_sim


@pytest.fixture(scope="module")
def fast_sim() -> Iterator[RunningSim]:
    """A shared instant simulator (no latency, instant decode, seed 7, label 'test')."""
    with run_sim(FAST) as running:
        yield running
