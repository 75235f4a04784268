"""Thread transcripts as a hash-chained tree of messages.

A message's id hashes its thread, its parent's id and its own canonical JSON, so the same
conversation prefix always maps to the same rows (stored once) and a changed history branches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, select

from larrylab.platform.models import Message


def canonical(message: dict[str, Any]) -> bytes:
    """The message as canonical JSON (sorted keys, no null fields)."""
    return orjson.dumps(
        {k: v for k, v in message.items() if v is not None}, option=orjson.OPT_SORT_KEYS
    )


def message_id(thread_id: str, parent_id: str | None, body: bytes) -> str:
    """The chain hash of one message."""
    h = hashlib.blake2b(digest_size=16)
    h.update(thread_id.encode("utf-8"))
    h.update(b"\x00")
    h.update((parent_id or "").encode("ascii"))
    h.update(b"\x00")
    h.update(body)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class MessageRow:
    """A message ready to insert."""

    id: str
    thread_id: str
    parent_id: str | None
    depth: int
    role: str
    body: str


def chain(
    thread_id: str, messages: Sequence[dict[str, Any]], parent_id: str | None = None, depth: int = 0
) -> list[MessageRow]:
    """Rows for `messages`, chained after `parent_id` (the last row ends the chain)."""
    rows: list[MessageRow] = []
    for i, msg in enumerate(messages):
        body = canonical(msg)
        mid = message_id(thread_id, parent_id, body)
        rows.append(
            MessageRow(
                mid, thread_id, parent_id, depth + i, str(msg.get("role", "")), body.decode()
            )
        )
        parent_id = mid
    return rows


def rebuild(conn: Connection, thread_id: str, last_id: str | None) -> list[dict[str, Any]]:
    """The messages from the start of the thread up to and including `last_id`."""
    if last_id is None:
        return []
    c = Message.__table__.c  # type: ignore[attr-defined]
    rows = conn.execute(select(c.id, c.parent_id, c.body).where(c.thread_id == thread_id)).all()
    by_id = {r[0]: (r[1], r[2]) for r in rows}
    out: list[dict[str, Any]] = []
    cursor: str | None = last_id
    while cursor is not None:
        parent, body = by_id[cursor]
        out.append(orjson.loads(body))
        cursor = parent
    out.reverse()
    return out


def dedupe(rows: Iterable[MessageRow]) -> list[MessageRow]:
    """Rows with duplicate ids removed (first kept)."""
    seen: dict[str, MessageRow] = {}
    for row in rows:
        seen.setdefault(row.id, row)
    return list(seen.values())
