"""Database engines and migrations (SQLite with WAL and a busy timeout, or PostgreSQL)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
# The request-log indexer's SQLite settings (`bench/results/store_write_cost.md` measures them).
BULK_WRITER_CACHE_KIB = 64 * 1024
BULK_WRITER_CHECKPOINT_PAGES = 20_000  # about 80 MB of WAL between checkpoints
BULK_WRITER_WAL_LIMIT_BYTES = 64 * 1024 * 1024  # the WAL file is cut back to this after one


class DatabaseURLError(ValueError):
    """A database URL larrylab cannot use."""


def normalize_url(url: str) -> str:
    """Return `url` with the driver larrylab uses (psycopg 3 for PostgreSQL)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseURLError(f"not a database URL: {url!r}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseURLError(
            f"unsupported database {parsed.get_backend_name()!r}: use SQLite or PostgreSQL"
        )
    return parsed.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    """Whether `url` names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (None for other databases and in-memory SQLite)."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_bulk_writer_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA cache_size=-{BULK_WRITER_CACHE_KIB}")
    cur.execute(f"PRAGMA wal_autocheckpoint={BULK_WRITER_CHECKPOINT_PAGES}")
    cur.execute(f"PRAGMA journal_size_limit={BULK_WRITER_WAL_LIMIT_BYTES}")
    cur.close()


def _cheap_sqlite_binding() -> None:
    """Register what Python's sqlite3 binds None and bool as, which it already binds them as.

    Python 3.11's sqlite3 adapts every parameter that is not exactly an int, float, str or
    bytearray: for None and bool, a registry miss and two failed attribute lookups whose
    AttributeError text is formatted and dropped, about half a microsecond per value (measured:
    1.2 against 2.3 us per 7-column row with two Nones). A request row holds four to six such
    values. With these entries a dict hit finds the adapter; None still binds NULL and a bool
    1 or 0. (The registry is sqlite3's own and process-wide; the entries change no result.)"""
    sqlite3.register_adapter(type(None), _none)
    sqlite3.register_adapter(bool, int)


def _none(_value: None) -> None:
    return None


def make_engine(url: str, *, pool_size: int = 5, bulk_writer: bool = False) -> Engine:
    """Create an engine: SQLite gets WAL mode and a busy timeout, PostgreSQL a checked pool.

    `bulk_writer` (the request-log indexer) gives a SQLite connection a page cache of
    `BULK_WRITER_CACHE_KIB` and checkpoints the WAL every `BULK_WRITER_CHECKPOINT_PAGES` pages
    instead of SQLite's 1000: index pages that every batch touches stay in memory, and reach the
    database file once per checkpoint rather than once per batch.
    """
    url = normalize_url(url)
    if is_sqlite(url):
        _cheap_sqlite_binding()
        db_path = make_url(url).database
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        if bulk_writer:
            event.listen(engine, "connect", _sqlite_bulk_writer_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size)


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at larrylab's migrations and the given database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` to `revision` (default: the newest)."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest migration revision shipped with this version of larrylab."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for an empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
