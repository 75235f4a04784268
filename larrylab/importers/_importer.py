"""`import_chainlit`: Larry's Chainlit history into the store, as threads with transcripts,
ratings and lineage, importing only what an earlier run did not.

Each Chainlit thread becomes the thread `chainlit:<id>` (`unit_source` "import", no route).
Its messages become the transcript tree's rows, built by the request log's own `chain`, so a
conversation gets the ids the router would have given it. Greetings before the user's first
message are left out, and consecutive messages of one role are joined (a training example
alternates user and assistant). Thumbs from `feedbacks` are stored as ratings of source
`chainlit`, Larry's rating records (a JSON file) as source `chainlit-ratings`, each rating the
assistant message it names. The `imported` table keeps what each Chainlit thread, message and
rating became, so a rerun adds only new threads, messages and ratings, and updates a rating
whose value changed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from larrylab.db import utcnow
from larrylab.importers._bots import BotMap
from larrylab.importers._chainlit import (
    USER_MESSAGE,
    ChainlitFeedback,
    ChainlitStep,
    ChainlitThread,
    read_feedbacks,
    read_threads,
)
from larrylab.importers._ratings import (
    DETAILED,
    MALFORMED,
    THUMBS,
    RatingRecord,
    RatingsFile,
    read_ratings,
)
from larrylab.importers._store import (
    MESSAGE,
    RATING,
    SOURCE,
    THREAD,
    KnownThread,
    Statistics,
    StoredRating,
    Target,
    categories_json,
    feedback_row,
    imported_ratings,
    known_threads,
    known_threads_by_source,
    message_targets,
    store_thread_id,
    stored_ratings,
    write_lineage,
    write_messages,
    write_ratings,
    write_threads,
)
from larrylab.requestlog import MESSAGE_COLUMNS, chain

THUMBS_SOURCE = "chainlit"
RATINGS_SOURCE = "chainlit-ratings"
UNIT_SOURCE = "import"
BATCH_THREADS = 200
BATCH_RATINGS = 1000

# Why something was not imported (the summary's rows).
NO_MESSAGES = "thread without messages"
NO_USER = "thread without a user message"
NO_ASSISTANT = "thread without an assistant reply"
EMPTY = "message with empty text"
GREETING = "message before the user's first"
UNCHANGED_THREAD = "thread already imported"
UNCHANGED_RATING = "rating already imported"
UNKNOWN_THREAD = "rating for unknown thread"
UNKNOWN_MESSAGE = "rating for unknown message"
NOT_ASSISTANT = "rating of a user message"
BAD_THUMB = "thumb with a value other than 0 or 1"


@dataclass(frozen=True)
class ImportOptions:
    """What to import.

    Attributes:
        since: Only threads created, or with messages, at or after this time (aware).
        ratings: Larry's rating records (a JSON or JSON-lines file, or a folder of them).
        bot_map: The PWS category of each bot.
        batch_threads: Threads stored per transaction.
    """

    since: datetime | None = None
    ratings: Path | None = None
    bot_map: BotMap = field(default_factory=BotMap)
    batch_threads: int = BATCH_THREADS


@dataclass
class ImportSummary:
    """What an import added, changed and skipped (with why)."""

    threads: int = 0
    threads_extended: int = 0
    messages: int = 0
    ratings: int = 0
    ratings_updated: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        return {
            "threads": self.threads,
            "threads_extended": self.threads_extended,
            "messages": self.messages,
            "ratings": self.ratings,
            "ratings_updated": self.ratings_updated,
            "skipped": dict(sorted(self.skipped.items())),
        }


@dataclass
class _Turn:
    role: str
    text: str
    steps: list[str]
    at: datetime | None


def _turns(steps: Iterable[ChainlitStep], skipped: Counter[str]) -> list[_Turn]:
    """A thread's messages as alternating turns from the user's first message on; the
    messages left out are counted in `skipped`."""
    turns: list[_Turn] = []
    for step in steps:
        role = "user" if step.type == USER_MESSAGE else "assistant"
        if not step.output.strip():
            skipped[EMPTY] += 1
        elif not turns and role == "assistant":
            skipped[GREETING] += 1
        elif turns and turns[-1].role == role:
            last = turns[-1]
            last.text, last.at = f"{last.text}\n\n{step.output}", step.at or last.at
            last.steps.append(step.id)
        else:
            turns.append(_Turn(role, step.output, [step.id], step.at))
    return turns


@dataclass
class _Batch:
    """One transaction's rows."""

    threads: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    lineage: list[dict[str, Any]] = field(default_factory=list)


