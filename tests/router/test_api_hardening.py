"""The router's HTTP surface under attack (issue #27), on real servers over loopback sockets:
bad input is a clear 4xx, never a 500; a 500 that still happens leaves the keep-alive connection
usable; a database outage is a 503 with `Retry-After`; bodies are bounded and never read before
the key is checked."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import Depends, FastAPI
from sqlalchemy.engine import make_url

from larrylab.config import Settings
from larrylab.db._engine import upgrade
from larrylab.localproc import LocalProcess, start_router
from larrylab.release._prepare import prepare_store
from larrylab.router._app import create_app
from larrylab.router._deps import StateDep
from tests.conftest import write_config
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.e2e

CLIENT_KEY, ADMIN_KEY = "client-key", "admin-key"
CLIENT = {"authorization": f"Bearer {CLIENT_KEY}"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CHAT = {"model": "larry", "messages": [{"role": "user", "content": "What problem am I solving?"}]}
KEYS = {"LARRYLAB_API_KEYS": CLIENT_KEY, "LARRYLAB_ADMIN_KEY": ADMIN_KEY}


# ---------------------------------------------------------------- raw HTTP/1.1 over one socket


def _request(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """One HTTP/1.1 request, keep-alive, with a Content-Length."""
    lines = [f"{method} {path} HTTP/1.1", "host: test", f"content-length: {len(body)}"]
    if body:
        lines.append("content-type: application/json")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one response with a Content-Length body: (status, headers, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection; got {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        rest += chunk
    return int(status_line.split()[1]), headers, rest[:length]


def _exchange(sock: socket.socket, request: bytes) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(request)
    return _read_response(sock)


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _error_message(status: int, body: bytes, expected: int) -> str:
    assert status == expected, body
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return str(error["message"])


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def keyed_router(
    tmp_path_factory: pytest.TempPathFactory, fast_sim: LocalProcess
) -> Iterator[LocalProcess]:
    """`larrylab serve` with client and admin keys, on SQLite."""
    tmp: Path = tmp_path_factory.mktemp("hardening")
    config = write_config(
        tmp / "larrylab.yaml", control_url=fast_sim.url, candidate_url=fast_sim.url
    )
    proc = start_router(
        log_dir=tmp,
        database_url=f"sqlite:///{tmp / 'db.sqlite'}",
        config=config,
        env={
            **KEYS,
            "LARRYLAB_SPILL_DIR": str(tmp / "spill"),
            "LARRYLAB_JOURNAL_DIR": str(tmp / "spill" / "journal"),
        },
    )
    yield proc
    proc.stop()


class _Boom(Exception):
    """An exception no handler knows."""


def _app_with_failing_routes(settings: Settings) -> FastAPI:
    """The router's app plus routes that fail unexpectedly (async, sync, in a dependency)."""
    app = create_app(settings)

    async def failing_dependency() -> None:
        raise _Boom("a dependency failed")

    @app.get("/test/boom")
    async def boom() -> None:
        raise _Boom("an async route failed")

    @app.get("/test/boom-sync")
    def boom_sync() -> None:
        raise _Boom("a sync route failed")

    @app.get("/test/boom-dependency", dependencies=[Depends(failing_dependency)])
    async def boom_dependency() -> None:
        return None

    @app.get("/test/ok")
    async def ok(state: StateDep) -> dict[str, int]:
        return {"routes": len(state.routing.table.names())}

    return app


