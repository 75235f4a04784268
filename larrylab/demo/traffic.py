"""Simulated workshop traffic, sent to the router exactly as Larry sends it (the google-genai
SDK, `generate_content_stream` with a system instruction and the conversation so far, no
thread id: the router keeps a conversation on one arm by its opening), with simulated learners
rating replies as Larry's users do (a thumb, sometimes 1-5 stars with categories)."""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import httpx
from google import genai
from google.genai import errors, types

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


CATEGORIES = ("accuracy", "relevance", "clarity", "depth", "actionable")


def _rating(score: int, rng: random.Random) -> dict[str, Any]:
    """A rating shaped like Larry's: a thumb, and half the time stars with categories."""
    rating: dict[str, Any] = {"thumb": "up" if score >= 4 else "down"}
    if rng.random() < 0.5:
        rating["score"] = score
        rating["categories"] = {c: rng.random() < score / 5 for c in CATEGORIES}
    return rating


def _one_thread(
    router_url: str, route: str, index: int, seed: int, taste: LearnerTaste, rate_share: float
) -> TrafficResult:
    rng = random.Random(seed * 100_003 + index)
    category = list(OPENERS)[index % len(OPENERS)]
    options = types.HttpOptions(base_url=router_url, timeout=60_000)
    client = genai.Client(api_key="demo", http_options=options)
    config = types.GenerateContentConfig(system_instruction=SYSTEM_PROMPT)
    http = httpx.Client(base_url=router_url, timeout=30)
    out = TrafficResult()
    contents: list[types.Content] = []
    try:
        for turn, text in enumerate(thread_script(category, rng.randint(2, 4), rng)):
            if turn == 0:  # every learner opens in their own words
                text = f"{text} (I'm learner {index} of this simulated workshop.)"
            contents.append(types.Content(role="user", parts=[types.Part(text=text)]))
            try:
                chunks = list(
                    client.models.generate_content_stream(
                        model=route, contents=contents, config=config
                    )
                )
            except errors.APIError:
                out.errors += 1
                break
            first = chunks[0] if chunks else None
            response = first.sdk_http_response if first else None
            arm = (response.headers or {}).get("x-larrylab-arm", "?") if response else "?"
            reply = "".join(c.text or "" for c in chunks)
            out.requests += 1
            out.arms[arm] = out.arms.get(arm, 0) + 1
            contents.append(types.Content(role="model", parts=[types.Part(text=reply)]))
            if first is not None and rng.random() < rate_share:
                rating = _rating(taste.rate(arm, rng), rng)
                http.post(
                    "/v1/feedback",
                    json={
                        "response_id": first.response_id,
                        "source": "simulated-learner",
                        **rating,
                    },
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
