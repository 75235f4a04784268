"""Simulated workshop traffic, sent to the router exactly as Larry sends it (official `openai`
client, streaming, one `user` per thread), with simulated learners rating replies."""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from larrylab.demo.learners import OPENERS, LearnerTaste, thread_script

SYSTEM_PROMPT = (
    "You are Larry, a Socratic coach teaching the Problems Worth Solving methodology. "
    "Ask before you tell; never jump to solutions."
)


@dataclass
class TrafficResult:
    """What the simulated learners sent and saw."""

    requests: int = 0
    errors: int = 0
    ratings: int = 0
    arms: dict[str, int] = field(default_factory=dict)


def _one_thread(
    router_url: str, route: str, index: int, seed: int, taste: LearnerTaste, rate_share: float
) -> TrafficResult:
    rng = random.Random(seed * 100_003 + index)
    category = list(OPENERS)[index % len(OPENERS)]
    thread = f"demo-{category}-{index}"
    client = openai.OpenAI(base_url=f"{router_url}/v1", api_key="demo", max_retries=0, timeout=60)
    http = httpx.Client(base_url=router_url, timeout=30)
    out = TrafficResult()
    messages: list[Any] = [{"role": "system", "content": SYSTEM_PROMPT}]
    try:
        for text in thread_script(category, rng.randint(2, 4), rng):
            messages.append({"role": "user", "content": text})
            try:
                with client.chat.completions.with_streaming_response.create(
                    model=route,
                    messages=messages,
                    user=thread,
                    stream=True,
                ) as resp:
                    arm = resp.headers.get("x-larrylab-arm", "?")
                    request_id = resp.headers.get("x-larrylab-request-id", "")
                    reply = "".join(
                        c.choices[0].delta.content or "" for c in resp.parse() if c.choices
                    )
            except openai.APIError:
                out.errors += 1
                break
            out.requests += 1
            out.arms[arm] = out.arms.get(arm, 0) + 1
            messages.append({"role": "assistant", "content": reply})
            if rng.random() < rate_share:
                score = taste.rate(arm, rng)
                http.post(
                    "/v1/feedback",
                    json={"request_id": request_id, "score": score, "source": "simulated-learner"},
                ).raise_for_status()
                out.ratings += 1
    finally:
        client.close()
        http.close()
    return out


def send_workshop_traffic(
    router_url: str,
    *,
    route: str,
    threads: int,
    seed: int,
    taste: LearnerTaste,
    concurrency: int = 8,
    rate_share: float = 0.7,
    on_thread_done: Callable[[], None] | None = None,
) -> TrafficResult:
    """Run `threads` simulated workshop threads across the seven PWS categories."""
    total = TrafficResult()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [
            pool.submit(_one_thread, router_url, route, i, seed, taste, rate_share)
            for i in range(threads)
        ]
        for fut in as_completed(futures):
            part = fut.result()
            total.requests += part.requests
            total.errors += part.errors
            total.ratings += part.ratings
            for arm, n in part.arms.items():
                total.arms[arm] = total.arms.get(arm, 0) + n
            if on_thread_done is not None:
                on_thread_done()
    return total
