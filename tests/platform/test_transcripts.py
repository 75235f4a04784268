"""Transcript hashing: the per-thread chain cache gives exactly the ids of a full hash."""

from __future__ import annotations

from typing import Any

from larrylab.platform.transcripts import ChainCache, MessageRow, chain


def _ids(thread: str, messages: list[dict[str, Any]]) -> list[str]:
    return [row.id for row in chain(thread, messages)]


def _turns(n: int) -> list[dict[str, Any]]:
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(n)
    ]


def test_follow_up_reuses_the_cached_prefix_and_adds_only_new_rows() -> None:
    cache = ChainCache()
    first = _turns(3)
    rows: dict[str, MessageRow] = {}
    proposed: dict[str, Any] = {}
    assert cache.chain(rows, (), "t", first, proposed) == _ids("t", first)
    assert len(rows) == 3
    cache.commit(proposed)

    follow_up = [*first, {"role": "assistant", "content": "new"}, {"role": "user", "content": "x"}]
    rows, proposed = {}, {}
    assert cache.chain(rows, (), "t", follow_up, proposed) == _ids("t", follow_up)
    assert [row.depth for row in rows.values()] == [3, 4]  # only the two new messages


def test_values_python_equates_but_json_does_not_get_different_ids() -> None:
    cache = ChainCache()
    proposed: dict[str, Any] = {}
    cache.chain({}, (), "t", [{"role": "user", "content": "x", "n": 1}], proposed)
    cache.commit(proposed)
    for other in (True, 1.0, [1], {"k": 1}):
        edited = [{"role": "user", "content": "x", "n": other}]
        got = cache.chain({}, (), "t", edited, {})
        assert got == _ids("t", edited), other
    nested = [{"role": "user", "content": [{"type": "text", "n": 1}]}]
    cache.chain({}, (), "u", nested, proposed := {})
    cache.commit(proposed)
    edited = [{"role": "user", "content": [{"type": "text", "n": True}]}]
    assert cache.chain({}, (), "u", edited, {}) == _ids("u", edited)


def test_an_uncommitted_batch_is_not_trusted() -> None:
    """A batch that was never stored (spilled) must not let a later batch skip its rows."""
    cache = ChainCache()
    first = _turns(2)
    cache.chain({}, (), "t", first, {})  # proposed, never committed
    rows: dict[str, MessageRow] = {}
    cache.chain(rows, (), "t", [*first, {"role": "user", "content": "more"}], {})
    assert len(rows) == 3


def test_the_bound_evicts_the_least_recent_threads() -> None:
    cache = ChainCache(max_messages=4)
    for thread in ("a", "b", "c"):
        proposed: dict[str, Any] = {}
        cache.chain({}, (), thread, _turns(2), proposed)
        cache.commit(proposed)
    rows: dict[str, MessageRow] = {}
    cache.chain(rows, (), "a", _turns(3), {})  # "a" fell out: hashed in full again
    assert len(rows) == 3
    rows = {}
    cache.chain(rows, (), "c", _turns(3), {})
    assert len(rows) == 1


def test_string_messages_compared_as_dicts_give_the_ids_of_their_canonical_json() -> None:
    """Messages of strings only are remembered as dicts; a follow-up that differs from one only
    in ways canonical JSON ignores (key order, a null field) or in ways it does not (a value of
    another type) still gets exactly the ids of a full hash."""
    cache = ChainCache()
    first = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    proposed: dict[str, Any] = {}
    cache.chain({}, (), "t", first, proposed)
    cache.commit(proposed)
    variants = [
        [{"content": "x", "role": "user"}, {"role": "assistant", "content": "y"}],
        [{"role": "user", "content": "x", "name": None}, {"role": "assistant", "content": "y"}],
        [{"role": "user", "content": ["x"]}, {"role": "assistant", "content": "y"}],
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "n": 1}],
    ]
    for edited in variants:
        rows: dict[str, MessageRow] = {}
        assert cache.chain(rows, (), "t", edited, {}) == _ids("t", edited), edited
    assert _ids("t", variants[1]) == _ids("t", first)  # a null field: the same messages
