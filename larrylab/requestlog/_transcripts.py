"""Thread transcripts as a hash-chained tree of messages.

A message's id hashes its thread, its parent's id and its own canonical JSON, so the same
conversation prefix always maps to the same rows (stored once) and a changed history branches.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

import orjson
from sqlalchemy import Connection, select

from larrylab.db import Message

NUL = "\x00"
REPLACEMENT = "\ufffd"


def without_nul(text: str) -> str:
    """`text` as the store keeps it in a text column: each U+0000, which PostgreSQL refuses in
    text, replaced by U+FFFD, the Unicode replacement character (on SQLite too, so that both
    stores hold the same). A message's body is JSON, where a NUL is the escape `\\u0000`."""
    return text.replace(NUL, REPLACEMENT) if NUL in text else text


def canonical(message: dict[str, Any]) -> bytes:
    """The message as canonical JSON (sorted keys, no null fields)."""
    if None in message.values():
        message = {k: v for k, v in message.items() if v is not None}
    return orjson.dumps(message, option=orjson.OPT_SORT_KEYS)


def _canonical_all(messages: Sequence[dict[str, Any]]) -> list[bytes]:
    """`canonical` of each message (inlined for the common message without null fields)."""
    dumps, sort = orjson.dumps, orjson.OPT_SORT_KEYS
    return [canonical(msg) if None in msg.values() else dumps(msg, option=sort) for msg in messages]


MessageRow = tuple[str, str, str | None, int, str, str, Any]
"""A message ready to insert, in `MESSAGE_COLUMNS` order; the last is the store's time of the
batch that adds it. A plain tuple: the driver reads a tuple subclass's items through Python's
`__getitem__` (a NamedTuple cost 2-3 times the binding of a plain tuple), and building one runs
its Python `__new__`."""

MESSAGE_COLUMNS = ("id", "thread_id", "parent_id", "depth", "role", "body", "created_at")


def chain(thread_id: str, messages: Sequence[dict[str, Any]]) -> list[MessageRow]:
    """Rows for a whole conversation, each message hashed (the last row ends the chain)."""
    rows: dict[str, MessageRow] = {}
    _extend(rows, thread_id, messages, _canonical_all(messages), None)
    return list(rows.values())


def _extend(
    rows: dict[str, MessageRow],
    thread_id: str,
    messages: Sequence[dict[str, Any]],
    bodies: Sequence[bytes],
    parent_id: str | None,
    depth: int = 0,
    stamp: Any = None,
) -> list[str]:
    """The ids of `messages` (canonical JSON `bodies`) chained after `parent_id`, `messages[0]`
    being at `depth`; rows for those `rows` does not hold are added to it, created at
    `stamp`."""
    ids = []
    thread = thread_id.encode("utf-8")
    for i, body in enumerate(bodies):
        # the chain hash: thread, parent id and canonical JSON, NUL-separated
        key = b"\x00".join((thread, (parent_id or "").encode("ascii"), body))
        mid = blake2b(key, digest_size=16).hexdigest()
        if mid not in rows:
            role = without_nul(str(messages[i].get("role", "")))
            rows[mid] = (mid, thread_id, parent_id, depth + i, role, body.decode(), stamp)
        ids.append(mid)
        parent_id = mid
    return ids


Key = dict[str, Any] | bytes
"""How the chain cache remembers a message: the message itself when all its values are strings
(then equal dicts mean equal canonical JSON), else its canonical JSON."""


Chain = tuple[list[Key], list[str], bytes | None, dict[str, Any] | None, list[int] | None]
"""A thread's last chain of messages as the cache holds it: each message's key, each one's id,
and, for a chain that came from a prompt's JSON text (`ChainCache.chain_json`), that text, the
reply that followed and where each of the prompt's messages ends in the text (the offset of the
comma or bracket after it; None if a message is not there as orjson writes it), else None, None,
None."""

