"""Preparing the store for the router: migrate (SQLite) or check (PostgreSQL), then bootstrap."""

from __future__ import annotations

from dataclasses import dataclass

from larrylab.config import ConfigError, Settings, load_config_file
from larrylab.db import (
    current_revision,
    head_revision,
    is_sqlite,
    make_engine,
    normalize_url,
    upgrade,
)
from larrylab.release._bootstrap import BootstrapReport, bootstrap


class StoreNotReadyError(RuntimeError):
    """The database is not at the schema this version of larrylab needs."""


@dataclass(frozen=True)
class PreparedStore:
    """What preparing the store did."""

    database_url: str
    migrated: bool
    bootstrap: BootstrapReport | None


def prepare_store(settings: Settings) -> PreparedStore:
    """Make the store ready to serve.

    SQLite databases are migrated automatically; a PostgreSQL database must already be at the
    newest revision (`larrylab db upgrade`), so that several workers never race to migrate.
    A config file, when there is one, seeds whatever the database lacks.
    """
    url = normalize_url(settings.database_url)
    path = settings.config_path()
    config = load_config_file(path) if path is not None else None
    engine = make_engine(url)
    try:
        migrated = False
        current = current_revision(engine)
        if current != head_revision():
            if not is_sqlite(url):
                raise StoreNotReadyError(
                    f"the database is at schema revision {current or 'none'}, this larrylab needs "
                    f"{head_revision()}: run `larrylab db upgrade` first"
                )
            upgrade(url)
            migrated = True
        report = None
        if config is not None:
            try:
                report = bootstrap(engine, config)
            except ValueError as exc:
                raise ConfigError(f"{path}: cannot apply to the database: {exc}") from exc
        return PreparedStore(url, migrated, report)
    finally:
        engine.dispose()
