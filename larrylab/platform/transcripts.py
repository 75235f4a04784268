"""Thread transcripts as a hash-chained tree of messages.

A message's id hashes its thread, its parent's id and its own canonical JSON, so the same
conversation prefix always maps to the same rows (stored once) and a changed history branches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Sequence
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, select

from larrylab.platform.models import Message


def canonical(message: dict[str, Any]) -> bytes:
    """The message as canonical JSON (sorted keys, no null fields)."""
    if None in message.values():
        message = {k: v for k, v in message.items() if v is not None}
    return orjson.dumps(message, option=orjson.OPT_SORT_KEYS)


def message_id(thread_id: str, parent_id: str | None, body: bytes) -> str:
    """The chain hash of one message."""
    key = b"\x00".join((thread_id.encode("utf-8"), (parent_id or "").encode("ascii"), body))
    return hashlib.blake2b(key, digest_size=16).hexdigest()


class MessageRow(NamedTuple):
    """A message ready to insert (a tuple in the message table's column order)."""

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
    rows: dict[str, MessageRow] = {}
    extend_chain(rows, (), thread_id, messages, parent_id, depth)
    return list(rows.values())


def extend_chain(
    rows: dict[str, MessageRow],
    known: Container[str],
    thread_id: str,
    messages: Sequence[dict[str, Any]],
    parent_id: str | None = None,
    depth: int = 0,
) -> str | None:
    """Chain `messages` after `parent_id`, adding to `rows` those whose id is in neither `rows`
    nor `known`; returns the id that ends the chain (`parent_id` if there are no messages)."""
    for i, msg in enumerate(messages):
        body = canonical(msg)
        mid = message_id(thread_id, parent_id, body)
        if mid not in rows and mid not in known:
            role = str(msg.get("role", ""))
            rows[mid] = MessageRow(mid, thread_id, parent_id, depth + i, role, body.decode())
        parent_id = mid
    return parent_id


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
