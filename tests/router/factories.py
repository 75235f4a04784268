"""The router in-process (FastAPI TestClient) on a fresh SQLite store, and error checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from larrylab.config import Settings
from larrylab.localproc import LocalProcess
from larrylab.release._prepare import prepare_store
from larrylab.router._app import create_app
from tests.conftest import write_config

CHAT = {"model": "larry", "messages": [{"role": "user", "content": "What problem am I solving?"}]}


def router_client(tmp_path: Path, sim: LocalProcess, **settings: Any) -> Iterator[TestClient]:
    """A TestClient of a router on a new SQLite store, its config pointing at `sim`."""
    config = write_config(tmp_path / "larrylab.yaml", control_url=sim.url, candidate_url=sim.url)
    s = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        config=config,
        max_body_bytes=64 * 1024,
        **settings,
    )
    prepare_store(s)
    with TestClient(create_app(s), raise_server_exceptions=False) as client:
        yield client


def error_message(resp: Any, status: int) -> str:
    """Assert `resp` is an OpenAI-shaped error with `status`; its message."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body["error"]) >= {"message", "type"}
    message: str = body["error"]["message"]
    assert message
    return message
