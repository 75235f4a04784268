"""The router's HTTP API in-process (FastAPI TestClient) against a real simulated upstream:
bad input gets a clear 4xx, never a 500; auth; admin changes; headers; OpenAPI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from larrylab.localproc import LocalProcess
from tests.router.factories import CHAT
from tests.router.factories import error_message as _error
from tests.router.factories import router_client as _client


@pytest.fixture
def client(tmp_path: Path, fast_sim: LocalProcess) -> Iterator[TestClient]:
    yield from _client(tmp_path, fast_sim)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def test_metrics_count_the_log_rows_and_batches_written(client: TestClient) -> None:
    for i in range(3):
        assert (
            client.post("/v1/chat/completions", json={**CHAT, "user": f"m{i}"}).status_code == 200
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = client.get("/metrics").text
        if _metric(text, "larrylab_log_rows_written_total") == 3:
            break
        time.sleep(0.1)
    assert _metric(text, "larrylab_log_queue_depth") == 0
    assert 1 <= _metric(text, "larrylab_log_batches_written_total") <= 3
    again = client.get("/metrics").text  # scraping again counts nothing twice
    assert _metric(again, "larrylab_log_rows_written_total") == 3
    assert _metric(again, "larrylab_log_batches_written_total") == _metric(
        text, "larrylab_log_batches_written_total"
    )


def test_startup_objects_are_left_out_of_garbage_collections(client: TestClient) -> None:
    import gc

    # Once the router started, the objects made until then are frozen: full collections,
    # pauses every request waits out, walk only what serving made since.
    assert gc.get_freeze_count() > 10_000
    assert client.get("/healthz").status_code == 200


def test_completion_id_equals_request_id_and_headers(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={**CHAT, "user": "thread-1"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == r.headers["x-larrylab-request-id"]
    assert r.headers["x-larrylab-arm"] in ("gemini-flash", "larry-v1")
    assert r.headers["x-larrylab-experiment"] == "larry-v1-vs-gemini"
    assert r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b"[1, 2]", 400, "JSON object"),
        (b"\xff\xfe{}", 400, "not valid JSON"),
        (b'{"model": "larry"}', 400, "`messages` is required"),
        (b'{"model": "larry", "messages": []}', 400, "non-empty list"),
        (b'{"model": "larry", "messages": "hello"}', 400, "non-empty list"),
        (
            b'{"model": "larry", "messages": [{"role": "wizard", "content": "x"}]}',
            400,
            "messages[0].role",
        ),
        (
            b'{"model": "larry", "messages": [{"role": "user", "content": 5}]}',
            400,
            "messages[0].content",
        ),
        (b'{"model": "larry", "messages": [{"role": "user"}]}', 400, "content is required"),
        (b'{"model": "larry", "messages": ["hi"]}', 400, "messages[0] must be an object"),
        (
            b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}',
            400,
            "`model` is required",
        ),
        (
            b'{"model": "larry", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}',
            400,
            "`stream`",
        ),
        (
            b'{"model": "larry", "user": 5, "messages": [{"role": "user", "content": "x"}]}',
            400,
            "`user`",
        ),
        (
            b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "unknown model or route 'nope'",
        ),
    ],
)
def test_bad_chat_requests_get_clear_4xx(
    client: TestClient, body: bytes, status: int, fragment: str
) -> None:
    r = client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert fragment in _error(r, status)


def test_unknown_route_lists_what_exists(client: TestClient) -> None:
    message = _error(client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}), 404)
    assert "larry" in message and "gemini-flash" in message


def test_oversized_body_is_413(client: TestClient) -> None:
    huge = {**CHAT, "messages": [{"role": "user", "content": "x" * 100_000}]}
    assert "larger than the limit" in _error(client.post("/v1/chat/completions", json=huge), 413)


def test_unknown_fields_pass_through(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={**CHAT, "temperature": 0.2, "x_custom": {"a": 1}})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"request_id": "chatcmpl-x", "score": 0}, "score"),
        ({"request_id": "chatcmpl-x", "score": 6}, "score"),
        ({"request_id": "chatcmpl-x", "score": "5"}, "score"),
        ({"request_id": "chatcmpl-x", "score": 3.5}, "score"),
        ({"score": 3}, "give `request_id` (or `response_id`) or `thread_id`"),
        ({"request_id": "chatcmpl-x", "score": 3, "stars": 3}, "stars"),
        ({"request_id": "chatcmpl-x"}, "give `score` (1-5), `thumb` (up or down), or both"),
        ({"request_id": "chatcmpl-x", "comment": "meh"}, "give `score`"),
        ({"request_id": "chatcmpl-x", "thumb": "sideways"}, '`thumb` must be "up", "down"'),
        ({"request_id": "chatcmpl-x", "thumb": 2}, "`thumb` must be"),
        ({"request_id": "chatcmpl-x", "thumb": "1"}, "`thumb` must be"),
        ({"request_id": "chatcmpl-x", "thumb": [1]}, "`thumb` must be"),
        ({"request_id": "chatcmpl-x", "thumb": 1, "categories": []}, "`categories` must be"),
        ({"request_id": "chatcmpl-x", "thumb": 1, "categories": {"depth": 1}}, "true or false"),
        ({"request_id": "chatcmpl-x", "thumb": 1, "categories": {"a b": True}}, "'a b'"),
        ({"request_id": "chatcmpl-x", "thumb": 1, "categories": {"": True}}, "1-40 letters"),
        ({"request_id": "chatcmpl-x", "thumb": 1, "categories": {"x" * 41: True}}, "1-40"),
        (
            {
                "request_id": "chatcmpl-x",
                "thumb": 1,
                "categories": {f"c{i}": True for i in range(21)},
            },
            "at most 20",
        ),
        (
            {"request_id": "chatcmpl-x", "response_id": "chatcmpl-y", "thumb": 1},
            "`request_id` and `response_id` name the same id",
        ),
        ({"response_id": "", "thumb": 1}, "response_id"),
    ],
)
def test_bad_feedback_is_422(client: TestClient, body: dict[str, Any], fragment: str) -> None:
    assert fragment in _error(client.post("/v1/feedback", json=body), 422)


def test_malformed_feedback_json_is_422(client: TestClient) -> None:
    r = client.post("/v1/feedback", content=b"{oops", headers={"content-type": "application/json"})
    assert "not valid JSON" in _error(r, 422)


def test_feedback_on_unknown_ids_is_404(client: TestClient) -> None:
    assert "unknown request_id" in _error(
        client.post("/v1/feedback", json={"request_id": "chatcmpl-nope", "score": 4}), 404
    )
    assert "unknown request_id" in _error(
        client.post("/v1/feedback", json={"response_id": "chatcmpl-nope", "thumb": "up"}), 404
    )
    assert "unknown thread_id" in _error(
        client.post("/v1/feedback", json={"thread_id": "nope", "score": 4}), 404
    )


def test_feedback_right_after_the_reply_finds_it(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={**CHAT, "user": "t-fast"})
    rid = r.headers["x-larrylab-request-id"]
    fb = client.post("/v1/feedback", json={"request_id": rid, "score": 5})
    assert fb.status_code == 200, fb.text
    assert fb.json()["arm"] == r.headers["x-larrylab-arm"]
    thread_fb = client.post(
        "/v1/feedback", json={"thread_id": "t-fast", "score": 4, "source": "facilitator"}
    )
    assert thread_fb.status_code == 200 and thread_fb.json()["experiment"] == "larry-v1-vs-gemini"


def test_admin_changes_weights_and_stops(client: TestClient) -> None:
    exp = client.get("/admin/experiments/larry-v1-vs-gemini").json()
    assert [a["weight"] for a in exp["arms"]] == [50, 50]
    r = client.patch(
        "/admin/experiments/larry-v1-vs-gemini",
        json={
            "arms": [
                {"model": "gemini-flash", "weight": 100, "control": True},
                {"model": "larry-v1", "weight": 0},
            ]
        },
    )
    assert r.status_code == 200, r.text
    arms = {
        client.post("/v1/chat/completions", json={**CHAT, "user": f"t{i}"}).headers[
            "x-larrylab-arm"
        ]
        for i in range(20)
    }
    assert arms == {"gemini-flash"}
    assert client.post("/admin/experiments/larry-v1-vs-gemini/stop").json()["status"] == "stopped"
    r = client.post("/v1/chat/completions", json=CHAT)
    assert (
        r.headers["x-larrylab-experiment"] == "none"
        and r.headers["x-larrylab-arm"] == "gemini-flash"
    )


def test_admin_rejects_bad_changes(client: TestClient) -> None:
    spec = {
        "name": "second",
        "route": "larry",
        "arms": [{"model": "larry-v1", "weight": 1, "control": True}],
    }
    assert "already runs" in _error(client.post("/admin/experiments", json=spec), 409)
    assert "already exists" in _error(
        client.post("/admin/experiments", json={**spec, "name": "larry-v1-vs-gemini"}), 409
    )
    bad_model = {
        **spec,
        "route": "other",
        "arms": [{"model": "ghost", "weight": 1, "control": True}],
    }
    assert "unknown model 'ghost'" in _error(client.post("/admin/experiments", json=bad_model), 404)
    two_controls = {
        "arms": [
            {"model": "larry-v1", "weight": 1, "control": True},
            {"model": "gemini-flash", "weight": 1, "control": True},
        ]
    }
    assert "exactly one arm" in _error(
        client.patch("/admin/experiments/larry-v1-vs-gemini", json=two_controls), 422
    )
    assert "unknown experiment" in _error(client.get("/admin/experiments/ghost/report"), 404)
    assert _error(client.post("/admin/models", json={"name": "m", "api": "openai"}), 422)


def test_admin_sets_what_candidates_do_with_unsupported_requests(client: TestClient) -> None:
    url = "/admin/experiments/larry-v1-vs-gemini"
    assert client.get(url).json()["unsupported"] == "control"
    r = client.patch(url, json={"unsupported": "strip"})
    assert r.status_code == 200, r.text
    assert r.json()["unsupported"] == "strip"
    assert client.get(url).json()["unsupported"] == "strip"
    assert client.get(f"{url}/report").json()["unsupported"] == "strip"
    message = _error(client.patch(url, json={"unsupported": "drop"}), 422)
    assert "unsupported" in message and "'control'" in message and "'strip'" in message
    assert client.get(url).json()["unsupported"] == "strip"
    client.post(f"{url}/stop")
    spec = {
        "name": "strips",
        "route": "larry",
        "unsupported": "strip",
        "arms": [{"model": "larry-v1", "weight": 1, "control": True}],
    }
    created = client.post("/admin/experiments", json=spec)
    assert created.status_code == 201 and created.json()["unsupported"] == "strip"
    bad = {**spec, "name": "bad", "unsupported": "maybe"}
    assert "unsupported" in _error(client.post("/admin/experiments", json=bad), 422)


def test_admin_registers_a_model_and_routes_to_it(
    client: TestClient, fast_sim: LocalProcess
) -> None:
    r = client.post(
        "/admin/models",
        json={"name": "larry-v2", "base_url": f"{fast_sim.url}/v1", "model": "larry-v2"},
    )
    assert r.status_code == 201, r.text
    assert client.get("/admin/models").json()["count"] == 3
    r = client.post("/v1/chat/completions", json={**CHAT, "model": "larry-v2"})
    assert r.status_code == 200 and r.headers["x-larrylab-arm"] == "larry-v2"
    assert client.put("/admin/routes/coach", json={"model": "larry-v2"}).status_code == 200
    assert (
        client.post("/v1/chat/completions", json={**CHAT, "model": "coach"}).headers[
            "x-larrylab-arm"
        ]
        == "larry-v2"
    )
    names = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert {"larry", "coach", "larry-v2"} <= set(names)


def test_health_metrics_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    client.post("/v1/chat/completions", json=CHAT)
    metrics = client.get("/metrics").text
    assert "larrylab_requests_total" in metrics and 'route="larry"' in metrics
    schema = client.get("/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/feedback", "/admin/experiments/{name}/report"} <= set(
        schema["paths"]
    )
    assert schema["paths"]["/admin/experiments/{name}/summary"]["get"]["deprecated"] is True
    assert not schema["paths"]["/admin/experiments/{name}/report"]["get"].get("deprecated")


def test_auth_keys(tmp_path: Path, fast_sim: LocalProcess) -> None:
    for client in _client(tmp_path, fast_sim, api_keys="k1,k2", admin_key="adm"):
        assert "missing API key" in _error(client.post("/v1/chat/completions", json=CHAT), 401)
        assert "invalid API key" in _error(
            client.post(
                "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer nope"}
            ),
            401,
        )
        ok = client.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer k2"})
        assert ok.status_code == 200
        assert _error(client.get("/admin/experiments", headers={"authorization": "Bearer k1"}), 401)
        assert (
            client.get("/admin/experiments", headers={"authorization": "Bearer adm"}).status_code
            == 200
        )
        assert client.get("/healthz").status_code == 200


def test_upstream_down_is_a_clean_502(tmp_path: Path, fast_sim: LocalProcess) -> None:
    for client in _client(tmp_path, fast_sim):
        client.post(
            "/admin/models",
            json={"name": "dead", "base_url": "http://127.0.0.1:9/v1", "connect_timeout_s": 1},
        )
        message = _error(client.post("/v1/chat/completions", json={**CHAT, "model": "dead"}), 502)
        assert "cannot connect to model 'dead'" in message


def _rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3

    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        return conn.execute(sql).fetchall()


def test_thread_from_header_then_user_then_the_conversations_opening(
    tmp_path: Path, fast_sim: LocalProcess
) -> None:
    later_turn = {
        **CHAT,
        "messages": [
            *CHAT["messages"],
            {"role": "assistant", "content": "What have you tried?"},
            {"role": "user", "content": "Nothing yet."},
        ],
    }
    for client in _client(tmp_path, fast_sim):
        arms = {
            client.post(
                "/v1/chat/completions", json=CHAT, headers={"x-thread-id": "hdr-1"}
            ).headers["x-larrylab-arm"]
            for _ in range(5)
        }
        assert len(arms) == 1
        client.post("/v1/chat/completions", json={**CHAT, "user": "u-1"}, headers={})
        client.post("/v1/chat/completions", json=CHAT)
        client.post("/v1/chat/completions", json=later_turn)
        client.post(
            "/v1/chat/completions", json={**CHAT, "messages": [{"role": "system", "content": "x"}]}
        )
        client.get("/healthz")
    sources = dict(
        _rows(tmp_path, "SELECT unit_source, count(*) FROM request GROUP BY unit_source")
    )
    assert sources == {"header": 5, "user": 1, "opening": 2, "random": 1}
    assert _rows(
        tmp_path, "SELECT DISTINCT thread_id FROM request WHERE unit_source = 'header'"
    ) == [("hdr-1",)]
    # every turn of one conversation is one thread: the opening is the same
    openings = _rows(
        tmp_path, "SELECT DISTINCT thread_id FROM request WHERE unit_source = 'opening'"
    )
    assert len(openings) == 1


def test_stream_without_usage_request_hides_usage_but_logs_tokens(
    tmp_path: Path, fast_sim: LocalProcess
) -> None:
    for client in _client(tmp_path, fast_sim):
        with client.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "model": "larry-v1", "stream": True}
        ) as r:
            assert r.status_code == 200
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all(c["choices"] for c in chunks) and not any(c.get("usage") for c in chunks)
        assert {c["id"] for c in chunks} == {r.headers["x-larrylab-request-id"]}
    ((tokens, ttft, status),) = _rows(
        tmp_path, "SELECT completion_tokens, ttft_ms, status FROM request"
    )
    assert tokens > 0 and ttft > 0 and status == "ok"


def test_stream_cut_mid_way_ends_with_error_event_and_is_logged(
    tmp_path: Path, fast_sim: LocalProcess, dropping_sim: LocalProcess
) -> None:
    for client in _client(tmp_path, fast_sim):
        client.post("/admin/models", json={"name": "flaky", "base_url": f"{dropping_sim.url}/v1"})
        with client.stream(
            "POST", "/v1/chat/completions", json={**CHAT, "model": "flaky", "stream": True}
        ) as r:
            assert r.status_code == 200
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        last = json.loads(events[-1])
        assert "[DONE]" not in events and last["error"]["message"]
    ((status, error_class),) = _rows(tmp_path, "SELECT status, error_class FROM request")
    assert status == "error" and error_class in ("protocol", "server_error")


def test_report_has_arms_tests_and_verdicts(client: TestClient) -> None:
    thumbs: dict[str, list[int]] = {"gemini-flash": [], "larry-v1": []}
    scores: dict[str, list[int]] = {"gemini-flash": [], "larry-v1": []}
    for i in range(6):
        r = client.post("/v1/chat/completions", json={**CHAT, "user": f"s{i}"})
        rating: dict[str, Any] = {"thumb": i % 2} if i % 3 else {"score": 2 + i % 4, "thumb": 1}
        rated = client.post(
            "/v1/feedback", json={"response_id": r.headers["x-larrylab-request-id"], **rating}
        )
        assert rated.status_code == 200, rated.text
        arm = r.headers["x-larrylab-arm"]
        thumbs[arm].append(rating["thumb"])
        if "score" in rating:
            scores[arm].append(rating["score"])
    body = client.get("/admin/experiments/larry-v1-vs-gemini/report").json()
    for row in body["arms"]:
        seen = thumbs[row["arm"]]
        assert row["thumbs_count"] == len(seen)
        assert row["thumbs_up_rate"] == (sum(seen) / len(seen) if seen else None)
        assert row["feedback_count"] == len(scores[row["arm"]])
        assert row["ineligible_requests"] == 0 and row["ineligible_share"] == (
            0.0 if row["requests"] else None
        )
    metrics = {m["metric"] for m in body["candidates"][0]["metrics"]}
    assert {"thumbs_up_rate", "mean_score", "high_rating_share"} <= metrics
    assert body["control"] == "gemini-flash" and body["method"] == "sequential"
    assert body["unsupported"] == "control"
    assert sum(body["threads"].values()) == 6
    assert sum(a["requests"] for a in body["arms"]) == 6
    assert body["candidates"][0]["verdict"] in ("keep_running", "ship", "stop", "invalid")
    # The deprecated alias answers with the same body.
    alias = client.get("/admin/experiments/larry-v1-vs-gemini/summary")
    assert alias.status_code == 200 and alias.json() == body


def test_circuit_breaker_sends_a_failing_arm_to_the_control(
    tmp_path: Path, fast_sim: LocalProcess, broken_sim: LocalProcess
) -> None:
    for client in _client(tmp_path, fast_sim, breaker_failures=3, breaker_cooldown_s=600):
        client.post("/admin/models", json={"name": "broken", "base_url": f"{broken_sim.url}/v1"})
        client.post("/admin/experiments/larry-v1-vs-gemini/stop")
        spec = {
            "name": "canary",
            "route": "larry",
            "arms": [
                {"model": "gemini-flash", "weight": 0, "control": True},
                {"model": "broken", "weight": 100},
            ],
        }
        assert client.post("/admin/experiments", json=spec).status_code == 201
        for i in range(8):
            r = client.post("/v1/chat/completions", json={**CHAT, "user": f"b{i}"})
            assert r.status_code == 200 and r.headers["x-larrylab-arm"] == "gemini-flash"
        report = client.get("/admin/experiments/canary/report").json()
        assert report["breakers"] == {"gemini-flash": "closed", "broken": "open"}
        broken = next(a for a in report["arms"] if a["arm"] == "broken")
        assert broken["fallbacks"] == 8 and broken["errors"] == 0
        assert 'larrylab_breaker_open{model="broken"} 1.0' in client.get("/metrics").text
    reasons = dict(
        _rows(
            tmp_path,
            "SELECT error_class, count(*) FROM request WHERE experiment = 'canary' GROUP BY 1",
        )
    )
    # Three real failures opened the breaker; the other five never reached the broken model.
    assert reasons == {"server_error": 3, "circuit_open": 5}
