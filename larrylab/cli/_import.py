"""`larrylab import ...`: conversation history from elsewhere into the store (Larry's Chainlit
database)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from larrylab.cli._kit import DbOpt, JsonOpt, console, fail, guard, print_json, settings_from

import_app = typer.Typer(
    help="Import conversation history kept elsewhere (Larry's Chainlit database).",
    no_args_is_help=True,
)

FromOpt = Annotated[
    str,
    typer.Option(
        "--from",
        help="The database of Chainlit's SQLAlchemy data layer: postgresql://... (Chainlit's "
        "postgresql+asyncpg:// URL works too) or sqlite:///...",
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only threads created, or with messages, at or after this ISO 8601 time "
        "(e.g. 2026-12-01 or 2026-12-01T08:00:00Z; UTC unless it says otherwise).",
    ),
]
RatingsOpt = Annotated[
    Path | None,
    typer.Option(
        "--ratings",
        help="Larry's rating records (thumbs and 1-5 ratings with categories): a JSON array, "
        "JSON lines, or a folder of such files.",
    ),
]
BotMapOpt = Annotated[
    Path | None,
    typer.Option(
        "--bot-map",
        help="YAML or JSON mapping of bot (chat profile) to PWS category, over the defaults; "
        "null: the classifier decides.",
    ),
]


def parse_since(text: str) -> datetime:
    """`--since` as an aware UTC datetime (a time without an offset is UTC); fails with a
    sentence if it is not ISO 8601."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"--since {text!r} is not an ISO 8601 time such as 2026-12-01T08:00:00Z")
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _store(database_url: str | None) -> Any:
    """The store's engine, at the newest schema (else a sentence and exit code 2)."""
    from larrylab.db import current_revision, head_revision, make_engine

    url = settings_from(database_url).database_url
    engine = guard(lambda: make_engine(url))
    current = guard(lambda: current_revision(engine))
    if current != head_revision():
        shown = engine.url.render_as_string(hide_password=True)
        state = "has no larrylab schema" if current is None else f"is at revision {current}"
        fail(f"the store {shown} {state}: run `larrylab db upgrade` first")
    return engine


_ROWS = (
    ("threads", "threads imported"),
    ("threads_extended", "threads extended with new messages"),
    ("messages", "messages imported"),
    ("ratings", "ratings imported"),
    ("ratings_updated", "ratings updated (value changed)"),
)


def _table(summary: dict[str, Any]) -> Table:
    table = Table("", "count", title="import chainlit")
    for key, label in _ROWS:
        table.add_row(label, str(summary[key]))
    for reason, n in summary["skipped"].items():
        table.add_row(f"skipped: {reason}", str(n))
    return table


@import_app.command("chainlit")
def chainlit(
    from_url: FromOpt,
    since: SinceOpt = None,
    ratings: RatingsOpt = None,
    bot_map: BotMapOpt = None,
    database_url: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import Larry's Chainlit history: each thread's user and assistant messages as a thread
    with its transcript, thumbs and rating records as ratings, with lineage; a rerun imports
    only what is new."""
    from tqdm import tqdm

    from larrylab.importers import (
        BotMapError,
        ChainlitSourceError,
        ImportOptions,
        count_chainlit_threads,
        import_chainlit,
        load_bot_map,
        open_source,
    )

    when = parse_since(since) if since is not None else None
    try:
        bots = load_bot_map(bot_map)
    except BotMapError as exc:
        fail(str(exc))
    engine = _store(database_url)
    try:
        source = open_source(from_url)
    except ChainlitSourceError as exc:
        fail(str(exc), code=exc.code)
    options = ImportOptions(since=when, ratings=ratings, bot_map=bots)
    total = guard(lambda: count_chainlit_threads(source, when))
    bar = tqdm(
        total=total, desc="import: threads", unit="thread", disable=True if as_json else None
    )
    try:  # a bad ratings file (RatingsFileError) is a sentence and exit code 2, from guard
        summary = guard(lambda: import_chainlit(source, engine, options, bar.update))
    finally:
        bar.close()
        source.dispose()
    data = summary.as_dict()
    if as_json:
        print_json(data)
    else:
        console().print(_table(data))