def _thread_rows(
    thread: ChainlitThread,
    turns: list[_Turn],
    left_out: Counter[str],
    known: KnownThread | None,
    options: ImportOptions,
    now: datetime,
    batch: _Batch,
    summary: ImportSummary,
) -> None:
    """Add what is new of one thread to `batch`, and count it (with the messages `left_out`
    of it, unless nothing of it is new)."""
    tid = store_thread_id(thread.id)
    category = options.bot_map.category(thread.bot)
    rows = chain(tid, [{"role": t.role, "content": t.text} for t in turns])
    known_steps = known.steps if known else {}
    lineage: list[dict[str, Any]] = []
    new_steps = 0
    messages: list[dict[str, Any]] = []
    for turn, row in zip(turns, rows, strict=True):
        message = dict(zip(MESSAGE_COLUMNS, row, strict=True))
        message["created_at"] = turn.at or thread.created_at or now
        messages.append(message)
        for step_id in turn.steps:
            before = known_steps.get(step_id, "")
            new_steps += before == ""
            if before != message["id"] or known is None or known.category != category:
                lineage.append(_lineage(MESSAGE, step_id, tid, message["id"], thread.bot, category))
    fresh = known is None or not known.stored
    changed_bot = known is not None and (known.bot, known.category) != (thread.bot, category)
    if not lineage and not fresh and not changed_bot:
        summary.skipped[UNCHANGED_THREAD] += 1
        return
    if fresh or changed_bot:
        lineage.append(_lineage(THREAD, thread.id, tid, None, thread.bot, category))
    times = [m["created_at"] for m in messages]
    batch.threads.append(
        {
            "id": tid,
            "unit_source": UNIT_SOURCE,
            "route": "",
            "created_at": thread.created_at or min(times),
            "last_seen_at": max(times),
        }
    )
    batch.messages.extend(messages)
    batch.lineage.extend(lineage)
    summary.skipped.update(left_out)
    summary.messages += new_steps
    if fresh:
        summary.threads += 1
    elif new_steps:
        summary.threads_extended += 1


def _lineage(
    kind: str,
    source_id: str,
    thread_id: str,
    message_id: str | None,
    bot: str | None,
    category: str | None,
) -> dict[str, Any]:
    return {
        "source": SOURCE,
        "kind": kind,
        "source_id": source_id,
        "thread_id": thread_id,
        "message_id": message_id,
        "bot": bot,
        "category": category,
        "imported_at": utcnow(),
    }


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _import_threads(
    source: Engine,
    engine: Engine,
    options: ImportOptions,
    summary: ImportSummary,
    stats: Statistics,
    tick: Callable[[int], object],
) -> set[str]:
    """Store the threads' new messages; returns the Chainlit ids of the threads read."""
    seen: set[str] = set()
    for group in _batched(read_threads(source, options.since), options.batch_threads):
        now = utcnow()
        usable: list[tuple[ChainlitThread, list[_Turn], Counter[str]]] = []
        for thread in group:
            seen.add(thread.id)
            left_out: Counter[str] = Counter()
            turns = _turns(thread.steps, left_out)
            if not turns:
                said = any(step.output.strip() for step in thread.steps)
                summary.skipped[NO_USER if said else NO_MESSAGES] += 1
            elif not any(t.role == "assistant" for t in turns):
                summary.skipped[NO_ASSISTANT] += 1
            else:
                usable.append((thread, turns, left_out))
        batch = _Batch()
        with engine.begin() as conn:
            known = known_threads(conn, [store_thread_id(t.id) for t, _, _ in usable])
            for thread, turns, left_out in usable:
                known_thread = known.get(store_thread_id(thread.id))
                _thread_rows(thread, turns, left_out, known_thread, options, now, batch, summary)
            write_threads(conn, batch.threads)
            write_messages(conn, batch.messages)
            write_lineage(conn, batch.lineage)
            stats.wrote(conn, len(batch.messages) + len(batch.lineage))
        tick(len(group))
    return seen


