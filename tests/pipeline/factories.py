"""Helpers of the data-pipeline tests: a store with rated threads, a sim that counts requests,
and a scripted completion function standing in for litellm."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from larrylab.db._engine import make_engine
from larrylab.experiments._feedback import attribute_request, upsert_feedback
from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.llm import LLMOptions
from larrylab.requestlog import RequestRecord
from larrylab.sim import SimConfig, create_app
from tests.conftest import write_records

SYSTEM = {"role": "system", "content": "You are Larry, a Socratic PWS coach."}


def request(
    rid: str,
    thread: str,
    prompt: list[dict[str, Any]],
    reply: dict[str, Any],
    at: datetime,
    *,
    model: str = "gemini-flash",
    status: str = "ok",
) -> RequestRecord:
    """A logged request as the router would write it."""
    return RequestRecord(
        id=rid,
        thread_id=thread,
        unit_source="user",
        route="larry",
        experiment=None,
        arm=None,
        model=model,
        upstream_model="gemini-2.5-flash",
        stream=False,
        status=status,
        http_status=200,
        error_class=None,
        error_message=None,
        fallback_from=None,
        latency_ms=10.0,
        ttft_ms=5.0,
        upstream_ms=None,
        overhead_ms=None,
        prompt_tokens=10,
        completion_tokens=10,
        protocol="openai",
        ineligible=None,
        stripped=False,
        created_at=at,
        finished_at=at,
        prompt=prompt,
        reply=reply,
    )


@dataclass
class ThreadSpec:
    """A thread of `turns` user/assistant exchanges and the ratings of its last reply."""

    id: str
    users: Sequence[str]
    replies: Sequence[str]
    scores: Sequence[int] = (5,)
    extra_requests: list[RequestRecord] = field(default_factory=list)


def seed_store(url: str, threads: Sequence[ThreadSpec]) -> None:
    """Log the threads' requests (each turn's prompt is the whole history) and rate them."""
    start = datetime(2025, 6, 1, tzinfo=UTC)
    records: list[RequestRecord] = []
    last_ids: dict[str, str] = {}
    for n, spec in enumerate(threads):
        messages: list[dict[str, Any]] = [SYSTEM]
        for i, (user, reply) in enumerate(zip(spec.users, spec.replies, strict=True)):
            messages.append({"role": "user", "content": user})
            rid = f"{spec.id}-r{i}"
            at = start + timedelta(minutes=n, seconds=i)
            records.append(
                request(rid, spec.id, list(messages), {"role": "assistant", "content": reply}, at)
            )
            messages.append({"role": "assistant", "content": reply})
            last_ids[spec.id] = rid
        records.extend(spec.extra_requests)
    write_records(url, records)
    engine = make_engine(url)
    for spec in threads:
        for k, score in enumerate(spec.scores):
            rid = last_ids[spec.id]
            target = attribute_request(engine, rid)
            assert target is not None
            upsert_feedback(
                engine, target=target, request_id=rid, score=score, comment=None, source=f"s{k}"
            )
    engine.dispose()


def simple_threads(n: int, *, prefix: str = "t") -> list[ThreadSpec]:
    """`n` distinct two-turn threads rated 5 (distinct enough not to be near-duplicates)."""
    topics = ["nurses", "farmers", "teachers", "drivers", "bakers", "pilots", "miners", "chefs"]
    out = []
    for i in range(n):
        topic = (
            f"{topics[i % len(topics)]} in region {i} who {'work nights' if i % 2 else 'commute'}"
        )
        out.append(
            ThreadSpec(
                id=f"{prefix}{i:03d}",
                users=[
                    f"I want to build an app for {topic}. Number {i * 7919} matters here.",
                    f"Case {i}: we interviewed {i + 3} of them about {topic}; what next?",
                ],
                replies=[
                    f"Before building anything for {topic}, who struggles most, and when? ({i})",
                    f"Good start on {topic}. What surprised you in those {i + 3} interviews?",
                ],
            )
        )
    return out


class CountingApp:
    """An ASGI wrapper counting chat completion requests that reach the simulator."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions":
            with self._lock:
                self.requests += 1
        await self.app(scope, receive, send)


@contextmanager
def counting_sim(config: SimConfig) -> Iterator[tuple[str, CountingApp]]:
    """A simulator in a background thread; yields its base URL and the request counter."""
    app = CountingApp(create_app(config))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the simulator did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(10)


def sim_context(out: Path, sim_url: str, **llm: Any) -> PipelineContext:
    """A pipeline context whose model is the simulator (OpenAI protocol, dummy key)."""
    os.environ.setdefault("SIM_KEY", "simulated")
    options = LLMOptions(
        model="openai/gemini-2.5-flash", api_base=f"{sim_url}/v1", api_key_env="SIM_KEY", **llm
    )
    return PipelineContext(out=out, llm=options, progress=False)


def reply(content: str | None) -> Any:
    """A completion response shaped like litellm's, with `content` as the message."""
    message = SimpleNamespace(content=content)
    usage = SimpleNamespace(prompt_tokens=3, completion_tokens=4)
    return SimpleNamespace(choices=[SimpleNamespace(message=message)], usage=usage)


class ScriptedCompleter:
    """A litellm-compatible `acompletion` answering from a script (str contents or errors)."""

    def __init__(self, script: Sequence[str | BaseException | None]) -> None:
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        item = self.script[min(len(self.calls), len(self.script)) - 1]
        if isinstance(item, BaseException):
            raise item
        return reply(item)
