"""A loopback HTTP server speaking the part of Ollama's API that `ollama create` uses.

- `HEAD /api/blobs/:digest`: 200 when the blob is stored, 404 otherwise.
- `POST /api/blobs/:digest`: stores the body when its SHA-256 matches the digest (201), else
  400 like Ollama.
- `POST /api/create`: checks that `from` or `files` is given and that every digest in `files`
  and `adapters` was uploaded, then answers `{"status": "success"}` (or NDJSON progress when
  streaming). With `refuse_adapters`, it answers like Ollama 0.34.1 and later: 400
  "LoRA adapters are no longer supported".

It records every request so tests can assert on what the client sent.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakeOllamaState:
    """What the fake server stores and saw."""

    refuse_adapters: bool = False
    blobs: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    creates: list[dict[str, Any]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, status: int, payload: Any = None, *, ndjson: list[Any] | None = None) -> None:
        self.server.state.requests.append((self.command, self.path, status))
        if ndjson is not None:
            body = b"".join(json.dumps(line).encode() + b"\n" for line in ndjson)
            ctype = "application/x-ndjson"
        else:
            body = json.dumps(payload).encode() if payload is not None else b""
            ctype = "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        digest = self.path.removeprefix("/api/blobs/")
        self._reply(200 if digest in self.server.state.blobs else 404)

    def do_POST(self) -> None:
        body = self._body()
        if self.path.startswith("/api/blobs/"):
            digest = self.path.removeprefix("/api/blobs/")
            if f"sha256:{hashlib.sha256(body).hexdigest()}" != digest:
                return self._reply(400, {"error": "digest mismatch"})
            self.server.state.blobs[digest] = body
            return self._reply(201)
        if self.path == "/api/create":
            return self._create(json.loads(body or b"{}"))
        return self._reply(404, {"error": "not found"})

    def _create(self, req: dict[str, Any]) -> None:
        state = self.server.state
        state.creates.append(req)
        if req.get("adapters") and state.refuse_adapters:
            return self._reply(400, {"error": "LoRA adapters are no longer supported"})
        if not req.get("from") and not req.get("files"):
            return self._reply(400, {"error": "neither 'from' or 'files' was specified"})
        for digest in [*(req.get("files") or {}).values(), *(req.get("adapters") or {}).values()]:
            if digest not in state.blobs:
                return self._reply(400, {"error": f"blob {digest} not found"})
        if req.get("stream", True):
            return self._reply(200, ndjson=[{"status": "writing manifest"}, {"status": "success"}])
        return self._reply(200, {"status": "success"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: FakeOllamaState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class FakeOllama:
    """Run the fake server in a thread: `with FakeOllama() as fake: fake.url`."""

    def __init__(self, *, refuse_adapters: bool = False) -> None:
        self.state = FakeOllamaState(refuse_adapters=refuse_adapters)
        self._server = _Server(self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeOllama:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
