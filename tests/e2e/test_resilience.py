"""Resilience, end to end with real processes: database outages, crashes, graceful shutdown,
several workers, and faulty upstreams. The client always gets an answer or a well-formed error,
and the log matches what the client saw."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from larrylab.db._engine import make_engine, upgrade
from larrylab.localproc import LocalProcess, free_port, start_router, start_sim
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.e2e
CHAT = {"model": "larry", "messages": [{"role": "user", "content": "What problem am I solving?"}]}


def _config(
    path: Path,
    models: dict[str, str],
    arms: list[tuple[str, int]] | None = None,
    model_extra: str = "",
) -> Path:
    lines = ["models:"]
    lines += [
        f"  {name}: {{api: openai, base_url: {url}/v1, model: {name}{model_extra}}}"
        for name, url in models.items()
    ]
    first = next(iter(models))
    lines += ["routes:", f"  larry: {{model: {first}}}"]
    if arms:
        arm_text = ", ".join(
            f"{{model: {m}, weight: {w}{', control: true' if i == 0 else ''}}}"
            for i, (m, w) in enumerate(arms)
        )
        lines += ["experiments:", f"  - {{name: exp, route: larry, arms: [{arm_text}]}}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _count(url: str, table: str) -> int:
    with make_engine(url).connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0)


def _wait_for(predicate: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.fixture
def proxied_postgres(postgres_url: str) -> Iterator[tuple[str, TcpProxy]]:
    upgrade(postgres_url)
    parsed = make_url(postgres_url)
    proxy = TcpProxy(parsed.port or 5432)
    proxy.start()
    yield parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), proxy
    proxy.cut()


def _queue_depth(http: httpx.Client) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("larrylab_log_queue_depth "):
            return float(line.split()[1])
    raise AssertionError("no larrylab_log_queue_depth in /metrics")


@pytest.mark.postgres
def test_database_outage_keeps_rows_locally_and_stores_them_later(
    tmp_path: Path,
    fast_sim: LocalProcess,
    proxied_postgres: tuple[str, TcpProxy],
    postgres_url: str,
) -> None:
    url, proxy = proxied_postgres
    config = _config(tmp_path / "c.yaml", {"gemini-flash": fast_sim.url})
    spill = tmp_path / "spill"
    env = {
        "LARRYLAB_REPLAY_INTERVAL_S": "0.5",
        "LARRYLAB_LOG_FLUSH_INTERVAL_S": "0.05",
        "LARRYLAB_SPILL_DIR": str(spill),
        "LARRYLAB_JOURNAL_DIR": str(spill / "journal"),
    }
    router = start_router(log_dir=tmp_path, database_url=url, config=config, env=env)
    http = httpx.Client(base_url=router.url, timeout=30)
    try:
        before = [
            http.post("/v1/chat/completions", json={**CHAT, "user": f"a{i}"}) for i in range(5)
        ]
        assert all(r.status_code == 200 for r in before)
        assert _wait_for(lambda: _count(postgres_url, "request") == 5)
        proxy.cut()  # the database is gone
        during = [
            http.post("/v1/chat/completions", json={**CHAT, "user": f"b{i}"}) for i in range(10)
        ]
        assert all(r.status_code == 200 for r in during)  # Larry notices nothing
        rated = http.post(
            "/v1/feedback",
            json={"request_id": before[0].headers["x-larrylab-request-id"], "score": 5},
        )
        assert rated.status_code == 202 and rated.json()["spilled"] is True
        assert http.get("/healthz").status_code == 503
        # The rows wait in the router's journal; the indexer retries.
        assert _queue_depth(http) == 10
        assert any(spill.glob("journal/*/*.jsonl"))
        proxy.start()  # the database is back
        assert _wait_for(
            lambda: _count(postgres_url, "request") == 15 and _count(postgres_url, "feedback") == 1
        )
        assert not list(spill.glob("*.jsonl*"))
        assert http.get("/healthz").status_code == 200
        assert _wait_for(lambda: _queue_depth(http) == 0)
    finally:
        http.close()
        router.stop()


@pytest.mark.postgres
@pytest.mark.parametrize("workers", [1, 2])
def test_every_rating_accepted_during_an_outage_is_stored_after_it(
    tmp_path: Path,
    fast_sim: LocalProcess,
    proxied_postgres: tuple[str, TcpProxy],
    postgres_url: str,
    workers: int,
) -> None:
    """A 202 is a promise: ratings of requests served during the outage are stored once the
    database is back, even when their request rows reach it after the ratings are replayed
    (with two workers, a rating may reach the worker that did not serve its request)."""
    url, proxy = proxied_postgres
    config = _config(tmp_path / "c.yaml", {"gemini-flash": fast_sim.url})
    spill = tmp_path / "spill"
    env = {
        "LARRYLAB_REPLAY_INTERVAL_S": "0.5",
        "LARRYLAB_LOG_FLUSH_INTERVAL_S": "0.05",
        "LARRYLAB_SPILL_DIR": str(spill),
        "LARRYLAB_JOURNAL_DIR": str(spill / "journal"),
    }
    router = start_router(
        log_dir=tmp_path,
        database_url=url,
        config=config,
        env=env,
        extra=["--workers", str(workers)],
    )
    http = httpx.Client(base_url=router.url, timeout=30)
    accepted: list[str] = []
    try:
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert _wait_for(lambda: _count(postgres_url, "request") == 1)
        proxy.cut()
        for i in range(40):
            served = http.post("/v1/chat/completions", json={**CHAT, "user": f"o{i}"})
            assert served.status_code == 200
            rid = served.headers["x-larrylab-request-id"]
            # a connection of its own: with two workers, either may take it
            rated = httpx.post(
                f"{router.url}/v1/feedback",
                json={"request_id": rid, "score": 1 + i % 5},
                timeout=30,
            )
            assert rated.status_code == 202, rated.text
            accepted.append(rid)
        proxy.start()
        _wait_for(lambda: _count(postgres_url, "feedback") == len(accepted), timeout=60)
        with make_engine(postgres_url).connect() as conn:
            stored = {r[0] for r in conn.execute(text("SELECT request_id FROM feedback"))}
        print(
            f"database outage ({workers} worker(s)): {len(accepted)} ratings accepted with HTTP "
            f"202, {len(stored & set(accepted))} stored after it"
        )
        for line in router.log().splitlines():
            if "spilled ratings" in line:
                print(f"  router: {line}")
        assert stored == set(accepted)
        assert _wait_for(lambda: _count(postgres_url, "request") == 41)
        assert _wait_for(lambda: not list(spill.glob("feedback-*")))
    finally:
        http.close()
        router.stop()


class _HugeUsage(BaseHTTPRequestHandler):
    """An OpenAI-compatible upstream whose replies claim 3 billion prompt tokens (more than
    PostgreSQL's `integer` holds)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps(
            {
                "id": "chatcmpl-huge",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "huge",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "so many"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3_000_000_000, "completion_tokens": 2},
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def huge_usage_upstream() -> Iterator[str]:
    """The base URL of a loopback `_HugeUsage` upstream."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _HugeUsage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _metric(http: httpx.Client, name: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


@pytest.mark.postgres
def test_one_bad_row_never_stops_the_request_log(
    tmp_path: Path, fast_sim: LocalProcess, huge_usage_upstream: str, postgres_url: str
) -> None:
    """A NUL in a thread id is stored (as U+FFFD); a row PostgreSQL still refuses (a token
    count past its integer) is quarantined with the reason; every other row is stored, ratings
    and flushes go on, and `/healthz` and `/metrics` say so."""
    upgrade(postgres_url)
    config = _config(
        tmp_path / "c.yaml", {"gemini-flash": fast_sim.url, "huge": huge_usage_upstream}
    )
    spill = tmp_path / "spill"
    env = {
        "LARRYLAB_LOG_FLUSH_INTERVAL_S": "0.05",
        "LARRYLAB_SPILL_DIR": str(spill),
        "LARRYLAB_JOURNAL_DIR": str(spill / "journal"),
    }
    router = start_router(log_dir=tmp_path, database_url=postgres_url, config=config, env=env)
    http = httpx.Client(base_url=router.url, timeout=30)
    try:
        nul = http.post("/v1/chat/completions", json={**CHAT, "user": "a\u0000b"})
        assert nul.status_code == 200
        huge = http.post("/v1/chat/completions", json={**CHAT, "model": "huge", "user": "h"})
        assert huge.status_code == 200
        normal = [
            http.post("/v1/chat/completions", json={**CHAT, "user": f"n{i}"}) for i in range(20)
        ]
        assert all(r.status_code == 200 for r in normal)
        # A rating of the NUL thread waits for its rows (a flush) and finds it.
        rated = http.post("/v1/feedback", json={"thread_id": "a\u0000b", "score": 4})
        assert rated.status_code == 200, rated.text
        ids = {r.headers["x-larrylab-request-id"] for r in normal}
        ids.add(nul.headers["x-larrylab-request-id"])
        assert _wait_for(lambda: _count(postgres_url, "request") == 21)
        with make_engine(postgres_url).connect() as conn:
            stored = {r[0]: r[1] for r in conn.execute(text("SELECT id, thread_id FROM request"))}
        assert set(stored) == ids
        assert stored[nul.headers["x-larrylab-request-id"]] == "a\ufffdb"
        assert rated.json()["thread_id"] == "a\ufffdb"
        ((entry,),) = [
            [json.loads(line) for line in path.read_text().splitlines()]
            for path in (spill / "quarantine").glob("requests-*.jsonl")
        ]
        assert entry["row"]["id"] == huge.headers["x-larrylab-request-id"]
        assert "out of range" in entry["reason"]
        health = http.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["log_rows_quarantined"] == {"requests": 1, "feedback": 0}
        assert _metric(http, 'larrylab_log_rows_quarantined_total{kind="requests"}') == 1
        assert _wait_for(lambda: _queue_depth(http) == 0)
    finally:
        http.close()
        router.stop()
    assert "cut short" not in router.log()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("killed", ["router", "router and indexer"])
def test_sigkill_loses_at_most_the_last_batch_interval(
    tmp_path: Path, fast_sim: LocalProcess, killed: str
) -> None:
    db = f"sqlite:///{tmp_path / 'kill.db'}"
    interval = 0.5
    config = _config(tmp_path / "c.yaml", {"gemini-flash": fast_sim.url})
    env = {
        "LARRYLAB_LOG_FLUSH_INTERVAL_S": str(interval),
        "LARRYLAB_SPILL_DIR": str(tmp_path / "spill"),
        "LARRYLAB_JOURNAL_DIR": str(tmp_path / "spill" / "journal"),
    }
    router = start_router(log_dir=tmp_path, database_url=db, config=config, env=env)
    finished: list[float] = []
    with httpx.Client(base_url=router.url, timeout=30) as http:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
            finished.append(time.monotonic())
    killed_at = time.monotonic()
    pgid = router.proc.pid  # the router runs in its own session (its indexer in another)
    children = _children(router.proc.pid)
    if killed == "router":
        router.stop(signal.SIGKILL)
    else:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        os.killpg(pgid, signal.SIGKILL)
        router.proc.wait(30)
    assert _wait_for(lambda: _group_gone(pgid)), "a process of the router's group outlived it"
    assert _wait_for(lambda: not any(_alive(p) for p in children)), "the indexer outlived it"
    if killed == "router and indexer":
        # The journal outlives both: the next router's indexer adopts and stores it.
        rows_after_kill = _count(db, "request")
        (left,) = (tmp_path / "spill" / "journal").iterdir()
        later = start_router(log_dir=tmp_path / "later", database_url=db, config=config, env=env)
        try:
            assert _wait_for(lambda: not left.exists())
        finally:
            later.stop()
        print(
            f"{rows_after_kill} rows were stored before the kill; the next router adopted the rest"
        )
    stored = _count(db, "request")
    lost = len(finished) - stored
    recent = sum(1 for t in finished if killed_at - t <= 2 * interval)
    last_moments = sum(1 for t in finished if killed_at - t <= 0.1)
    print(
        f"SIGKILL of the {killed} after {len(finished)} requests: {lost} rows "
        f"lost; {recent} finished in the last 2 x {interval}s batch interval, {last_moments} in "
        "the last 0.1 s"
    )
    # Each request is in the journal 10 ms after it finished: only those of the last moments
    # before the kill may be missing.
    assert 0 <= lost <= last_moments


def test_a_clean_stop_reports_no_journal_line_cut_short(
    tmp_path: Path, fast_sim: LocalProcess
) -> None:
    """SIGTERM of an idle router, and `serve` failing on a busy port, are no crash: nothing is
    said of a journal line cut short."""
    db = f"sqlite:///{tmp_path / 'idle.db'}"
    config = _config(tmp_path / "c.yaml", {"gemini-flash": fast_sim.url})
    env = {
        "LARRYLAB_SPILL_DIR": str(tmp_path / "spill"),
        "LARRYLAB_JOURNAL_DIR": str(tmp_path / "spill" / "journal"),
    }
    idle = start_router(log_dir=tmp_path / "idle", database_url=db, config=config, env=env)
    assert idle.stop() in (0, -signal.SIGTERM)
    assert "cut short" not in idle.log()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError) as failed:
            start_router(
                log_dir=tmp_path / "busy", database_url=db, config=config, env=env, port=port
            )
    assert "cut short" not in str(failed.value)
    assert not list((tmp_path / "spill" / "journal").iterdir())  # both journals were removed


@pytest.fixture
def slow_sim(sim_dir: Path) -> Iterator[LocalProcess]:
    """Streams of about 3 seconds."""
    proc = start_sim(
        log_dir=sim_dir, label="slow-stream", extra=["--ttft-ms", "50", "--tokens-per-s", "25"]
    )
    yield proc
    proc.stop()


def test_sigterm_drains_streams_and_flushes_every_row(
    tmp_path: Path, slow_sim: LocalProcess
) -> None:
    slow = slow_sim
    db = f"sqlite:///{tmp_path / 'term.db'}"
    router = start_router(
        log_dir=tmp_path, database_url=db, config=_config(tmp_path / "c.yaml", {"m": slow.url})
    )
    client = openai.OpenAI(base_url=f"{router.url}/v1", api_key="x", max_retries=0)
    results: list[str] = []
    started = threading.Barrier(5)

    def one(i: int) -> None:
        stream = client.chat.completions.create(
            model="larry", messages=[{"role": "user", "content": "hi"}], stream=True, user=f"t{i}"
        )
        parts = []
        for n, chunk in enumerate(stream):
            if n == 1:
                started.wait(timeout=10)
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        results.append("".join(parts))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    router.proc.send_signal(signal.SIGTERM)  # while all five streams are mid-way
    for t in threads:
        t.join(timeout=60)
    assert router.proc.wait(30) in (0, -signal.SIGTERM)
    assert len(results) == 5 and all(len(r.split()) > 10 for r in results)
    with make_engine(db).connect() as conn:
        rows = conn.execute(text("SELECT status, completion_tokens FROM request")).all()
    assert len(rows) == 5 and all(status == "ok" for status, _ in rows)


def test_client_leaving_mid_stream_is_logged_as_cancelled(
    tmp_path: Path, slow_sim: LocalProcess
) -> None:
    db = f"sqlite:///{tmp_path / 'gone.db'}"
    router = start_router(
        log_dir=tmp_path, database_url=db, config=_config(tmp_path / "c.yaml", {"m": slow_sim.url})
    )
    try:
        body = {**CHAT, "stream": True, "user": "leaver"}
        url = f"{router.url}/v1/chat/completions"
        with httpx.Client(timeout=10) as http, http.stream("POST", url, json=body) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = resp.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
        # leaving the block closed the connection with the stream half-way
        assert _wait_for(lambda: _count(db, "request") == 1)
        with make_engine(db).connect() as conn:
            status, http_status = conn.execute(
                text("SELECT status, http_status FROM request")
            ).one()
        assert (status, http_status) == ("cancelled", 200)
        # the router goes on serving
        ok = httpx.post(f"{router.url}/v1/chat/completions", json=CHAT, timeout=30)
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]
    finally:
        router.stop()


@pytest.mark.postgres
def test_two_workers_share_postgres(
    tmp_path: Path, fast_sim: LocalProcess, postgres_url: str
) -> None:
    upgrade(postgres_url)
    config = _config(
        tmp_path / "c.yaml",
        {"gemini-flash": fast_sim.url, "larry-v1": fast_sim.url},
        arms=[("gemini-flash", 50), ("larry-v1", 50)],
    )
    router = start_router(
        log_dir=tmp_path, database_url=postgres_url, config=config, extra=["--workers", "2"]
    )
    try:
        children = subprocess.run(
            ["pgrep", "-P", str(router.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) >= 2
        arms: dict[str, str] = {}
        with httpx.Client(base_url=router.url, timeout=30) as http:
            for i in range(40):
                r = http.post("/v1/chat/completions", json={**CHAT, "user": f"w{i % 10}"})
                assert r.status_code == 200
                assert (
                    arms.setdefault(f"w{i % 10}", r.headers["x-larrylab-arm"])
                    == r.headers["x-larrylab-arm"]
                )
            fb = http.post(
                "/v1/feedback", json={"request_id": r.headers["x-larrylab-request-id"], "score": 4}
            )
            assert fb.status_code == 200
    finally:
        router.stop()
    assert _count(postgres_url, "request") == 40


def test_faulty_upstreams_answer_or_fail_cleanly_and_the_log_agrees(
    tmp_path: Path, sim_dir: Path
) -> None:
    specs = {
        "control": ["--ttft-ms", "5", "--tokens-per-s", "0"],
        "flaky": [
            "--error-rate",
            "0.3",
            "--drop-rate",
            "0.3",
            "--ttft-ms",
            "5",
            "--tokens-per-s",
            "400",
            "--seed",
            "3",
        ],
        "hangs": ["--hang-rate", "0.5", "--hang-s", "30", "--ttft-ms", "5", "--seed", "4"],
        "slowstart": ["--ttft-ms", "3000", "--latency-sigma", "0"],
    }
    sims: dict[str, LocalProcess] = {}
    try:
        for name, extra in specs.items():
            sims[name] = start_sim(log_dir=sim_dir, label=name, extra=extra)
        _run_faulty(tmp_path, sims)
    finally:
        for s in sims.values():
            s.stop()


def _run_faulty(tmp_path: Path, sims: dict[str, LocalProcess]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "models:\n"
        + "".join(
            f"  {n}: {{api: openai, base_url: {s.url}/v1, model: {n}, first_token_timeout_s: 1, "
            f"total_timeout_s: 2, connect_timeout_s: 1}}\n"
            for n, s in sims.items()
        )
        + "experiments:\n"
        + "  - {name: exp, route: larry, arms: [{model: control, weight: 1, control: true}, "
        "{model: flaky, weight: 1}, {model: hangs, weight: 1}, {model: slowstart, weight: 1}]}\n"
    )
    db = f"sqlite:///{tmp_path / 'faults.db'}"
    router = start_router(
        log_dir=tmp_path, database_url=db, config=config, env={"LARRYLAB_BREAKER_FAILURES": "1000"}
    )
    seen: dict[str, tuple[int, str, bool]] = {}
    try:
        with httpx.Client(base_url=router.url, timeout=60) as http:
            for i in range(60):
                stream = i % 2 == 0
                body = {**CHAT, "user": f"f{i}", "stream": stream}
                with http.stream("POST", "/v1/chat/completions", json=body) as r:
                    raw = r.read().decode()
                rid = r.headers["x-larrylab-request-id"]
                if not stream:
                    assert r.status_code == 200, (
                        raw
                    )  # every failure before the first byte falls back
                    assert json.loads(raw)["choices"][0]["message"]["content"]
                    seen[rid] = (r.status_code, "ok", False)
                    continue
                events = [line[6:] for line in raw.splitlines() if line.startswith("data: ")]
                assert r.status_code == 200 and events
                if events[-1] == "[DONE]":
                    seen[rid] = (200, "ok", True)
                else:  # cut mid-stream: a well-formed error event ends it
                    assert "error" in json.loads(events[-1])
                    seen[rid] = (200, "error", True)
    finally:
        router.stop()
        for s in sims.values():
            s.stop()
    with make_engine(db).connect() as conn:
        rows = {
            r[0]: (r[1], r[2], bool(r[3]), r[4])
            for r in conn.execute(
                text("SELECT id, http_status, status, stream, fallback_from FROM request")
            )
        }
    assert set(rows) == set(seen)
    for rid, (status_code, status, stream) in seen.items():
        assert rows[rid][:3] == (status_code, status, stream)
    fallbacks = [r[3] for r in rows.values() if r[3]]
    assert {"hangs", "slowstart"} <= set(fallbacks)  # timeouts fell back to the control
    assert any(r[1] == "error" for r in rows.values())  # some streams were cut mid-way


def test_concurrent_feedback_for_one_request_keeps_one_row_per_source(
    tmp_path: Path, fast_sim: LocalProcess, database_url: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    upgrade(database_url)
    router = start_router(
        log_dir=tmp_path,
        database_url=database_url,
        config=_config(tmp_path / "c.yaml", {"gemini-flash": fast_sim.url}),
    )
    try:
        with httpx.Client(base_url=router.url, timeout=30) as http:
            rid = http.post("/v1/chat/completions", json=CHAT).headers["x-larrylab-request-id"]

            def rate(i: int) -> httpx.Response:
                return http.post(
                    "/v1/feedback",
                    json={
                        "request_id": rid,
                        "score": 1 + 3 * (i % 2) + (i // 2) % 2,
                        "source": f"s{i % 2}",
                    },
                )

            with ThreadPoolExecutor(max_workers=16) as pool:
                responses = list(pool.map(rate, range(40)))
        assert all(r.status_code == 200 for r in responses), [
            r.text for r in responses if r.status_code != 200
        ]
    finally:
        router.stop()
    with make_engine(database_url).connect() as conn:
        rows = conn.execute(text("SELECT source, score FROM feedback ORDER BY source")).all()
    assert [r[0] for r in rows] == ["s0", "s1"]
    assert rows[0][1] in {1, 2} and rows[1][1] in {4, 5}  # s0 rated 1 or 2, s1 rated 4 or 5