@pytest.fixture
def inprocess_server(tmp_path: Path, fast_sim: LocalProcess) -> Iterator[tuple[str, FastAPI]]:
    """The router's app with failing test routes, served by uvicorn (httptools) in a thread,
    on a loopback port."""
    config = write_config(
        tmp_path / "larrylab.yaml", control_url=fast_sim.url, candidate_url=fast_sim.url
    )
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        config=config,
        spill_dir=str(tmp_path / "spill"),
        journal_dir=str(tmp_path / "journal"),
    )
    prepare_store(settings)
    app = _app_with_failing_routes(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            http="httptools",
            log_level="critical",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(30)


# ---------------------------------------------------------------- 4xx, never 500


@pytest.mark.parametrize("role", [{"a": 1}, ["user"], {}, [], 5, None, True])
def test_a_role_of_the_wrong_type_is_a_clear_400(keyed_router: LocalProcess, role: Any) -> None:
    body = {"model": "larry", "messages": [{"role": role, "content": "x"}]}
    with _connect(keyed_router.url) as sock:
        status, _, reply = _exchange(
            sock, _request("POST", "/v1/chat/completions", orjson.dumps(body), CLIENT)
        )
    assert "messages[0].role must be one of" in _error_message(status, reply, 400)


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ({"role": "user", "content": [1, "x"]}, "messages[0].content must be a string or a list"),
        ({"role": "user", "content": "x", "name": 5}, "messages[0].name must be a string"),
        ({"role": "user", "content": "x", "name": {"a": 1}}, "messages[0].name must be a string"),
    ],
)
def test_a_message_the_schema_refuses_is_a_400(
    keyed_router: LocalProcess, message: dict[str, Any], fragment: str
) -> None:
    body = {"model": "larry", "messages": [message]}
    with _connect(keyed_router.url) as sock:
        status, _, reply = _exchange(
            sock, _request("POST", "/v1/chat/completions", orjson.dumps(body), CLIENT)
        )
    assert fragment in _error_message(status, reply, 400)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"request_id": None, "score": 3}, 422),  # neither target given
        ({"thread_id": None, "score": 3}, 422),
        ({"request_id": None, "thread_id": None, "score": 3}, 422),
        ({"request_id": "0", "thread_id": None, "score": 1}, 404),  # null is "not given"
        ({"request_id": None, "thread_id": "no-such-thread", "score": 1}, 404),
    ],
)
def test_null_feedback_targets_are_not_a_500(
    keyed_router: LocalProcess, body: dict[str, Any], status: int
) -> None:
    with _connect(keyed_router.url) as sock:
        got, _, reply = _exchange(
            sock, _request("POST", "/v1/feedback", orjson.dumps(body), CLIENT)
        )
    _error_message(got, reply, status)


# ---------------------------------------------------------------- a 500 keeps the connection


@pytest.mark.parametrize("path", ["/test/boom", "/test/boom-sync", "/test/boom-dependency"])
def test_after_a_500_the_keep_alive_connection_still_serves(
    inprocess_server: tuple[str, FastAPI], path: str
) -> None:
    url, _ = inprocess_server
    with _connect(url) as sock:
        for _ in range(2):
            status, headers, body = _exchange(sock, _request("GET", path))
            assert "internal error (_Boom)" in _error_message(status, body, 500)
            assert headers.get("connection", "keep-alive").lower() != "close"
            assert headers["content-type"] == "application/json"
            status, _, body = _exchange(sock, _request("GET", "/test/ok"))
            assert status == 200 and orjson.loads(body)["routes"] >= 1


def test_a_failing_chat_request_is_a_json_500_and_keeps_the_connection(
    inprocess_server: tuple[str, FastAPI],
) -> None:
    url, app = inprocess_server
    state = app.state.router
    routing = state.routing

    class BrokenRouting:
        @property
        def table(self) -> Any:
            raise _Boom("the routing table is broken")

    state.routing = BrokenRouting()
    chat = _request("POST", "/v1/chat/completions", orjson.dumps(CHAT))
    with _connect(url) as sock:
        status, _, body = _exchange(sock, chat)
        assert "internal error (_Boom)" in _error_message(status, body, 500)
        state.routing = routing
        status, _, body = _exchange(sock, chat)
        assert status == 200, body


