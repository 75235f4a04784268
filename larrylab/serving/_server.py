"""Run `transformers serve` on one local model folder as a child process on loopback.

The server is pinned to the folder (`transformers serve FOLDER`): it loads the model before it
listens and answers only to the folder's path as the `model` of a request, or to none. It speaks
OpenAI's chat completions, JSON and streaming, with usage in the last chunk when a request
asks for `stream_options.include_usage`; its streams end after their finish chunk without
`data: [DONE]`, which the router accepts (as the openai client does).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from larrylab.serving._folder import check_model_folder

_LAUNCH = "from transformers.cli.transformers import main; main()"


class ServeModelError(RuntimeError):
    """The model server could not start or stopped; the message is one sentence."""


@dataclass
class ModelServer:
    """A running `transformers serve` child process serving one model folder on `port`."""

    folder: Path
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """The server's root URL, e.g. http://127.0.0.1:8600."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to configure (the root URL with /v1)."""
        return f"{self.url}/v1"

    @property
    def model(self) -> str:
        """The `model` the server answers to: the folder's absolute path."""
        return str(self.folder)

    def config_entry(self) -> dict[str, str]:
        """The `models:` entry that registers this server in larrylab's config."""
        return {"api": "openai", "base_url": self.base_url, "model": self.model}

    def config_yaml(self, name: str) -> str:
        """The `models:` entry as one YAML line under the name `name`."""
        fields = ", ".join(f"{k}: {_yaml_scalar(v)}" for k, v in self.config_entry().items())
        return f"{name}: {{{fields}}}"

    def log(self) -> str:
        """What the server has printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def poll(self) -> int | None:
        """The exit code if the server has exited, else None."""
        return self.proc.poll()

    def stop(self, timeout: float = 20.0) -> int:
        """Stop the server and its model process (SIGTERM, then SIGKILL); its exit code."""
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if not self._stopped:
            _signal_group(self.proc.pid, signal.SIGKILL)  # a model process left behind
            self._stopped = True
        return int(self.proc.returncode)

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _yaml_scalar(value: str) -> str:
    plain = value and all(c.isalnum() or c in "/._-:" for c in value)
    return value if plain else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def check_serving_installed() -> None:
    """ServeModelError unless `transformers serve`'s dependencies are installed."""
    try:
        from transformers.utils.import_utils import is_serve_available
    except ImportError:
        raise ServeModelError(
            "transformers is not installed: pip install 'transformers[serving]'"
        ) from None
    if not is_serve_available():
        raise ServeModelError(
            "transformers serve needs fastapi, uvicorn and openai: "
            "pip install 'transformers[serving]'"
        )


def pick_port(host: str, port: int) -> int:
    """`port` if it can be bound on `host` now (a free one for 0); ServeModelError if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            return int(sock.getsockname()[1])
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ServeModelError(f"port {port} on {host} is already in use") from None
        raise ServeModelError(f"cannot bind port {port} on {host}: {exc.strerror}") from None


def serve_command(folder: Path, host: str, port: int, extra: list[str]) -> list[str]:
    """The `transformers serve` command line pinned to `folder`, on the CPU."""
    return [
        sys.executable,
        "-c",
        _LAUNCH,
        "serve",
        str(folder),
        "--host",
        host,
        "--port",
        str(port),
        "--device",
        "cpu",
        "--log-level",
        "warning",
        *extra,
    ]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _ready(server: ModelServer) -> bool:
    try:
        health = httpx.get(f"{server.url}/health", timeout=1.0)
        if health.status_code != 200:
            return False
        models: Any = httpx.get(f"{server.url}/v1/models", timeout=1.0).json()
    except (httpx.HTTPError, ValueError):
        return False
    ids = [m.get("id") for m in models.get("data", []) if isinstance(m, dict)]
    return server.model in ids


def start_model_server(
    folder: Path | str,
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    timeout: float = 180.0,
    extra_args: list[str] | None = None,
) -> ModelServer:
    """Start `transformers serve` on `folder` and wait until it answers with the model loaded.

    `port` (0: a free one) on `host` (loopback by default: the server has no authentication).
    The server's output goes to `log_path` (default: a file
    `transformers-serve-<port>.log` in the system's temporary folder). ModelFolderError for a
    folder that cannot be served, ServeModelError when the port is taken, the server exits or
    does not answer within `timeout` seconds.
    """
    path = check_model_folder(Path(folder))
    check_serving_installed()
    port = pick_port(host, port)
    if log_path is None:
        import tempfile

        log_path = Path(tempfile.gettempdir()) / f"transformers-serve-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            serve_command(path, host, port, extra_args or []),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    server = ModelServer(path, host, port, proc, log_path)
    try:
        _wait_until_ready(server, timeout)
    except BaseException:  # Ctrl-C while loading included: leave no server behind
        server.stop()
        raise
    return server


def _wait_until_ready(server: ModelServer, timeout: float) -> None:
    """Wait for the model to load; ServeModelError if the server exits or does not answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = server.poll()
        if code is not None:
            raise ServeModelError(
                f"transformers serve exited with code {code}: {_last_line(server.log())} "
                f"(log: {server.log_path})"
            )
        if _ready(server):
            return
        time.sleep(0.2)
    raise ServeModelError(
        f"transformers serve did not answer within {timeout:.0f}s (log: {server.log_path})"
    )
