"""Larry's own rating records (its `utils/feedback.py`): thumbs and detailed 1-5 ratings of
one assistant message, with named categories, as JSON.

A ratings file is a JSON array of records, JSON lines (one record a line), or one record; a
folder is read file by file (`*.json`, `*.jsonl`, as Larry's storage keeps one file per rated
message). A record that is not a usable rating is counted, not fatal.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

THUMBS = "thumbs"
DETAILED = "detailed"
MALFORMED = "malformed rating record"


class RatingsFileError(ValueError):
    """A ratings file that cannot be read, or is neither JSON nor JSON lines."""


@dataclass(frozen=True)
class RatingRecord:
    """One rating of one Chainlit message.

    Attributes:
        message_id: The rated (assistant) message's Chainlit step id.
        thread_id: Its Chainlit thread id.
        feedback_type: `thumbs` or `detailed`.
        score: 0 or 1 for thumbs, 1-5 for a detailed rating.
        categories: Named judgements ({"accuracy": True, ...}).
        comment: The rater's comment, if any.
        bot: The bot that wrote the message, as the record names it.
        at: When it was rated (UTC), if the record says.
    """

    message_id: str
    thread_id: str
    feedback_type: str
    score: int
    categories: dict[str, bool] = field(default_factory=dict)
    comment: str | None = None
    bot: str | None = None
    at: datetime | None = None

    @property
    def source_id(self) -> str:
        """The record's id in the `imported` table: its message and type."""
        return f"{self.message_id}:{self.feedback_type}"


@dataclass
class RatingsFile:
    """The usable records of a ratings file, and how many were not."""

    records: list[RatingRecord] = field(default_factory=list)
    malformed: int = 0


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def parse_record(data: Any) -> RatingRecord | None:
    """A rating from one JSON record, or None if it is not a usable one."""
    if not isinstance(data, dict):
        return None
    message_id, thread_id = data.get("message_id"), data.get("thread_id")
    kind, score = data.get("feedback_type", THUMBS), data.get("score")
    if not (isinstance(message_id, str) and message_id and isinstance(thread_id, str)):
        return None
    if type(score) is not int or kind not in (THUMBS, DETAILED):
        return None
    if (kind == THUMBS and score not in (0, 1)) or (kind == DETAILED and not 1 <= score <= 5):
        return None
    raw = data.get("categories") or {}
    categories = (
        {str(k): v for k, v in raw.items() if isinstance(v, bool)} if isinstance(raw, dict) else {}
    )
    comment, bot = data.get("comment"), data.get("bot_id")
    return RatingRecord(
        message_id=message_id,
        thread_id=thread_id,
        feedback_type=kind,
        score=score,
        categories=categories,
        comment=comment if isinstance(comment, str) and comment.strip() else None,
        bot=bot if isinstance(bot, str) and bot else None,
        at=_time(data.get("timestamp")),
    )


def _values(path: Path) -> Iterator[Any]:
    """The JSON values of one file: an array's items, each line of JSON lines, or one value."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RatingsFileError(
            f"cannot read the ratings file {path}: {(exc.strerror or str(exc)).lower()}"
        ) from exc
    text = raw.strip()
    if not text:
        return
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
        lines = text.splitlines()
        if len(lines) < 2 or not lines[0].strip().startswith(b"{"):
            raise RatingsFileError(
                f"the ratings file {path} is neither JSON nor JSON lines (one record a line)"
            ) from None
        for line in lines:
            if line.strip():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield None  # counted as malformed
        return
    if isinstance(value, list):
        yield from value
    else:
        yield value


def _files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())


def read_ratings(path: Path) -> RatingsFile:
    """The rating records of a file or folder. Raises RatingsFileError if a file cannot be read
    or is not JSON."""
    if not path.exists():
        raise RatingsFileError(f"the ratings file {path} does not exist")
    out = RatingsFile()
    for file in _files(path):
        for value in _values(file):
            record = parse_record(value)
            if record is None:
                out.malformed += 1
            else:
                out.records.append(record)
    return out
