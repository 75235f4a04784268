"""Transcript hashing: the per-thread chain cache gives exactly the ids of a full hash."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from larrylab.requestlog._transcripts import ChainCache, MessageRow, chain


def _ids(thread: str, messages: list[dict[str, Any]]) -> list[str]:
    return [row[0] for row in chain(thread, messages)]


def _turns(n: int) -> list[dict[str, Any]]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(n)
    ]


def test_follow_up_reuses_the_cached_prefix_and_adds_only_new_rows() -> None:
    cache = ChainCache()
    first = _turns(3)
    rows: dict[str, MessageRow] = {}
    proposed: dict[str, Any] = {}
    assert cache.chain(rows, "t", first, proposed) == _ids("t", first)
    assert len(rows) == 3
    cache.commit(proposed)

    follow_up = [*first, {"role": "assistant", "content": "new"}, {"role": "user", "content": "x"}]
    rows, proposed = {}, {}
    assert cache.chain(rows, "t", follow_up, proposed) == _ids("t", follow_up)
    assert [row[3] for row in rows.values()] == [3, 4]  # only the two new messages


def test_values_python_equates_but_json_does_not_get_different_ids() -> None:
    cache = ChainCache()
    proposed: dict[str, Any] = {}
    cache.chain({}, "t", [{"role": "user", "content": "x", "n": 1}], proposed)
    cache.commit(proposed)
    for other in (True, 1.0, [1], {"k": 1}):
        edited = [{"role": "user", "content": "x", "n": other}]
        got = cache.chain({}, "t", edited, {})
        assert got == _ids("t", edited), other
    nested = [{"role": "user", "content": [{"type": "text", "n": 1}]}]
    cache.chain({}, "u", nested, proposed := {})
    cache.commit(proposed)
    edited = [{"role": "user", "content": [{"type": "text", "n": True}]}]
    assert cache.chain({}, "u", edited, {}) == _ids("u", edited)


def test_an_uncommitted_batch_is_not_trusted() -> None:
    """A batch that was never stored (spilled) must not let a later batch skip its rows."""
    cache = ChainCache()
    first = _turns(2)
    cache.chain({}, "t", first, {})  # proposed, never committed
    rows: dict[str, MessageRow] = {}
    cache.chain(rows, "t", [*first, {"role": "user", "content": "more"}], {})
    assert len(rows) == 3


def test_the_bound_evicts_the_least_recent_threads() -> None:
    cache = ChainCache(max_messages=4)
    for thread in ("a", "b", "c"):
        proposed: dict[str, Any] = {}
        cache.chain({}, thread, _turns(2), proposed)
        cache.commit(proposed)
    rows: dict[str, MessageRow] = {}
    cache.chain(rows, "a", _turns(3), {})  # "a" fell out: hashed in full again
    assert len(rows) == 3
    rows = {}
    cache.chain(rows, "c", _turns(3), {})
    assert len(rows) == 1


def test_string_messages_compared_as_dicts_give_the_ids_of_their_canonical_json() -> None:
    """Messages of strings only are remembered as dicts; a follow-up that differs from one only
    in ways canonical JSON ignores (key order, a null field) or in ways it does not (a value of
    another type) still gets exactly the ids of a full hash."""
    cache = ChainCache()
    first = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    proposed: dict[str, Any] = {}
    cache.chain({}, "t", first, proposed)
    cache.commit(proposed)
    variants = [
        [{"content": "x", "role": "user"}, {"role": "assistant", "content": "y"}],
        [{"role": "user", "content": "x", "name": None}, {"role": "assistant", "content": "y"}],
        [{"role": "user", "content": ["x"]}, {"role": "assistant", "content": "y"}],
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "n": 1}],
    ]
    for edited in variants:
        rows: dict[str, MessageRow] = {}
        assert cache.chain(rows, "t", edited, {}) == _ids("t", edited), edited
    assert _ids("t", variants[1]) == _ids("t", first)  # a null field: the same messages


def _text(messages: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(messages)


def _chain_json(
    cache: ChainCache, thread: str, prompt: bytes, reply: dict[str, Any] | None
) -> tuple[list[str], dict[str, MessageRow]]:
    rows: dict[str, MessageRow] = {}
    proposed: dict[str, Any] = {}
    ids = cache.chain_json(rows, thread, prompt, reply, proposed)
    cache.commit(proposed)
    return ids, rows


def test_a_prompt_as_json_text_gets_the_ids_of_a_full_hash_however_it_continues() -> None:
    """The journal's prompts arrive as JSON text: a follow-up whose text begins with the last
    prompt and reply decodes only what it adds; a branch, an edit, a retry without a reply or
    another serialization of the same messages still gets exactly the ids of a full hash."""
    cache = ChainCache()
    said = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    reply = {"role": "assistant", "content": "hello"}
    ids, rows = _chain_json(cache, "t", _text(said), reply)
    assert ids == _ids("t", [*said, reply]) and len(rows) == 3

    follow_up = [*said, reply, {"role": "user", "content": 'more\ttabs and "quotes"'}]
    ids, rows = _chain_json(cache, "t", _text(follow_up), {"role": "assistant", "content": "ok"})
    assert ids == _ids("t", [*follow_up, {"role": "assistant", "content": "ok"}])
    assert [row[3] for row in rows.values()] == [3, 4]  # only the new user turn and reply

    cases: list[tuple[list[dict[str, Any]], bytes | None]] = [
        ([*said, {"role": "user", "content": "edited"}], None),  # a branch
        (follow_up, orjson.dumps(follow_up, option=orjson.OPT_INDENT_2)),  # other spacing
        ([*follow_up, {"role": "assistant", "content": "ok"}], None),  # follows, no reply
        (
            [*follow_up, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "z"}],
            None,
        ),
        ([{"content": "be brief", "role": "system"}, *follow_up[1:]], None),  # key order
        ([*said, reply, {"role": "user", "content": "n", "n": 1.5}], None),
    ]
    for messages, text in cases:
        ids, _ = _chain_json(cache, "t", text or _text(messages), None)
        assert ids == _ids("t", messages), messages


def test_a_reply_that_the_client_sends_back_otherwise_is_compared_in_full() -> None:
    """The next prompt must repeat the reply as the journal wrote it for the shortcut; a client
    that adds a field or reorders it gets a branch or the same ids, as a full hash gives."""
    cache = ChainCache()
    said = [{"role": "user", "content": "hi"}]
    reply = {"role": "assistant", "content": "hello"}
    _chain_json(cache, "t", _text(said), reply)
    for resent in ({"content": "hello", "role": "assistant"}, {**reply, "refusal": None}):
        messages = [*said, resent, {"role": "user", "content": "next"}]
        ids, _ = _chain_json(cache, "t", _text(messages), None)
        assert ids == _ids("t", messages)
        _chain_json(cache, "t", _text(said), reply)  # back to the first chain


def test_a_branch_shares_the_text_of_whole_messages_only() -> None:
    """A regenerated or edited turn repeats the start of the thread's last prompt: the messages
    it shares are judged by text at their true ends (content full of brackets, commas and
    quotes cannot shift them), and every branch gets exactly the ids of a full hash."""
    cache = ChainCache()
    tricky = {"role": "user", "content": '"},{"role":"user","content":"x"}],[,'}
    said = [{"role": "system", "content": "be brief"}, tricky, {"role": "user", "content": "a"}]
    reply = {"role": "assistant", "content": "hello"}
    _chain_json(cache, "t", _text(said), reply)
    branches = [
        [*said[:2], {"role": "user", "content": "b"}],  # the last turn regenerated
        [*said[:2], {"role": "user", "content": "b"}, {"role": "user", "content": "c"}],
        [said[0], {"role": "user", "content": '"},{"role":"user","content":"y"}],[,'}],
        [said[0]],  # fewer messages than the last prompt
        [*said[:2], {"role": "user", "content": "a", "name": "n"}],  # a field added
        said,  # the same prompt again
        [{"role": "system", "content": "be brief!"}, *said[1:]],  # nothing shared
        [{"role": "system", "content": "be briex"}, *said[1:]],  # nor here: same lengths
        [said[0], {**tricky, "content": tricky["content"][::-1]}, said[2]],
    ]
    for messages in branches:
        ids, rows = _chain_json(cache, "t", _text(messages), reply)
        assert ids == _ids("t", [*messages, reply]), messages
        assert {row[0] for row in rows.values()} <= set(ids)
    spaced = orjson.dumps(said, option=orjson.OPT_INDENT_2)  # not as the journal writes it
    ids, _ = _chain_json(cache, "t", spaced, None)
    assert ids == _ids("t", said)
    ids, _ = _chain_json(cache, "t", _text([*said[:2], {"role": "user", "content": "z"}]), None)
    assert ids == _ids("t", [*said[:2], {"role": "user", "content": "z"}])


def test_prompt_text_that_is_not_an_array_of_messages_is_refused() -> None:
    cache = ChainCache()
    said = [{"role": "user", "content": "hi"}]
    reply = {"role": "assistant", "content": "hello"}
    _chain_json(cache, "t", _text(said), reply)
    continued = _text([*said, reply])[:-1]
    for bad in (b"{}", b"[1]", b'[{"role": "user"', continued + b",]", continued + b",3]"):
        with pytest.raises(ValueError):
            cache.chain_json({}, "t", bad, None, {})
