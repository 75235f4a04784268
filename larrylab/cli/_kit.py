"""What every `larrylab` command shares: options, settings, sessions, errors as sentences."""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from larrylab.config import ConfigError, Settings

T = TypeVar("T")
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
DbOpt = Annotated[
    str | None, typer.Option("--database-url", help="Overrides LARRYLAB_DATABASE_URL.")
]
PORT_MAX = 65535

# How `os_error_sentence` words the file-system errors a command most often meets.
_OS_REASONS = {
    errno.ENOTDIR: "part of the path is a file, not a folder",
    errno.EEXIST: "it exists and is not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
}


def check_port(port: int) -> int:
    """A `--port` callback: refuse numbers outside 0..65535 with one sentence."""
    if not 0 <= port <= PORT_MAX:
        raise typer.BadParameter(f"{port} is not a TCP port: use 0 to {PORT_MAX}")
    return port


def port_option(help_text: str) -> Any:
    """A `--port` option that refuses numbers outside 0..65535 (0: any free port)."""
    return typer.Option("--port", callback=check_port, help=f"{help_text} (0: any free port).")


def console() -> Console:
    """A console; wide enough for the rendered reports when output is not a terminal."""
    return Console(width=None if sys.stdout.isatty() else 160)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear sentence to stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_from(database_url: str | None = None, config: Path | None = None) -> Settings:
    """Settings from the environment, with a command's options taking precedence."""
    overrides: dict[str, Any] = {}
    if database_url:
        overrides["database_url"] = database_url
    if config:
        overrides["config"] = config
    try:
        return Settings(**overrides)
    except Exception as exc:  # pydantic ValidationError on a bad LARRYLAB_* variable
        fail(f"invalid setting: {exc}")


def _os_reason(exc: OSError) -> str:
    """Why an OSError happened, in lower-case words (no errno, no path)."""
    return _OS_REASONS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()


def os_error_sentence(exc: OSError) -> str:
    """An OSError as one sentence naming the path: "cannot use PATH: REASON"."""
    reason = _os_reason(exc)
    return f"cannot use {exc.filename}: {reason}" if exc.filename else reason


def error_sentence(exc: ValueError) -> str:
    """A ValueError on one line; a pydantic ValidationError as `field: problem; ...`."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or exc.title}: {e['msg']}" for e in exc.errors()
        ]
        return f"invalid {exc.title}: " + "; ".join(problems)
    return str(exc)


def guard(fn: Callable[[], T]) -> T:
    """Run `fn`, turning expected errors into a sentence and an exit code."""
    from larrylab.db import DatabaseURLError
    from larrylab.experiments import ConflictError, NotFoundError
    from larrylab.release import StoreNotReadyError

    try:
        return fn()
    except (ConfigError, DatabaseURLError, StoreNotReadyError) as exc:
        fail(str(exc))
    except NotFoundError as exc:
        fail(str(exc), code=3)
    except (ConflictError, ValueError) as exc:
        fail(error_sentence(exc))
    except OSError as exc:
        fail(os_error_sentence(exc), code=1)
    except Exception as exc:
        if type(exc).__module__.startswith("sqlalchemy"):
            fail(f"database error: {str(exc).splitlines()[0]}", code=1)
        raise


def json_safe(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None (strict JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """Print `value` as indented, strict JSON (the `--json` output of every command)."""
    typer.echo(json.dumps(json_safe(value), indent=2, default=str, allow_nan=False))


def writable_folder(path: Path, option: str = "--out") -> Path:
    """`path` if it is, or can be made, a folder this process can write in; else fail.

    Nothing is created: the check looks at `path` or its nearest existing parent.
    """
    try:
        if path.exists() and not path.is_dir():
            fail(f"{option} {path}: is a file, not a folder")
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            fail(f"{option} {path}: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            fail(f"cannot write to {existing}: permission denied")
    except OSError as exc:
        fail(f"{option} {path}: {os_error_sentence(exc)}")
    return path


def url_host(host: str) -> str:
    """`host` as written in a URL: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def bindable_port(host: str, port: int) -> int:
    """Bind `host:port` as uvicorn does (SO_REUSEADDR) and let it go again; the port bound
    (a free one for 0). Fails with a sentence when the port is taken or the host unusable."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            bound: int = sock.getsockname()[1]
            return bound
    except socket.gaierror:
        fail(f"cannot bind {host}: no such host or address")
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            fail(f"port {port} on {host} is already in use", code=1)
        fail(f"cannot bind port {port} on {host}: {_os_reason(exc)}", code=1)


def open_session(database_url: str | None) -> Any:
    """A database session (a context manager) on the configured or given database."""
    from sqlmodel import Session

    from larrylab.db import make_engine

    settings = settings_from(database_url)
    return Session(guard(lambda: make_engine(settings.database_url)))