def _read_chunked(sock: socket.socket) -> tuple[int, bytes]:
    """Read one chunked response: (status, the body's bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection; got {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    body = b""
    while True:
        while b"\r\n" not in rest:
            more = sock.recv(65536)
            if not more:
                raise ConnectionError(f"the server closed the stream mid-way; got {body!r}")
            rest += more
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        while len(rest) < size + 2:
            more = sock.recv(65536)
            if not more:
                raise ConnectionError(f"the server closed the stream mid-way; got {body!r}")
            rest += more
        body += rest[:size]
        rest = rest[size + 2 :]
        if size == 0:
            return int(head.split()[1]), body


def test_a_stream_failing_mid_way_ends_with_an_error_event_and_keeps_the_connection(
    inprocess_server: tuple[str, FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    from larrylab.router import _chat as chat

    def failing_chunk(*_: Any) -> bytes:
        raise _Boom("the relay failed")

    url, _ = inprocess_server
    monkeypatch.setattr(chat.OpenAIWire, "chunk", failing_chunk)
    streamed = _request("POST", "/v1/chat/completions", orjson.dumps({**CHAT, "stream": True}))
    with _connect(url) as sock:
        sock.sendall(streamed)
        status, body = _read_chunked(sock)
        assert status == 200
        error, end = body.split(b"\n\n")
        assert end == b""
        assert (
            "internal error (_Boom)"
            in orjson.loads(error.removeprefix(b"data: "))["error"]["message"]
        )
        monkeypatch.undo()
        status, _, reply = _exchange(
            sock, _request("POST", "/v1/chat/completions", orjson.dumps(CHAT))
        )
        assert status == 200, reply


def test_a_gemini_stream_failing_mid_way_ends_with_an_error_in_gemini_s_shape(
    inprocess_server: tuple[str, FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    from larrylab.router import _gemini as gemini

    def failing_chunk(*_: Any) -> bytes:
        raise _Boom("the relay failed")

    url, _ = inprocess_server
    monkeypatch.setattr(gemini.GeminiWire, "chunk", failing_chunk)
    body = {"contents": [{"role": "user", "parts": [{"text": "What problem am I solving?"}]}]}
    path = "/v1beta/models/larry:streamGenerateContent?alt=sse"
    with _connect(url) as sock:
        sock.sendall(_request("POST", path, orjson.dumps(body)))
        status, streamed = _read_chunked(sock)
    assert status == 200
    events = [e for e in streamed.split(b"\r\n\r\n") if e]
    assert len(events) == 1
    error = orjson.loads(events[0].removeprefix(b"data: "))["error"]
    assert error["code"] == 500 and error["status"] == "INTERNAL"
    assert "internal error (_Boom)" in error["message"]


# ---------------------------------------------------------------- database outage: 503


def _admin_calls() -> dict[tuple[str, str], tuple[str, dict[str, Any] | None]]:
    """A valid call of every admin operation: (method, templated path) -> (path, JSON body)."""
    arms = [
        {"model": "gemini-flash", "weight": 90, "control": True},
        {"model": "larry-v1", "weight": 10},
    ]
    model = {"api": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    return {
        ("GET", "/admin/experiments"): ("/admin/experiments", None),
        ("POST", "/admin/experiments"): (
            "/admin/experiments",
            {"name": "new", "route": "larry", "arms": arms},
        ),
        ("GET", "/admin/experiments/{name}"): ("/admin/experiments/larry-v1-vs-gemini", None),
        ("PATCH", "/admin/experiments/{name}"): (
            "/admin/experiments/larry-v1-vs-gemini",
            {"arms": arms},
        ),
        ("POST", "/admin/experiments/{name}/start"): (
            "/admin/experiments/larry-v1-vs-gemini/start",
            None,
        ),
        ("POST", "/admin/experiments/{name}/stop"): (
            "/admin/experiments/larry-v1-vs-gemini/stop",
            None,
        ),
        ("GET", "/admin/experiments/{name}/report"): (
            "/admin/experiments/larry-v1-vs-gemini/report",
            None,
        ),
        ("GET", "/admin/experiments/{name}/summary"): (
            "/admin/experiments/larry-v1-vs-gemini/summary",
            None,
        ),
        ("GET", "/admin/models"): ("/admin/models", None),
        ("POST", "/admin/models"): ("/admin/models", {"name": "other", **model}),
        ("GET", "/admin/models/{name}"): ("/admin/models/larry-v1", None),
        ("PUT", "/admin/models/{name}"): ("/admin/models/larry-v1", model),
        ("GET", "/admin/routes"): ("/admin/routes", None),
        ("PUT", "/admin/routes/{name}"): ("/admin/routes/larry", {"model": "gemini-flash"}),
        ("GET", "/admin/models/{name}/events"): ("/admin/models/larry-v1/events", None),
        ("POST", "/admin/models/{name}/transition"): (
            "/admin/models/larry-v1/transition",
            {"to_state": "retired", "reason": "test"},
        ),
        ("GET", "/admin/models/{name}/evals"): ("/admin/models/larry-v1/evals", None),
        ("GET", "/admin/models/{name}/gate"): ("/admin/models/larry-v1/gate", None),
        ("GET", "/admin/models/{name}/readiness"): (
            "/admin/models/larry-v1/readiness?route=larry",
            None,
        ),
        ("POST", "/admin/models/{name}/promote"): (
            "/admin/models/larry-v1/promote",
            {"route": "larry"},
        ),
        ("POST", "/admin/routes/{name}/rollback"): (
            "/admin/routes/larry/rollback",
            {"reason": "t"},
        ),
        ("GET", "/admin/rollouts"): ("/admin/rollouts", None),
        ("POST", "/admin/rollouts/tick"): ("/admin/rollouts/tick", None),
        ("GET", "/admin/audit"): ("/admin/audit", None),
    }


@pytest.mark.postgres
def test_every_admin_operation_is_a_503_while_the_database_is_down(
    tmp_path: Path, fast_sim: LocalProcess, postgres_url: str
) -> None:
    upgrade(postgres_url)
    parsed = make_url(postgres_url)
    proxy = TcpProxy(parsed.port or 5432)
    proxy.start()
    url = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    config = write_config(
        tmp_path / "larrylab.yaml", control_url=fast_sim.url, candidate_url=fast_sim.url
    )
    env = {
        **KEYS,
        "LARRYLAB_SPILL_DIR": str(tmp_path / "spill"),
        "LARRYLAB_JOURNAL_DIR": str(tmp_path / "spill" / "journal"),
    }
    router = start_router(log_dir=tmp_path, database_url=url, config=config, env=env)
    try:
        with httpx.Client(base_url=router.url, timeout=30) as http:
            schema = http.get("/openapi.json").json()
            operations = {
                (method.upper(), path)
                for path, ops in schema["paths"].items()
                if path.startswith("/admin")
                for method in ops
            }
            calls = _admin_calls()
            assert operations == set(calls), "every admin operation needs a call in this test"
            assert http.get("/admin/experiments", headers=ADMIN).status_code == 200
            proxy.cut()
            for method, path in sorted(calls):
                target, body = calls[(method, path)]
                r = http.request(method, target, json=body, headers=ADMIN)
                assert r.status_code == 503, f"{method} {target}: {r.status_code} {r.text}"
                assert int(r.headers["retry-after"]) > 0
                assert "database" in r.json()["error"]["message"]
            rated = http.post("/v1/feedback", json={"thread_id": "t", "score": 5}, headers=CLIENT)
            assert rated.status_code in (202, 503), rated.text  # kept locally, or retry later
            assert http.get("/v1/models", headers=CLIENT).status_code == 200
            proxy.start()  # back: admin answers again
            deadline = time.monotonic() + 30
            while http.get("/admin/experiments", headers=ADMIN).status_code != 200:
                assert time.monotonic() < deadline, "the admin API did not recover"
                time.sleep(0.2)
    finally:
        router.stop()
        proxy.cut()


def test_database_errors_are_told_apart_even_when_wrapped() -> None:
    import sqlite3

    import psycopg
    from sqlalchemy import exc as sa_exc

    from larrylab.router._errors import database_unavailable, refused_value

    refused = sa_exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("refused"))
    try:
        try:
            raise refused
        except sa_exc.OperationalError as inner:
            raise RuntimeError("loading the table failed") from inner
    except RuntimeError as outer:
        wrapped = outer
    assert database_unavailable(refused) and database_unavailable(wrapped)
    assert database_unavailable(ExceptionGroup("tasks", [ValueError(), refused]))
    assert database_unavailable(sqlite3.OperationalError("unable to open database file"))
    assert database_unavailable(sa_exc.TimeoutError("QueuePool limit reached"))
    nul = sa_exc.DataError("INSERT", {}, psycopg.DataError("cannot contain NUL (0x00) bytes"))
    for other in (ValueError("x"), sa_exc.IntegrityError("INSERT", {}, ValueError()), nul):
        assert not database_unavailable(other)
    assert refused_value(nul) is nul and refused_value(refused) is None


@pytest.mark.postgres
def test_a_value_postgresql_refuses_is_a_422(
    tmp_path: Path, fast_sim: LocalProcess, postgres_url: str
) -> None:
    upgrade(postgres_url)
    config = write_config(
        tmp_path / "larrylab.yaml", control_url=fast_sim.url, candidate_url=fast_sim.url
    )
    env = {
        "LARRYLAB_SPILL_DIR": str(tmp_path / "spill"),
        "LARRYLAB_JOURNAL_DIR": str(tmp_path / "spill" / "journal"),
    }
    router = start_router(log_dir=tmp_path, database_url=postgres_url, config=config, env=env)
    try:
        with httpx.Client(base_url=router.url, timeout=30) as http:
            for path in ("/admin/rollouts", "/admin/experiments"):
                r = http.get(path, params={"route": "a\x00b"})  # PostgreSQL text has no NUL
                assert r.status_code == 422, r.text
                assert "NUL" in r.json()["error"]["message"]
    finally:
        router.stop()


# ---------------------------------------------------------------- bodies: key first, bounded


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _send_until_answered(
    sock: socket.socket, head: bytes, total: int, chunked: bool = False
) -> tuple[int, dict[str, str], bytes, int]:
    """Send `head`, then up to `total` body bytes in 256 KiB pieces until the server answers;
    return the response and how many body bytes had gone out when it came."""
    sock.sendall(head)
    sock.settimeout(0.05)
    piece = b"x" * (256 * 1024)
    sent = 0
    while sent < total:
        try:
            peek = sock.recv(1, socket.MSG_PEEK)
        except (TimeoutError, BlockingIOError):
            peek = None
        if peek:
            break
        data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
        try:
            sock.settimeout(5)
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            break
        finally:
            sock.settimeout(0.05)
        sent += len(piece)
    sock.settimeout(30)
    status, headers, body = _read_response(sock)
    return status, headers, body, sent


def _head(path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: test", "content-type: application/json"]
    lines.append(
        f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
    )
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


FIFTY_MB = 50 * 1024 * 1024


@pytest.mark.parametrize("path", ["/admin/experiments", "/v1/feedback", "/admin/models/x/promote"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("key", [None, "wrong"], ids=["no-key", "wrong-key"])
def test_an_unauthenticated_huge_body_is_refused_before_it_is_read(
    keyed_router: LocalProcess, path: str, chunked: bool, key: str | None
) -> None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    rss_before = _rss_kib(keyed_router.proc.pid)
    with _connect(keyed_router.url) as sock:
        head = _head(path, headers, None if chunked else FIFTY_MB)
        status, reply_headers, body, sent = _send_until_answered(sock, head, FIFTY_MB, chunked)
    assert "key" in _error_message(status, body, 401).lower()
    assert sent < FIFTY_MB // 2, f"the server answered only after {sent} body bytes"
    assert reply_headers.get("connection", "").lower() == "close"  # the rest is not wanted
    assert _rss_kib(keyed_router.proc.pid) - rss_before < 20 * 1024


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ["/admin/experiments", "/v1/feedback"])
def test_an_authenticated_body_over_the_limit_is_a_413(
    keyed_router: LocalProcess, path: str, chunked: bool
) -> None:
    size = 5 * 1024 * 1024
    headers = ADMIN if path.startswith("/admin") else CLIENT
    with _connect(keyed_router.url) as sock:
        head = _head(path, headers, None if chunked else size)
        status, reply_headers, body, sent = _send_until_answered(sock, head, size, chunked)
    assert "larger than the limit" in _error_message(status, body, 413)
    assert sent < size, "the server read the whole body before refusing it"
    assert reply_headers.get("connection", "").lower() == "close"


def test_small_bodies_and_keys_still_work_on_one_connection(keyed_router: LocalProcess) -> None:
    with _connect(keyed_router.url) as sock:
        status, _, body = _exchange(sock, _request("GET", "/admin/experiments", headers=ADMIN))
        assert status == 200, body
        # a refused small body leaves the connection usable
        refused = _request("POST", "/admin/routes/larry", b"{}", {"authorization": "Bearer x"})
        status, headers, body = _exchange(sock, refused.replace(b"POST", b"PUT", 1))
        assert status == 401 and headers.get("connection", "").lower() != "close"
        status, _, body = _exchange(sock, _request("GET", "/v1/models", headers=CLIENT))
        assert status == 200, body
        status, _, body = _exchange(sock, _request("GET", "/v1/models"))
        assert "missing API key" in _error_message(status, body, 401)
        feedback = orjson.dumps({"thread_id": "nobody", "score": 4, "comment": "y" * 10_000})
        status, _, body = _exchange(sock, _request("POST", "/v1/feedback", feedback, CLIENT))
        assert status == 404, body
        status, _, body = _exchange(sock, _request("GET", "/healthz"))
        assert status == 200, body
