"""Direct upstream calls against the simulator: keys, and a misconfigured key as a clear error."""

from __future__ import annotations

import asyncio

import pytest

from larrylab.localproc import LocalProcess
from larrylab.router._routing import Target
from larrylab.router._upstream import UpstreamError, complete, new_client, open_stream

BODY = {"messages": [{"role": "user", "content": "What problem am I solving?"}]}


def _target(url: str) -> Target:
    return Target(
        name="sim",
        api="openai",
        base_url=f"{url}/v1",
        upstream_model="larry-v1",
        api_key_env="LARRYLAB_TEST_UPSTREAM_KEY",
        litellm_model=None,
        connect_timeout_s=2,
        first_token_timeout_s=5,
        total_timeout_s=10,
    )


def test_a_key_read_with_its_newline_still_works(
    fast_sim: LocalProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LARRYLAB_TEST_UPSTREAM_KEY", "sk-test\n")

    async def go() -> None:
        async with new_client() as client:
            done = await complete(client, _target(fast_sim.url), BODY)
            assert done.data["choices"][0]["message"]["content"]
            stream = await open_stream(client, _target(fast_sim.url), {**BODY, "stream": True})
            batches = [stream.first] + [b async for b in stream.rest]
            await stream.aclose()
            assert sum(len(b) for b in batches) > 2

    asyncio.run(go())


def test_a_key_with_a_line_break_inside_is_a_config_error(
    fast_sim: LocalProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LARRYLAB_TEST_UPSTREAM_KEY", "sk-one\r\nX-Injected: 1")

    async def go() -> UpstreamError:
        async with new_client() as client:
            with pytest.raises(UpstreamError) as caught:
                await complete(client, _target(fast_sim.url), BODY)
            return caught.value

    err = asyncio.run(go())
    assert err.error_class == "config" and err.status == 502
    assert "misconfigured" in err.message and err.fallback_ok
