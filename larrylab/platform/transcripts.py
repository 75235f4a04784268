"""Thread transcripts as a hash-chained tree of messages.

A message's id hashes its thread, its parent's id and its own canonical JSON, so the same
conversation prefix always maps to the same ids and a changed history branches. Each stored
request carries the messages it added to its thread's tree (`added_messages`, a JSON array of
their canonical JSON) and the id of the message they follow (`added_after_id`): a follow-up
that resends the conversation adds only its new turn and the reply. Readers hash them again to
rebuild the tree (`thread_messages`); rows of the `message` table, where transcripts were kept
before migration 0006, are read alongside.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, select

from larrylab.platform.models import Message, RequestLog


def canonical(message: dict[str, Any]) -> bytes:
    """The message as canonical JSON (sorted keys, no null fields)."""
    if None in message.values():
        message = {k: v for k, v in message.items() if v is not None}
    return orjson.dumps(message, option=orjson.OPT_SORT_KEYS)


def _canonical_all(messages: Sequence[dict[str, Any]]) -> list[bytes]:
    """`canonical` of each message (inlined for the common message without null fields)."""
    dumps, sort = orjson.dumps, orjson.OPT_SORT_KEYS
    return [canonical(msg) if None in msg.values() else dumps(msg, option=sort) for msg in messages]


class Added(NamedTuple):
    """What a request added to its thread's transcript: the id of the message the added ones
    follow (None at the start of the thread) and their canonical JSON, in order."""

    after_id: str | None
    bodies: list[bytes]

    def as_json(self) -> str | None:
        """The added messages as one JSON array (None if there are none)."""
        return "[" + b",".join(self.bodies).decode() + "]" if self.bodies else None


def chain_ids(
    thread_id: str, messages: Sequence[dict[str, Any]], parent_id: str | None = None
) -> list[str]:
    """The ids of `messages` chained after `parent_id` (a full hash, no cache)."""
    return _extend(thread_id, _canonical_all(messages), parent_id)


def _extend(thread_id: str, bodies: Sequence[bytes], parent_id: str | None) -> list[str]:
    """The ids of the messages whose canonical JSON is `bodies`, chained after `parent_id`."""
    ids = []
    thread = thread_id.encode("utf-8")
    for body in bodies:
        # the chain hash: thread, parent id and canonical JSON, NUL-separated
        key = b"\x00".join((thread, (parent_id or "").encode("ascii"), body))
        parent_id = blake2b(key, digest_size=16).hexdigest()
        ids.append(parent_id)
    return ids


Key = dict[str, Any] | bytes
"""How the chain cache remembers a message: the message itself when all its values are strings
(then equal dicts mean equal canonical JSON), else its canonical JSON."""


Chain = tuple[list[Key], list[str], bytes | None, dict[str, Any] | None, dict[str, None]]
"""A thread's last chain of messages as the cache holds it: each message's key, each one's id,
for a chain that came from a prompt's JSON text (`ChainCache.chain_json`) that text and the
reply that followed (else None, None), and the ids that requests of the batch being prepared
added to the thread (empty once committed; a proposed entry's grows in place)."""

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

    Besides its last chain, the cache remembers the last `known_per_thread` ids stored for each
    thread, so that a request that goes back to an earlier branch (after an edit) adds only what
    that branch lacks. Entries are proposed while a batch is prepared and kept only once the
    batch is stored (`commit`), so a remembered id always names a stored message. Bounded by the
    number of ids held; a thread that fell out is hashed in full again, which gives the same
    ids, and its next request adds the whole conversation again (readers keep one copy of each
    id).
    """

    def __init__(self, max_messages: int = 100_000, known_per_thread: int = 128) -> None:
        self._chains: OrderedDict[str, Chain] = OrderedDict()
        self._known: dict[str, dict[str, None]] = {}  # thread -> ids stored, oldest first
        self._held = 0
        self._max = max_messages
        self._known_max = known_per_thread

    def chain(
        self, thread_id: str, messages: Sequence[dict[str, Any]], proposed: Chains
    ) -> tuple[list[str], Added]:
        """The ids of `messages` as one chain, and what they add to the thread's last chain
        (all of them for a thread this cache does not hold). Proposes `messages` as the
        thread's new last chain (in `proposed`)."""
        prev = proposed.get(thread_id)
        batch: dict[str, None] = {} if prev is None else prev[4]  # never a committed entry's
        prev = prev or self._chains.get(thread_id)
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
        bodies: list[bytes] = []
        if same < len(messages):
            added = messages[same:]
            bodies = _canonical_all(added)
            ids.extend(_extend(thread_id, bodies, ids[-1] if ids else None))
            keys.extend(map(_key, added, bodies))
            first, same = same, self._stored_up_to(thread_id, ids, same, batch)
            bodies = bodies[same - first :]
        what = Added(ids[same - 1] if same else None, bodies)
        batch.update(dict.fromkeys(ids[same:]))
        proposed[thread_id] = (keys, ids, None, None, batch)
        return ids, what

    def chain_json(
        self, thread_id: str, prompt: bytes, reply: dict[str, Any] | None, proposed: Chains
    ) -> tuple[list[str], Added]:
        """`chain` of a prompt given as its JSON text (as the journal holds it), then its reply.
        Raises ValueError if `prompt` is not a JSON array of objects.

        A follow-up request's text begins with the text of the thread's last chain, its prompt
        and reply: then only the messages after that are decoded and hashed. Equal text means
        equal messages, so this gives the ids that comparing every message would; other text (a
        branch, a new thread, another serialization) is decoded and compared in full."""
        prev = proposed.get(thread_id) or self._chains.get(thread_id)
        start = 0 if prev is None else _continues(prompt, prev)
        if prev is None or not start:
            messages = _messages(prompt)
            convo = [*messages, reply] if reply else messages
            ids, what = self.chain(thread_id, convo, proposed)
            keys, batch = proposed[thread_id][0], proposed[thread_id][4]
        else:
            added = _messages(b"[" + prompt[start:])
            if not added:  # "[m1,...,mk,]" is not JSON
                raise ValueError("a prompt is not a JSON array of messages")
            if reply:
                added.append(reply)
            bodies = _canonical_all(added)
            keys, ids = [*prev[0], *map(_key, added, bodies)], [*prev[1]]
            first = len(ids)
            ids += _extend(thread_id, bodies, ids[-1])
            batch = proposed[thread_id][4] if thread_id in proposed else {}
            same = self._stored_up_to(thread_id, ids, first, batch)
            what = Added(ids[same - 1], bodies[same - first :])
            batch.update(dict.fromkeys(ids[same:]))
        proposed[thread_id] = (keys, ids, prompt, reply, batch)
        return ids, what

    def _stored_up_to(
        self, thread_id: str, ids: list[str], start: int, batch: dict[str, None]
    ) -> int:
        """How many of `ids` are stored, knowing the first `start` are: the stored messages
        of a chain are a prefix of it, as a message is stored with or after its parent."""
        known = self._known.get(thread_id)
        while start < len(ids) and (
            (known is not None and ids[start] in known) or ids[start] in batch
        ):
            start += 1
        return start

    def commit(self, proposed: Chains) -> None:
        """Keep the chains and ids of a stored batch; forget the least recent threads over the
        bound."""
        for thread_id, (keys, ids, text, reply, batch) in proposed.items():
            old = self._chains.pop(thread_id, None)
            if old is not None:
                self._held -= len(old[1])
            self._chains[thread_id] = (keys, ids, text, reply, {})
            self._held += len(ids)
            if batch:
                known = self._known.setdefault(thread_id, {})
                self._held -= len(known)
                known.update(batch)
                for _ in range(len(known) - self._known_max):
                    del known[next(iter(known))]
                self._held += len(known)
        while self._held > self._max and self._chains:
            thread_id, dropped = self._chains.popitem(last=False)
            self._held -= len(dropped[1]) + len(self._known.pop(thread_id, ()))


def _messages(text: bytes | str) -> list[dict[str, Any]]:
    """The messages of a prompt's JSON text (ValueError if it is not an array of objects)."""
    value = orjson.loads(text)
    if type(value) is not list or not all(type(m) is dict for m in value):
        raise ValueError("a prompt is not a JSON array of messages")
    return value


def _continues(prompt: bytes, prev: Chain) -> int:
    """Where the first message after `prev`'s begins in `prompt`'s text, if that text begins
    with the text of `prev`'s prompt and reply ("[m1,...,mk,r,"); else 0."""
    _, ids, text, reply, _ = prev
    if text is None or not ids:
        return 0
    at = len(text) - 1  # where `text` has its closing bracket, `prompt` must have a comma
    if len(prompt) <= at or prompt[at] != 0x2C or not prompt.startswith(memoryview(text)[:at]):
        return 0
    at += 1
    if reply:
        said = orjson.dumps(reply)
        end = at + len(said)
        if len(prompt) <= end or prompt[end] != 0x2C or not prompt.startswith(said, at):
            return 0
        at = end + 1
    return at


def thread_messages(conn: Connection, thread_id: str) -> dict[str, tuple[str | None, str]]:
    """Every stored message of a thread: id -> (parent id, canonical JSON). A message that
    several requests added (a thread the chain cache had let go) is one entry."""
    nodes: dict[str, tuple[str | None, str]] = {}
    r = RequestLog.__table__.c  # type: ignore[attr-defined]
    added = select(r.added_after_id, r.added_messages).where(
        r.thread_id == thread_id, r.added_messages.is_not(None)
    )
    for parent, text in conn.execute(added):
        bodies = _canonical_all(_messages(text))
        for mid, body in zip(_extend(thread_id, bodies, parent), bodies, strict=True):
            if mid not in nodes:
                nodes[mid] = (parent, body.decode())
            parent = mid
    m = Message.__table__.c  # type: ignore[attr-defined]
    before_0006 = select(m.id, m.parent_id, m.body).where(m.thread_id == thread_id)
    for mid, parent, body in conn.execute(before_0006):
        nodes.setdefault(mid, (parent, body))
    return nodes


def rebuild(conn: Connection, thread_id: str, last_id: str | None) -> list[dict[str, Any]]:
    """The messages from the start of the thread up to and including `last_id`."""
    if last_id is None:
        return []
    by_id = thread_messages(conn, thread_id)
    out: list[dict[str, Any]] = []
    cursor: str | None = last_id
    while cursor is not None:
        parent, body = by_id[cursor]
        out.append(orjson.loads(body))
        cursor = parent
    out.reverse()
    return out
