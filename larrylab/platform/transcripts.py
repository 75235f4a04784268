"""Thread transcripts as a hash-chained tree of messages.

A message's id hashes its thread, its parent's id and its own canonical JSON, so the same
conversation prefix always maps to the same rows (stored once) and a changed history branches.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
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


def _canonical_all(messages: Sequence[dict[str, Any]]) -> list[bytes]:
    """`canonical` of each message (inlined for the common message without null fields)."""
    dumps, sort = orjson.dumps, orjson.OPT_SORT_KEYS
    return [canonical(msg) if None in msg.values() else dumps(msg, option=sort) for msg in messages]


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
    created_at: Any = None  # the store's time of the batch that adds it


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
    bodies = _canonical_all(messages)
    ids = _extend(rows, known, thread_id, messages, bodies, 0, parent_id, depth)
    return ids[-1] if ids else parent_id


def _extend(
    rows: dict[str, MessageRow],
    known: Container[str],
    thread_id: str,
    messages: Sequence[dict[str, Any]],
    bodies: Sequence[bytes],
    start: int,
    parent_id: str | None,
    depth: int = 0,
    stamp: Any = None,
) -> list[str]:
    """The ids of `messages[start:]` (canonical JSON `bodies[start:]`) chained after
    `parent_id`, `messages[0]` being at `depth`; rows for those in neither `rows` nor `known`
    are added to `rows`, created at `stamp`."""
    ids = []
    for i in range(start, len(bodies)):
        body = bodies[i]
        mid = message_id(thread_id, parent_id, body)
        if mid not in rows and mid not in known:
            role = str(messages[i].get("role", ""))
            rows[mid] = MessageRow(mid, thread_id, parent_id, depth + i, role, body.decode(), stamp)
        ids.append(mid)
        parent_id = mid
    return ids


# thread id -> (the canonical JSON of its last chain of messages, their ids)
Chains = dict[str, tuple[list[bytes], list[str]]]


class ChainCache:
    """The last chain seen for each recent thread (its messages' canonical JSON and their ids),
    so that a follow-up request, whose prompt repeats the thread so far, hashes only what it
    adds. A message id depends only on its thread, its parent's id and its canonical JSON, so
    equal JSON in the same place means the same id.

    Entries are proposed while a batch is prepared and kept only once the batch is stored
    (`commit`), so a cached id always names a stored row. Bounded by the number of messages held;
    a thread that fell out is hashed in full again, which gives the same ids.
    """

    def __init__(self, max_messages: int = 50_000) -> None:
        self._chains: OrderedDict[str, tuple[list[bytes], list[str]]] = OrderedDict()
        self._held = 0
        self._max = max_messages

    def chain(
        self,
        rows: dict[str, MessageRow],
        known: Container[str],
        thread_id: str,
        messages: Sequence[dict[str, Any]],
        proposed: Chains,
        stamp: Any = None,
    ) -> list[str]:
        """The ids of `messages` as one chain; like `extend_chain`, adds the rows not stored yet
        (created at `stamp`). Proposes `messages` as the thread's new last chain (in
        `proposed`)."""
        bodies = _canonical_all(messages)
        prev = proposed.get(thread_id) or self._chains.get(thread_id)
        same = 0
        ids: list[str] = []
        if prev is not None:
            prev_bodies, prev_ids = prev
            limit = min(len(prev_bodies), len(bodies))
            while same < limit and bodies[same] == prev_bodies[same]:
                same += 1
            ids = prev_ids[:same]
        parent = ids[-1] if ids else None
        ids.extend(_extend(rows, known, thread_id, messages, bodies, same, parent, 0, stamp))
        proposed[thread_id] = (bodies, ids)
        return ids

    def commit(self, proposed: Chains) -> None:
        """Keep the chains of a stored batch; forget the least recent threads over the bound."""
        for thread_id, entry in proposed.items():
            old = self._chains.pop(thread_id, None)
            if old is not None:
                self._held -= len(old[1])
            self._chains[thread_id] = entry
            self._held += len(entry[1])
        while self._held > self._max and self._chains:
            _, (_, ids) = self._chains.popitem(last=False)
            self._held -= len(ids)


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
