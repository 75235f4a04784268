"""What every `larrylab` command shares: options, settings, sessions, errors as sentences."""

from __future__ import annotations

import json
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


def console() -> Console:
    """A console; wide enough for the tables when output is not a terminal."""
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


def guard(fn: Callable[[], T]) -> T:
    """Run `fn`, turning expected errors into a sentence and an exit code."""
    from larrylab.platform.db import DatabaseURLError
    from larrylab.platform.experiments import ConflictError, NotFoundError
    from larrylab.platform.service import StoreNotReadyError

    try:
        return fn()
    except (ConfigError, DatabaseURLError, StoreNotReadyError) as exc:
        fail(str(exc))
    except NotFoundError as exc:
        fail(str(exc), code=3)
    except (ConflictError, ValueError) as exc:
        fail(str(exc))
    except Exception as exc:
        if type(exc).__module__.startswith("sqlalchemy"):
            fail(f"database error: {str(exc).splitlines()[0]}", code=1)
        raise


def print_json(value: Any) -> None:
    """Print `value` as indented JSON (the `--json` output of every command)."""
    typer.echo(json.dumps(value, indent=2, default=str))


def open_session(database_url: str | None) -> Any:
    """A database session (a context manager) on the configured or given database."""
    from sqlmodel import Session

    from larrylab.platform.db import make_engine

    settings = settings_from(database_url)
    return Session(guard(lambda: make_engine(settings.database_url)))