@dataclass
class _Rating:
    """A rating to store: which step it rates, as which source, and the fields it gives."""

    step_id: str
    thread_id: str  # Chainlit's
    source: str
    source_ids: list[str]
    score: int | None
    thumb: int | None
    categories: dict[str, bool] | None
    comment: str | None
    at: datetime | None


def _merged(old: StoredRating | None, new: _Rating) -> StoredRating:
    """The stored rating with the fields `new` gives replaced."""
    base = old or StoredRating()
    return StoredRating(
        score=new.score if new.score is not None else base.score,
        thumb=new.thumb if new.thumb is not None else base.thumb,
        categories=categories_json(new.categories)
        if new.categories is not None
        else base.categories,
        comment=new.comment if new.comment is not None else base.comment,
    )


def _store_ratings(
    engine: Engine,
    ratings: list[_Rating],
    read_threads_: set[str],
    summary: ImportSummary,
    stats: Statistics,
) -> None:
    """Store one chunk of ratings: each on the imported message it names, once."""
    now = utcnow()
    with engine.begin() as conn:
        targets = message_targets(conn, sorted({r.step_id for r in ratings}))
        orphans = sorted({r.thread_id for r in ratings if r.step_id not in targets})
        threads = known_threads_by_source(conn, orphans) | (read_threads_ & set(orphans))
        placed: list[tuple[_Rating, Target]] = []
        for rating in ratings:
            target = targets.get(rating.step_id)
            if target is None:
                why = UNKNOWN_MESSAGE if rating.thread_id in threads else UNKNOWN_THREAD
                summary.skipped[why] += len(rating.source_ids)
            elif target.role != "assistant":
                summary.skipped[NOT_ASSISTANT] += len(rating.source_ids)
            else:
                placed.append((rating, target))
        keys = [(f"message:{t.message_id}", r.source) for r, t in placed]
        stored = stored_ratings(conn, keys)
        done = imported_ratings(conn, [sid for r, _ in placed for sid in r.source_ids])
        feedback: dict[tuple[str, str], dict[str, Any]] = {}
        lineage: list[dict[str, Any]] = []
        for (rating, target), key in zip(placed, keys, strict=True):
            old = stored.get(key)
            new = _merged(old, rating)
            if new != old:
                feedback[key] = feedback_row(target, rating.source, new, rating.at or now, now)
            for sid in rating.source_ids:
                if sid not in done:
                    summary.ratings += 1
                    lineage.append(
                        _lineage(RATING, sid, target.thread_id, target.message_id, None, None)
                    )
                elif new != old:
                    summary.ratings_updated += 1
                else:
                    summary.skipped[UNCHANGED_RATING] += 1
        write_ratings(conn, list(feedback.values()))
        write_lineage(conn, lineage)
        stats.wrote(conn, len(feedback) + len(lineage))


