"""Thread transcripts as a hash-chained tree of messages.

A message's id hashes its thread, its parent's id and its own canonical JSON, so the same
conversation prefix always maps to the same rows (stored once) and a changed history branches.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container, Sequence
from hashlib import blake2b
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
    ids = _extend(rows, known, thread_id, messages, bodies, parent_id, depth)
    return ids[-1] if ids else parent_id


def _extend(
    rows: dict[str, MessageRow],
    known: Container[str],
    thread_id: str,
    messages: Sequence[dict[str, Any]],
    bodies: Sequence[bytes],
    parent_id: str | None,
    depth: int = 0,
    stamp: Any = None,
) -> list[str]:
    """The ids of `messages` (canonical JSON `bodies`) chained after `parent_id`, `messages[0]`
    being at `depth`; rows for those in neither `rows` nor `known` are added to `rows`, created
    at `stamp`."""
    ids = []
    thread = thread_id.encode("utf-8")
    for i, body in enumerate(bodies):
        # the chain hash: thread, parent id and canonical JSON, NUL-separated
        key = b"\x00".join((thread, (parent_id or "").encode("ascii"), body))
        mid = blake2b(key, digest_size=16).hexdigest()
        if mid not in rows and mid not in known:
            role = str(messages[i].get("role", ""))
            rows[mid] = MessageRow(mid, thread_id, parent_id, depth + i, role, body.decode(), stamp)
        ids.append(mid)
        parent_id = mid
    return ids


Key = dict[str, Any] | bytes
"""How the chain cache remembers a message: the message itself when all its values are strings
(then equal dicts mean equal canonical JSON), else its canonical JSON."""

# thread id -> (the keys of its last chain of messages, their ids)
Chains = dict[str, tuple[list[Key], list[str]]]


def _key(message: dict[str, Any], body: bytes) -> Key:
    """The cache's key for a message whose canonical JSON is `body`."""
    for value in message.values():
        if type(value) is not str:
            return body
    return message


class ChainCache:
    """The last chain seen for each recent thread (its messages and their ids), so that a
    follow-up request, whose prompt repeats the thread so far, hashes only what it adds. A
    message id depends only on its thread, its parent's id and its canonical JSON, so a message
    with the same canonical JSON in the same place has the same id. Messages whose values are
    all strings (most chat messages) are compared as dicts, which costs a fraction of making
    their canonical JSON; others by their canonical JSON.

    Entries are proposed while a batch is prepared and kept only once the batch is stored
    (`commit`), so a cached id always names a stored row. Bounded by the number of messages held;
    a thread that fell out is hashed in full again, which gives the same ids.
    """

    def __init__(self, max_messages: int = 50_000) -> None:
        self._chains: OrderedDict[str, tuple[list[Key], list[str]]] = OrderedDict()
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
        prev = proposed.get(thread_id) or self._chains.get(thread_id)
        same = 0
        keys: list[Key] = []
        ids: list[str] = []
        if prev is not None:
            prev_keys, prev_ids = prev
            limit = min(len(prev_keys), len(messages))
            while same < limit:
                key, message = prev_keys[same], messages[same]
                if type(key) is dict:
                    # Every value of `key` is a str, and nothing but a str equals one: equal
                    # dicts have the same keys and strings, so the same canonical JSON.
                    if message != key:
                        break
                elif canonical(message) != key:
                    break
                same += 1
            keys, ids = prev_keys[:same], prev_ids[:same]
        if same < len(messages):
            added = messages[same:]
            bodies = _canonical_all(added)
            parent = ids[-1] if ids else None
            ids.extend(_extend(rows, known, thread_id, added, bodies, parent, same, stamp))
            keys.extend(map(_key, added, bodies))
        proposed[thread_id] = (keys, ids)
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
