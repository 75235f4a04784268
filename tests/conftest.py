"""Shared fixtures: databases (SQLite and PostgreSQL), simulated upstreams, config files."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from sqlalchemy.engine import make_url

from larrylab.db._engine import make_engine, normalize_url, upgrade
from larrylab.localproc import LocalProcess, free_port, start_sim
from larrylab.requestlog._spill import Quarantine
from larrylab.requestlog._store import BatchStore, RequestRecord

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

PG_ENV = "LARRYLAB_TEST_POSTGRES_URL"


def _postgres_base() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("LARRYLAB_REQUIRE_POSTGRES"):
            pytest.fail(f"{PG_ENV} is not set but LARRYLAB_REQUIRE_POSTGRES is")
        pytest.skip(f"{PG_ENV} is not set")
    return normalize_url(url)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    base = make_url(_postgres_base())
    name = f"larrylab_test_{uuid.uuid4().hex[:12]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: SQLite in a temporary folder, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'larrylab.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """A database migrated to the newest schema."""
    upgrade(database_url)
    return database_url


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's simulators write their logs."""
    return tmp_path_factory.mktemp("sims")


def _session_sim(sim_dir: Path, label: str, *extra: str) -> Iterator[LocalProcess]:
    proc = start_sim(log_dir=sim_dir, label=label, extra=list(extra))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def fast_sim(sim_dir: Path) -> Iterator[LocalProcess]:
    """A healthy, fast simulated upstream (shaped like a local fine-tune)."""
    yield from _session_sim(sim_dir, "fast", "--ttft-ms", "5", "--tokens-per-s", "0", "--seed", "1")


@pytest.fixture(scope="session")
def broken_sim(sim_dir: Path) -> Iterator[LocalProcess]:
    """A simulated upstream that always answers HTTP 503 before any byte."""
    yield from _session_sim(
        sim_dir, "broken", "--error-rate", "1", "--error-status", "503", "--ttft-ms", "1"
    )


@pytest.fixture(scope="session")
def dropping_sim(sim_dir: Path) -> Iterator[LocalProcess]:
    """A simulated upstream that cuts every stream after a few chunks."""
    yield from _session_sim(
        sim_dir, "dropping", "--drop-rate", "1", "--ttft-ms", "1", "--tokens-per-s", "0"
    )


def write_records(url: str, records: list[RequestRecord], *, batch_size: int = 7) -> None:
    """Store `records` as the indexer does, in small batches."""
    engine = make_engine(url)
    store = BatchStore(engine, Quarantine(Path(tempfile.gettempdir()) / "larrylab-quarantine"))
    for start in range(0, len(records), batch_size):
        store.write(records[start : start + batch_size])
    engine.dispose()


def write_config(
    path: Path,
    *,
    control_url: str,
    candidate_url: str,
    candidate_weight: int = 50,
    seed: str | None = None,
) -> Path:
    """A YAML config with two models and one experiment on route `larry`."""
    seed_line = f", seed: {seed}" if seed else ""
    path.write_text(
        "models:\n"
        f"  gemini-flash: {{api: openai, base_url: {control_url}/v1, model: gemini-2.5-flash}}\n"
        f"  larry-v1: {{api: openai, base_url: {candidate_url}/v1, model: larry-v1}}\n"
        "routes:\n"
        "  larry: {model: gemini-flash}\n"
        "experiments:\n"
        "  - {name: larry-v1-vs-gemini, route: larry" + seed_line + ", arms: ["
        f"{{model: gemini-flash, weight: {100 - candidate_weight}, control: true}}, "
        f"{{model: larry-v1, weight: {candidate_weight}}}]}}\n"
    )
    return path


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """An ASGI app served by uvicorn on a free loopback port in a thread; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
