"""Timing and fault injection against real uvicorn servers: pacing, hangs, drops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx
import openai
import orjson
import pytest

from larrylab.sim import BackgroundSim, SimConfig

USER: list[Any] = [{"role": "user", "content": "Challenge my assumption"}]

SimServer = Callable[[SimConfig], AbstractContextManager[BackgroundSim]]


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": USER, **extra}


def test_ttft_and_decode_pacing(sim_server: SimServer) -> None:
    config = SimConfig(ttft_ms=100, latency_sigma=0, tokens_per_s=50, seed=1)
    with sim_server(config) as sim:
        started = time.monotonic()
        first_content = None
        url = f"{sim.url}/v1/chat/completions"
        with httpx.stream("POST", url, json=body(stream=True, max_tokens=6)) as response:
            for line in response.iter_lines():
                if first_content is None and '"content":"' in line and '"content":""' not in line:
                    first_content = time.monotonic() - started
        total = time.monotonic() - started
        assert first_content is not None and first_content >= 0.095
        assert total >= 0.1 + 5 / 50 - 0.01
        started = time.monotonic()
        httpx.post(url, json=body(max_tokens=6), timeout=10).raise_for_status()
        assert time.monotonic() - started >= 0.1 + 5 / 50 - 0.01


def test_latency_delays_the_headers(sim_server: SimServer) -> None:
    config = SimConfig(latency_ms=150, latency_sigma=0, ttft_ms=0, tokens_per_s=0)
    with sim_server(config) as sim:
        started = time.monotonic()
        url = f"{sim.url}/api/chat"
        with httpx.stream("POST", url, json=body()) as response:
            assert time.monotonic() - started >= 0.145
            assert response.status_code == 200


def test_hang_delays_then_answers(sim_server: SimServer) -> None:
    config = SimConfig(hang_rate=1.0, hang_s=0.3, ttft_ms=0, tokens_per_s=0)
    with sim_server(config) as sim:
        started = time.monotonic()
        response = httpx.post(f"{sim.url}/v1/chat/completions", json=body(), timeout=10)
        assert time.monotonic() - started >= 0.29
        assert response.status_code == 200


def test_hang_ends_when_the_client_leaves(sim_server: SimServer) -> None:
    config = SimConfig(hang_rate=1.0, hang_s=60, ttft_ms=0, tokens_per_s=0)
    with sim_server(config) as sim:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{sim.url}/v1/chat/completions", json=body(), timeout=0.2)
        deadline = time.monotonic() + 3
        while sim.server.server_state.tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not sim.server.server_state.tasks


def test_hang_ends_when_the_server_stops(sim_server: SimServer) -> None:
    config = SimConfig(hang_rate=1.0, hang_s=60, ttft_ms=0, tokens_per_s=0)
    statuses: list[int] = []
    with sim_server(config) as sim:

        def call() -> None:
            url = f"{sim.url}/api/chat"
            statuses.append(httpx.post(url, json=body(), timeout=30).status_code)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.2)
        started = time.monotonic()
        sim.stop()
        caller.join(timeout=5)
        assert time.monotonic() - started < 2
        assert statuses == [503]
        assert not sim.thread.is_alive()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
def test_drop_cuts_the_stream(sim_server: SimServer, path: str) -> None:
    config = SimConfig(drop_rate=1.0, ttft_ms=0, tokens_per_s=0, seed=3)
    with sim_server(config) as sim:
        received: list[str] = []
        request = httpx.stream("POST", sim.url + path, json=body(stream=True))
        with pytest.raises(httpx.RemoteProtocolError), request as response:
            assert response.status_code == 200
            received.extend(response.iter_lines())
        lines = [line for line in received if line]
        assert lines, "some chunks arrive before the drop"
        assert "data: [DONE]" not in lines
        assert not any(orjson.loads(line.removeprefix("data: ")).get("done") for line in lines)


def test_drop_surfaces_in_the_openai_client(sim_server: SimServer) -> None:
    config = SimConfig(drop_rate=1.0, ttft_ms=0, tokens_per_s=0)
    with sim_server(config) as sim:
        api = openai.OpenAI(base_url=f"{sim.url}/v1", api_key="sim", max_retries=0)
        with pytest.raises(openai.APIConnectionError):
            for _ in api.chat.completions.create(model="m", messages=USER, stream=True):
                pass


def test_drop_spares_non_streaming_replies(sim_server: SimServer) -> None:
    config = SimConfig(drop_rate=1.0, ttft_ms=0, tokens_per_s=0)
    with sim_server(config) as sim:
        response = httpx.post(f"{sim.url}/v1/chat/completions", json=body(), timeout=10)
        assert response.status_code == 200
        assert response.json()["choices"][0]["finish_reason"] == "stop"
