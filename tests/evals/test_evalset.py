"""The held-out eval set: it loads, it is frozen by its hash, and bad files are refused clearly."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from larrylab.evals import evalset
from larrylab.evals.evalset import (
    CATEGORIES,
    EVAL_SET_VERSION,
    EvalSetError,
    eval_set_hash,
    load_eval_items,
    read_items,
)

# Changing the eval set must be deliberate: a new file, a new EVAL_SET_VERSION and a new pin.
FROZEN = ("pws_eval_v1", "14b4f762b5ee5b003c6b827efce506534c148aeaf6bb56f26c1846c3cb7eb431")


def test_eval_set_is_frozen() -> None:
    assert (EVAL_SET_VERSION, eval_set_hash()) == FROZEN


def test_every_category_has_at_least_15_items_with_rubrics_and_checks() -> None:
    items = load_eval_items()
    counts = Counter(i.category for i in items)
    assert set(counts) == set(CATEGORIES)
    assert min(counts.values()) >= 15
    assert len({i.id for i in items}) == len(items)
    for item in items:
        assert item.messages[-1]["role"] == "user"
        assert len(item.rubric) >= 3
        assert "no_refusal" in item.checks
    red_team = [i for i in items if i.category == "red_team"]
    assert all("challenges_assumption" in i.checks for i in red_team)
    clarification = [i for i in items if i.category == "problem_clarification"]
    assert all({"asks_question", "no_solution_jump"} <= set(i.checks) for i in clarification)


def test_items_expose_what_decontamination_reads() -> None:
    item = load_eval_items()[0]
    assert isinstance(item.id, str) and item.category in CATEGORIES
    assert all(set(m) == {"role", "content"} for m in item.messages)


def test_hash_ignores_formatting_but_not_content(tmp_path: Path) -> None:
    lines = evalset.default_path().read_text(encoding="utf-8").splitlines()
    pretty = tmp_path / "pretty.jsonl"
    pretty.write_text("\n".join(json.dumps(json.loads(x), indent=None) for x in lines) + "\n\n")
    assert evalset.items_hash(read_items(pretty)) == FROZEN[1]
    record = json.loads(lines[0])
    record["rubric"][0] += "!"
    changed = tmp_path / "changed.jsonl"
    changed.write_text("\n".join([json.dumps(record), *lines[1:]]))
    assert evalset.items_hash(read_items(changed)) != FROZEN[1]


def test_a_changed_file_is_refused_until_the_version_is_bumped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = evalset.default_path().read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[0])
    record["messages"][-1]["content"] += " Please?"
    changed = tmp_path / "pws_eval_v1.jsonl"
    changed.write_text("\n".join([json.dumps(record), *lines[1:]]))
    monkeypatch.setattr(evalset, "default_path", lambda: changed)
    with pytest.raises(EvalSetError, match="needs a new EVAL_SET_VERSION"):
        load_eval_items()


def _write(tmp_path: Path, records: list[dict[str, object]]) -> Path:
    good = [json.loads(x) for x in evalset.default_path().read_text().splitlines()]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*records, *good]))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"category": "astrology"}, "unknown category 'astrology'"),
        ({"checks": ["is_kind"]}, "'checks' must list names"),
        ({"rubric": []}, "'rubric' must be a non-empty list"),
        ({"messages": [{"role": "assistant", "content": "Hi"}]}, "last message must be"),
        ({"messages": [{"role": "robot", "content": "Hi"}]}, r"messages\[0\] must be"),
        ({"id": "pc-01"}, "duplicate id 'pc-01'"),
        ({"extra": 1}, "fields must be exactly"),
    ],
)
def test_bad_items_are_refused_with_line_and_reason(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    base = {
        "id": "new-01",
        "category": "tta",
        "messages": [{"role": "user", "content": "Trend: more drones."}],
        "rubric": ["Pushes the trend to the absurd"],
        "checks": ["asks_question"],
    }
    with pytest.raises(EvalSetError, match=message) as err:
        read_items(_write(tmp_path, [{**base, **change}]))
    assert str(err.value).startswith("set.jsonl:")


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"id": "x",\n')
    with pytest.raises(EvalSetError, match=r"broken.jsonl:1: not valid JSON"):
        read_items(path)
