"""Fixtures of the importer tests: empty Chainlit databases, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_ENV
from tests.importers.factories import create_chainlit_schema


@pytest.fixture
def chainlit_sqlite(tmp_path: Path) -> str:
    """A SQLite database with Chainlit's tables and no rows."""
    url = f"sqlite:///{tmp_path / 'chainlit.db'}"
    create_chainlit_schema(url)
    return url


@pytest.fixture
def chainlit_postgres() -> Iterator[str]:
    """A fresh PostgreSQL database (`chainlit_<random>` on the test server) with Chainlit's
    documented schema and no rows, dropped afterwards."""
    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("LARRYLAB_REQUIRE_POSTGRES"):
            pytest.fail(f"{PG_ENV} is not set but LARRYLAB_REQUIRE_POSTGRES is")
        pytest.skip(f"{PG_ENV} is not set: the Chainlit database of this test is PostgreSQL")
    server = make_url(base).set(drivername="postgresql")
    admin = server.render_as_string(hide_password=False)
    name = f"chainlit_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        create_chainlit_schema(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
