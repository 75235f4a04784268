"""End to end: real `larrylab sim` and `larrylab serve` processes, driven by the official
`openai` client as Larry would drive them, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text

from larrylab.db._engine import make_engine
from larrylab.localproc import LocalProcess, start_router
from larrylab.router._assignment import ArmRanges, assign
from tests.conftest import write_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def router(
    database_url: str, tmp_path: Path, fast_sim: LocalProcess, broken_sim: LocalProcess
) -> Iterator[LocalProcess]:
    config = write_config(
        tmp_path / "larrylab.yaml",
        control_url=fast_sim.url,
        candidate_url=fast_sim.url,
        candidate_weight=30,
    )
    with config.open("a") as fh:
        fh.write(
            "  - {name: broken-canary, route: canary, arms: [{model: gemini-flash, weight: 50, control: true}, "
            "{model: larry-broken, weight: 50}]}\n"
        )
    text_ = config.read_text().replace(
        "routes:",
        f"  larry-broken: {{api: openai, base_url: {broken_sim.url}/v1, model: larry-v1}}\nroutes:",
    )
    config.write_text(text_)
    if database_url.startswith("postgresql"):
        from larrylab.db._engine import upgrade

        upgrade(database_url)
    proc = start_router(log_dir=tmp_path, database_url=database_url, config=config)
    yield proc
    proc.stop()


def _client(router: LocalProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)


def _ask(
    client: openai.OpenAI, route: str, thread: str, messages: list[dict[str, Any]], stream: bool
) -> tuple[str, dict[str, str], str]:
    """One turn; returns (reply text, response headers, completion id)."""
    if not stream:
        raw = client.chat.completions.with_raw_response.create(
            model=route, messages=messages, user=thread
        )  # type: ignore[arg-type]
        completion = raw.parse()
        return completion.choices[0].message.content or "", dict(raw.headers), completion.id
    with client.chat.completions.with_streaming_response.create(
        model=route,
        messages=messages,
        user=thread,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    ) as resp:
        headers = dict(resp.headers)
        parts, ids, usage = [], set(), None
        for chunk in resp.parse():
            ids.add(chunk.id)
            usage = chunk.usage or usage
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
    assert len(ids) == 1 and usage is not None and usage.completion_tokens > 0
    return "".join(parts), headers, ids.pop()


def test_router_serves_larry_traffic_end_to_end(router: LocalProcess, database_url: str) -> None:
    client = _client(router)
    ranges = ArmRanges.from_weights(["gemini-flash", "larry-v1"], [70, 30])
    served: Counter[str] = Counter()
    threads_per_arm: dict[str, set[str]] = {"gemini-flash": set(), "larry-v1": set()}
    request_ids: list[str] = []
    n_threads, turns = 60, 3
    for t in range(n_threads):
        thread = f"workshop-{t}"
        expected_arm = assign("larry-v1-vs-gemini", thread, ranges)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "You are Larry, a PWS coach."}
        ]
        for turn in range(turns):
            messages.append(
                {"role": "user", "content": f"Help me clarify problem {t}, turn {turn}."}
            )
            reply, headers, cid = _ask(
                client, "larry", thread, messages, stream=(t + turn) % 2 == 0
            )
            assert reply
            # Sticky, and the same assignment GrowthBook's hash gives anywhere else.
            assert headers["x-larrylab-arm"] == expected_arm
            assert headers["x-larrylab-experiment"] == "larry-v1-vs-gemini"
            assert headers["x-larrylab-request-id"] == cid
            served[expected_arm] += 1
            threads_per_arm[expected_arm].add(thread)
            request_ids.append(cid)
            messages.append({"role": "assistant", "content": reply})
    # The split follows the weights (about 30% of threads on the candidate).
    assert 0.15 < len(threads_per_arm["larry-v1"]) / n_threads < 0.45

    # Feedback on every request; one learner changes their mind (an update, not a new row).
    http = httpx.Client(base_url=router.url, timeout=10)
    scores: dict[str, int] = {}
    for i, rid in enumerate(request_ids):
        scores[rid] = 1 + i % 5
        r = http.post(
            "/v1/feedback", json={"request_id": rid, "score": scores[rid], "comment": "thanks"}
        )
        assert r.status_code == 200, r.text
    r = http.post("/v1/feedback", json={"request_id": request_ids[0], "score": 5})
    assert r.status_code == 200 and r.json()["updated"] is True
    scores[request_ids[0]] = 5

    summary = http.get("/admin/experiments/larry-v1-vs-gemini/report").json()
    arms = {a["arm"]: a for a in summary["arms"]}
    for arm in ("gemini-flash", "larry-v1"):
        assert arms[arm]["requests"] == served[arm]
        assert arms[arm]["threads"] == len(threads_per_arm[arm])
        assert arms[arm]["errors"] == 0 and arms[arm]["fallbacks"] == 0
        assert arms[arm]["feedback_count"] == served[arm]
        assert arms[arm]["latency_ms"]["p50"] > 0 and arms[arm]["ttft_ms"]["p95"] > 0
    all_scores = list(scores.values())
    mean_all = (
        arms["gemini-flash"]["mean_score"] * served["gemini-flash"]
        + arms["larry-v1"]["mean_score"] * served["larry-v1"]
    ) / len(all_scores)
    assert mean_all == pytest.approx(sum(all_scores) / len(all_scores))

    # Fallback: threads assigned to the failing candidate are served by the control, never an error.
    canary = ArmRanges.from_weights(["gemini-flash", "larry-broken"], [50, 50])
    fallbacks = 0
    for t in range(20):
        thread = f"canary-{t}"
        reply, headers, _ = _ask(
            client,
            "canary",
            thread,
            [{"role": "user", "content": "Is this a problem?"}],
            stream=t % 2 == 0,
        )
        assert reply and headers["x-larrylab-arm"] == "gemini-flash"
        fallbacks += assign("broken-canary", thread, canary) == "larry-broken"
    assert fallbacks > 0
    canary_summary = {
        a["arm"]: a for a in http.get("/admin/experiments/broken-canary/report").json()["arms"]
    }
    assert canary_summary["larry-broken"]["fallbacks"] == fallbacks
    assert canary_summary["larry-broken"]["requests"] == fallbacks
    assert canary_summary["gemini-flash"]["fallbacks"] == 0

    # A model can be called directly, outside any experiment.
    _, headers, _ = _ask(
        client, "larry-v1", "direct-1", [{"role": "user", "content": "hi"}], stream=False
    )
    assert headers["x-larrylab-arm"] == "larry-v1" and headers["x-larrylab-experiment"] == "none"

    # A clean shutdown loses nothing: every request is in the store afterwards.
    # (uvicorn re-raises the signal after its graceful shutdown, hence -SIGTERM.)
    assert router.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    with make_engine(database_url).connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM request")).scalar() == len(request_ids) + 20 + 1
        )
        assert conn.execute(text("SELECT count(*) FROM feedback")).scalar() == len(request_ids)
    # `larrylab report` on the same traffic: the numbers the router's summary gave, plus a verdict.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "larrylab",
            "report",
            "larry-v1-vs-gemini",
            "--json",
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {a["arm"]: a["requests"] for a in report["arms"]} == dict(served)
    assert report["threads"] == {arm: len(t) for arm, t in threads_per_arm.items()}
    assert report["srm"] is False and report["control"] == "gemini-flash"
    (cand,) = report["candidates"]
    assert cand["arm"] == "larry-v1" and cand["verdict"] in ("ship", "keep_running")
    assert {m["metric"] for m in cand["metrics"]} >= {"latency_ms", "mean_score", "error_rate"}
    text_out = subprocess.run(
        [
            sys.executable,
            "-m",
            "larrylab",
            "report",
            "larry-v1-vs-gemini",
            "--database-url",
            database_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert text_out.returncode == 0 and "larry-v1 vs gemini-flash" in text_out.stdout
