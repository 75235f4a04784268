"""HTTPS upstreams, CONNECT proxies and failures that name their cause, through the router.

Real servers on loopback, in a thread with its own event loop: an OpenAI-compatible upstream
over TLS with a certificate from a test CA (`trustme`), the same with a certificate for another
host name, and a CONNECT proxy that alone can resolve `upstream.invalid` (to 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import ssl
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
import trustme
from aiohttp import web
from fastapi.testclient import TestClient
from pydantic import ValidationError

from larrylab.config import ModelSpec, Settings
from larrylab.release._prepare import prepare_store
from larrylab.router._app import create_app

T = TypeVar("T")
CHAT = {"messages": [{"role": "user", "content": "What problem am I solving?"}]}
CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"secure hello"}}]}\n\n'
REPLY = {
    "id": "up-1",
    "object": "chat.completion",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "secure hello"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2},
}


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        return web.json_response(REPLY)
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(CHUNK)
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def _free_port() -> int:
    """A loopback port nothing listens on (a connect to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Servers:
    """The test's servers, on an event loop in a thread."""

    def __init__(self, tmp: Path) -> None:
        ca = trustme.CA()
        self.ca_file = tmp / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.good = self._context(ca.issue_cert("127.0.0.1", "localhost", "upstream.invalid"))
        self.bad = self._context(ca.issue_cert("elsewhere.example"))
        self.tunnels: list[str] = []  # the authorities the proxy was asked to CONNECT to
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @staticmethod
    def _context(cert: trustme.LeafCert) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        return context

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _start(self) -> tuple[int, int, int]:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", _chat)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        ports = []
        for context in (self.good, self.bad):
            site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        self.proxy = await asyncio.start_server(self._tunnel, "127.0.0.1", 0)
        return ports[0], ports[1], self.proxy.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self.proxy.close()
        await self.runner.cleanup()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A CONNECT proxy: `upstream.invalid` is 127.0.0.1 here, and only here."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, authority, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                return
            self.tunnels.append(authority)
            host, port = authority.rsplit(":", 1)
            host = {"upstream.invalid": "127.0.0.1"}.get(host, host)
            try:
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
            except OSError:
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def __enter__(self) -> Servers:
        self.thread.start()
        self.port, self.bad_port, self.proxy_port = self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    with Servers(tmp_path) as s:
        yield s


def _config(path: Path, s: Servers) -> Path:
    limits = "connect_timeout_s: 2, first_token_timeout_s: 5, total_timeout_s: 10"
    ca = f"ca_file: {s.ca_file}"
    models = {
        "secure": f"base_url: https://127.0.0.1:{s.port}/v1, {ca}",
        "untrusted": f"base_url: https://127.0.0.1:{s.port}/v1",
        "misnamed": f"base_url: https://127.0.0.1:{s.bad_port}/v1, {ca}",
        "unverified": f"base_url: https://127.0.0.1:{s.bad_port}/v1, verify: false",
        "hidden": f"base_url: https://upstream.invalid:{s.port}/v1, {ca}",
        "refused": f"base_url: http://127.0.0.1:{_free_port()}/v1",
    }
    lines = [
        f"  {name}: {{api: openai, model: up, {spec}, {limits}}}" for name, spec in models.items()
    ]
    path.write_text("models:\n" + "\n".join(lines) + "\n")
    return path


@contextmanager
def _router(tmp_path: Path, s: Servers) -> Iterator[TestClient]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        config=_config(tmp_path / "c.yaml", s),
        spill_dir=str(tmp_path / "spill"),
    )
    prepare_store(settings)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _ask(client: TestClient, model: str, *, stream: bool = False) -> tuple[int, str]:
    """The status, and the reply's text or the error's message."""
    r = client.post("/v1/chat/completions", json={**CHAT, "model": model, "stream": stream})
    if r.status_code != 200:
        return r.status_code, r.json()["error"]["message"]
    if stream:
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: {")]
        return 200, "".join(orjson.loads(e)["choices"][0]["delta"]["content"] for e in events)
    return 200, r.json()["choices"][0]["message"]["content"]


def _rows(tmp_path: Path) -> dict[str, tuple[Any, ...]]:
    """Each model's last row: (status, http_status, error_class, error_message)."""
    sql = "SELECT model, status, http_status, error_class, error_message FROM request"
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        return {r[0]: r[1:] for r in conn.execute(sql + " ORDER BY created_at")}


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_https_upstreams_and_failures_that_name_their_cause(
    tmp_path: Path, servers: Servers
) -> None:
    port, bad = servers.port, servers.bad_port
    with _router(tmp_path, servers) as client:
        assert _ask(client, "secure") == (200, "secure hello")
        assert _ask(client, "secure", stream=True) == (200, "secure hello")
        assert _ask(client, "unverified") == (200, "secure hello")
        answers = {m: _ask(client, m) for m in ("untrusted", "misnamed", "hidden", "refused")}
    assert servers.tunnels == []
    rows = _rows(tmp_path)
    expected = {
        "untrusted": (
            "tls",
            f"TLS certificate of 127.0.0.1:{port} for model 'untrusted' failed verification: "
            "unable to get local issuer certificate",
        ),
        "misnamed": (
            "tls",
            f"TLS certificate of 127.0.0.1:{bad} for model 'misnamed' failed verification: "
            "IP address mismatch, certificate is not valid for '127.0.0.1'.",
        ),
        "hidden": ("dns", "cannot resolve host 'upstream.invalid' for model 'hidden': "),
        "refused": ("connect", "cannot connect to model 'refused' at 127.0.0.1:"),
    }
    for model, (error_class, message) in expected.items():
        status, said = answers[model]
        assert status == 502 and said.startswith(message), (model, said)
        assert rows[model] == ("error", 502, error_class, said), rows[model]
    assert answers["refused"][1].endswith(": connection refused")
    assert rows["secure"][:3] == ("ok", 200, None)


def test_a_model_reached_only_through_a_connect_proxy(
    tmp_path: Path, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{servers.proxy_port}")
    with _router(tmp_path, servers) as client:
        assert _ask(client, "hidden") == (200, "secure hello")
        assert _ask(client, "hidden", stream=True) == (200, "secure hello")
        # Through the tunnel the certificate is still verified end to end.
        status, message = _ask(client, "untrusted")
    assert status == 502 and "failed verification: unable to get local issuer" in message
    assert f"upstream.invalid:{servers.port}" in servers.tunnels
    assert _rows(tmp_path)["hidden"][:3] == ("ok", 200, None)


def test_no_proxy_sends_a_host_around_the_proxy(
    tmp_path: Path, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{servers.proxy_port}")
    monkeypatch.setenv("NO_PROXY", "upstream.invalid")
    with _router(tmp_path, servers) as client:
        status, message = _ask(client, "hidden")
    assert status == 502 and message.startswith("cannot resolve host 'upstream.invalid'")
    assert servers.tunnels == []


def test_a_proxy_that_cannot_be_reached_is_named(
    tmp_path: Path, servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{_free_port()}")
    with _router(tmp_path, servers) as client:
        status, message = _ask(client, "secure")
    assert status == 502 and message.startswith("cannot connect to the proxy 127.0.0.1:")
    assert _rows(tmp_path)["secure"][2] == "proxy"


def test_ca_file_is_checked_when_the_config_is_read(tmp_path: Path) -> None:
    url = "https://127.0.0.1:1/v1"
    with pytest.raises(ValidationError, match=r"ca_file '.*nowhere\.pem' does not exist"):
        ModelSpec(base_url=url, ca_file=str(tmp_path / "nowhere.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValidationError, match="holds no PEM CA certificate"):
        ModelSpec(base_url=url, ca_file=str(junk))
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    spec = ModelSpec(base_url=url, ca_file=str(ca), verify=True)
    assert spec.ca_file == str(ca.resolve()) and spec.verify