def _thumbs(feedbacks: Iterable[ChainlitFeedback], summary: ImportSummary) -> Iterator[_Rating]:
    """Chainlit's thumbs as ratings; a value other than 0 or 1 is counted and left out."""
    for fb in feedbacks:
        try:
            value = int(fb.value)
        except (TypeError, ValueError):
            value = -1
        if value not in (0, 1):
            summary.skipped[BAD_THUMB] += 1
            continue
        comment = fb.comment if isinstance(fb.comment, str) and fb.comment.strip() else None
        yield _Rating(
            fb.for_id, fb.thread_id, THUMBS_SOURCE, [fb.id], None, value, None, comment, None
        )


def _by_step(thumbs: Iterable[_Rating], size: int) -> Iterator[list[_Rating]]:
    """Thumbs (ordered by step) in chunks of about `size` steps; several thumbs on one step
    become one rating (the last one's value) that records every thumb's id."""
    chunk: dict[str, _Rating] = {}
    for rating in thumbs:
        before = chunk.get(rating.step_id)
        if before is not None:
            rating.source_ids = [*before.source_ids, *rating.source_ids]
        elif len(chunk) >= size:
            yield list(chunk.values())
            chunk = {}
        chunk[rating.step_id] = rating
    if chunk:
        yield list(chunk.values())


def _records(records: list[RatingRecord]) -> list[_Rating]:
    """Larry's rating records as one rating per rated message: the score and categories of its
    latest detailed record, the thumb of its latest thumbs record."""
    latest: dict[tuple[str, str], RatingRecord] = {}
    for rec in records:  # a later record of the same message and type replaces an earlier one
        key = (rec.message_id, rec.feedback_type)
        old = latest.get(key)
        if old is None or old.at is None or rec.at is None or rec.at >= old.at:
            latest[key] = rec
    by_message: dict[str, dict[str, RatingRecord]] = {}
    for (message_id, kind), rec in latest.items():
        by_message.setdefault(message_id, {})[kind] = rec
    out: list[_Rating] = []
    for message_id, kinds in by_message.items():
        detailed, thumbs = kinds.get(DETAILED), kinds.get(THUMBS)
        first = detailed or thumbs
        assert first is not None
        comment = (detailed.comment if detailed else None) or (thumbs.comment if thumbs else None)
        times = [r.at for r in (detailed, thumbs) if r is not None and r.at is not None]
        out.append(
            _Rating(
                step_id=message_id,
                thread_id=first.thread_id,
                source=RATINGS_SOURCE,
                source_ids=[r.source_id for r in (detailed, thumbs) if r is not None],
                score=detailed.score if detailed else None,
                thumb=thumbs.score if thumbs else None,
                categories=detailed.categories if detailed else None,
                comment=comment,
                at=min(times) if times else None,
            )
        )
    return out


def _import_ratings(
    source: Engine,
    engine: Engine,
    records: RatingsFile | None,
    read: set[str],
    summary: ImportSummary,
    stats: Statistics,
) -> None:
    for chunk in _by_step(_thumbs(read_feedbacks(source), summary), BATCH_RATINGS):
        _store_ratings(engine, chunk, read, summary, stats)
    if records is None:
        return
    if records.malformed:
        summary.skipped[MALFORMED] += records.malformed
    for chunk in _batched(_records(records.records), BATCH_RATINGS):
        _store_ratings(engine, chunk, read, summary, stats)


def import_chainlit(
    source: Engine,
    engine: Engine,
    options: ImportOptions,
    tick: Callable[[int], object] | None = None,
) -> ImportSummary:
    """Import the Chainlit database `source` (see `open_source`) into the store `engine`;
    `tick(n)` is called as each batch of `n` threads is stored. Raises RatingsFileError for an
    unreadable ratings file before anything is stored."""
    # a bad ratings file is refused before anything is stored
    records = None if options.ratings is None else read_ratings(options.ratings)
    summary, stats = ImportSummary(), Statistics()
    read = _import_threads(source, engine, options, summary, stats, tick or (lambda n: None))
    _import_ratings(source, engine, records, read, summary, stats)
    return summary
