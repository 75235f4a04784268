"""Fixtures for the simulator tests: real uvicorn servers on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import pytest

from larrylab.sim import BackgroundSim, SimConfig, run_in_background

SimServer = Callable[[SimConfig], AbstractContextManager[BackgroundSim]]


@pytest.fixture
def sim_server() -> SimServer:
    """`with sim_server(config) as sim:` serves `config` at `sim.url`."""
    return run_in_background


@pytest.fixture(scope="module")
def instant_sim() -> Iterator[BackgroundSim]:
    """A shared instant simulator (no latency, instant decode, seed 7, label 'test')."""
    with run_in_background(SimConfig(ttft_ms=0.0, tokens_per_s=0.0, seed=7, label="test")) as sim:
        yield sim