Chains = dict[str, Chain]
"""Thread id -> its last chain."""


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
    their canonical JSON; others by their canonical JSON. A prompt still in JSON text, as the
    journal holds it, is compared as text first (`chain_json`).

    Entries are proposed while a batch is prepared and kept only once the batch is stored
    (`commit`), so a cached id always names a stored row. Bounded by the number of messages held;
    a thread that fell out is hashed in full again, which gives the same ids.
    """

    def __init__(self, max_messages: int = 50_000) -> None:
        self._chains: OrderedDict[str, Chain] = OrderedDict()
        self._held = 0
        self._max = max_messages

    def chain(
        self,
        rows: dict[str, MessageRow],
        thread_id: str,
        messages: Sequence[dict[str, Any]],
        proposed: Chains,
        stamp: Any = None,
    ) -> list[str]:
        """The ids of `messages` as one chain; adds the rows not stored yet to `rows` (created
        at `stamp`). Proposes `messages` as the thread's new last chain (in
        `proposed`)."""
        prev = proposed.get(thread_id) or self._chains.get(thread_id)
        same = 0
        keys: list[Key] = []
        ids: list[str] = []
        if prev is not None:
            prev_keys, prev_ids = prev[0], prev[1]
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
            ids.extend(_extend(rows, thread_id, added, bodies, parent, same, stamp))
            keys.extend(map(_key, added, bodies))
        proposed[thread_id] = (keys, ids, None, None, None)
        return ids

    def chain_json(
        self,
        rows: dict[str, MessageRow],
        thread_id: str,
        prompt: bytes,
        reply: dict[str, Any] | None,
        proposed: Chains,
        stamp: Any = None,
    ) -> list[str]:
        """`chain` of a prompt given as its JSON text (as the journal holds it), then its reply.
        Raises ValueError if `prompt` is not a JSON array of objects.

        A request's text mostly begins with text of the thread's last chain: a follow-up repeats
        its prompt and reply, a regenerated or edited turn all of its prompt but the last
        messages. Then only the messages after the shared ones are decoded and hashed. Equal
        text up to the end of a message means equal messages, so this gives the ids that
        comparing every message would; other text (a new thread, another serialization) is
        decoded and compared in full."""
        prev = proposed.get(thread_id) or self._chains.get(thread_id)
        same, start, ends = (0, 0, None) if prev is None else _shared(prompt, prev)
        if not same:
            messages = _messages(prompt)
            convo = [*messages, reply] if reply else messages
            ids = self.chain(rows, thread_id, convo, proposed, stamp)
            keys = proposed[thread_id][0]
            ends = _ends(prompt, messages, 1, [])
        else:
            assert prev is not None and ends is not None
            added = _messages(b"[" + prompt[start:])
            if not added:  # "[m1,...,mk,]" is not JSON
                raise ValueError("a prompt is not a JSON array of messages")
            ends = _ends(prompt, added, start, ends)
            if reply:
                added.append(reply)
            bodies = _canonical_all(added)
            keys, ids = [*prev[0][:same], *map(_key, added, bodies)], prev[1][:same]
            ids += _extend(rows, thread_id, added, bodies, ids[-1], same, stamp)
        proposed[thread_id] = (keys, ids, prompt, reply, ends)
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
            _, dropped = self._chains.popitem(last=False)
            self._held -= len(dropped[1])


def _messages(text: bytes) -> list[dict[str, Any]]:
    """The messages of a prompt's JSON text (ValueError if it is not an array of objects)."""
    value = orjson.loads(text)
    if type(value) is not list or not all(type(m) is dict for m in value):
        raise ValueError("a prompt is not a JSON array of messages")
    return value


def _shared(prompt: bytes, prev: Chain) -> tuple[int, int, list[int] | None]:
    """How many messages of `prev`'s chain `prompt`'s text begins with, compared as text:
    its whole prompt and reply ("[m1,...,mk,r,"), or its first messages ("[m1,...,mj,"), as
    many as there are. Returns that count, where the next message begins in `prompt` and where
    each shared message ends in it; (0, 0, None) if none is shared."""
    _, _, text, reply, ends = prev
    if text is None or ends is None or not ends:
        return 0, 0, None
    view, size = memoryview(text), len(prompt)
    for count in range(len(ends), 0, -1):
        at = ends[count - 1]  # for the whole prompt: its closing bracket, a comma in a follow-up
        if size > at and prompt[at] == 0x2C and prompt.startswith(view[:at]):
            if reply and count == len(ends):
                said = orjson.dumps(reply)
                end = at + 1 + len(said)
                if size > end and prompt[end] == 0x2C and prompt.startswith(said, at + 1):
                    return count + 1, end + 1, [*ends, end]
            return count, at + 1, ends[:count]
    return 0, 0, None


def _ends(
    prompt: bytes, messages: Sequence[dict[str, Any]], start: int, ends: list[int]
) -> list[int] | None:
    """`ends` extended with where each of `messages` ends in `prompt`, the first beginning at
    `start`; None unless each is there exactly as orjson writes it (the router's journal does),
    so that a shared prefix is only ever judged at the true end of a message."""
    dumps, pos = orjson.dumps, start
    for message in messages:
        said = dumps(message)
        if not prompt.startswith(said, pos):
            return None
        pos += len(said)
        ends.append(pos)
        pos += 1
    return ends


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
