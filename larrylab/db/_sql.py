"""Small SQL helpers shared by the store's writers (dialect-specific upserts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite


def insert_for(engine: Engine) -> Callable[[Any], Any]:
    """The dialect's `insert` construct, which supports ON CONFLICT for SQLite and PostgreSQL."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert
    return sqlite.insert
