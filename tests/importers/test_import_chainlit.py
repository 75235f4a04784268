"""`larrylab import chainlit` on Chainlit rows written by SQL: transcripts with the router's
message ids, ratings on the messages they rate, lineage, `--since`, the bot map, reruns that
add only what is new, and bad input refused with a sentence."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from larrylab.db import Feedback, Imported, Message, Thread, make_engine, upgrade
from larrylab.importers import BotMapError, load_bot_map
from larrylab.requestlog import chain
from tests.importers.factories import (
    T0,
    ChainlitWriter,
    assert_refused,
    jsonl,
    larrylab,
    rating_record,
)

TTA_TURNS = [
    (
        "Remote work keeps growing. Where could that trend end up?",
        "Push it to the absurd: what if nobody ever met in person again?",
    ),
    (
        "Then offices would be empty museums.",
        "Good. What new problem would people have in that world?",
    ),
]
BONO_TURNS = [
    (
        "Give me six thinking hats for my bakery.",
        "Start with the white hat: what facts do you have about your customers?",
    )
]


def _import(store: str, source: str, *extra: str) -> dict[str, Any]:
    result = larrylab(
        "import", "chainlit", "--from", source, "--database-url", store, "--json", *extra
    )
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def _convo(turns: list[tuple[str, str]]) -> list[dict[str, str]]:
    out = []
    for user, reply in turns:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return out


def _rows(url: str, model: Any, *where: Any) -> list[Any]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(model.__table__).where(*where)).all()  # type: ignore[attr-defined]
    engine.dispose()
    return list(rows)


def test_threads_become_transcripts_with_the_routers_ids_and_lineage(
    migrated_url: str, chainlit_sqlite: str
) -> None:
    cl = ChainlitWriter(chainlit_sqlite)
    tta = cl.thread("tta")
    cl.step(tta, "assistant_message", "Welcome! I am Larry's TTA coach.", T0)  # a greeting
    tta_replies = cl.conversation(tta, TTA_TURNS)
    cl.step(tta, "user_message", "   ", T0 + timedelta(hours=1))  # empty
    bono = cl.thread("bono")
    cl.conversation(bono, BONO_TURNS)
    unanswered = cl.thread("jtbd")
    cl.step(unanswered, "user_message", "Hello, anyone there?", T0)

    summary = _import(migrated_url, chainlit_sqlite)

    assert (summary["threads"], summary["messages"], summary["ratings"]) == (2, 6, 0)
    assert summary["skipped"] == {
        "message before the user's first": 1,
        "message with empty text": 1,
        "thread without an assistant reply": 1,
    }
    tid = f"chainlit:{tta}"
    expected = chain(tid, _convo(TTA_TURNS))  # what the request log stores for this talk
    stored = _rows(migrated_url, Message, Message.thread_id == tid)  # type: ignore[arg-type]
    assert {(m.id, m.parent_id, m.role, m.body) for m in stored} == {
        (row[0], row[2], row[4], row[5]) for row in expected
    }
    (thread,) = _rows(migrated_url, Thread, Thread.id == tid)  # type: ignore[arg-type]
    assert (thread.unit_source, thread.route) == ("import", "")
    lineage = {
        (r.kind, r.source_id): r
        for r in _rows(migrated_url, Imported, Imported.source == "chainlit")  # type: ignore[arg-type]
    }
    assert (lineage[("thread", tta)].bot, lineage[("thread", tta)].category) == ("tta", "tta")
    assert lineage[("thread", bono)].category is None  # bono has no PWS category
    assert ("thread", unanswered) not in lineage
    assert lineage[("message", tta_replies[-1])].message_id == expected[-1][0]
    assert lineage[("message", tta_replies[-1])].thread_id == tid


def test_thumbs_and_rating_records_rate_the_messages_they_name(
    migrated_url: str, chainlit_sqlite: str, tmp_path: Path
) -> None:
    cl = ChainlitWriter(chainlit_sqlite)
    tta = cl.thread("tta")
    replies = cl.conversation(tta, TTA_TURNS)
    cl.thumb(replies[0], tta, 1, comment="sharp")
    ratings = tmp_path / "ratings.jsonl"
    categories = {
        "accuracy": True,
        "relevance": True,
        "clarity": False,
        "depth": True,
        "actionable": False,
    }
    ratings.write_text(
        jsonl(
            [
                rating_record(replies[1], tta, 2, categories=categories, at=T0),
                rating_record(
                    replies[1],
                    tta,
                    5,
                    categories=categories,
                    comment="great",
                    at=T0 + timedelta(minutes=5),
                ),
                rating_record(replies[1], tta, 1, kind="thumbs"),
            ]
        )
    )

    summary = _import(migrated_url, chainlit_sqlite, "--ratings", str(ratings))

    assert summary["ratings"] == 3 and summary["skipped"] == {}
    expected = chain(f"chainlit:{tta}", _convo(TTA_TURNS))
    first_reply, last_reply = expected[1][0], expected[3][0]
    rows = {(f.target, f.source): f for f in _rows(migrated_url, Feedback)}
    assert set(rows) == {
        (f"message:{first_reply}", "chainlit"),
        (f"message:{last_reply}", "chainlit-ratings"),
    }
    thumb = rows[(f"message:{first_reply}", "chainlit")]
    assert (thumb.thumb, thumb.score, thumb.comment, thumb.request_id) == (1, None, "sharp", None)
    assert thumb.thread_id == f"chainlit:{tta}"
    detailed = rows[(f"message:{last_reply}", "chainlit-ratings")]
    assert (detailed.score, detailed.thumb, detailed.comment) == (5, 1, "great")  # the latest
    assert json.loads(detailed.categories) == categories


def test_ratings_for_unknown_messages_or_threads_are_skipped_with_the_reason(
    migrated_url: str, chainlit_sqlite: str, tmp_path: Path
) -> None:
    cl = ChainlitWriter(chainlit_sqlite)
    tta = cl.thread("tta")
    cl.conversation(tta, TTA_TURNS)
    user_step = cl.step(
        tta, "user_message", "One more question about offices.", T0 + timedelta(hours=2)
    )
    run_step = cl.step(tta, "run", "", T0 + timedelta(hours=2))
    cl.thumb(run_step, tta, 1)  # rates a step that is not a message
    cl.thumb(user_step, tta, 0)  # rates the user's own message
    ratings = tmp_path / "ratings.json"
    ratings.write_text(
        json.dumps(
            [
                rating_record("5d0c0b8e-0000-4000-8000-000000000000", tta, 4),
                rating_record("6e0c0b8e-0000-4000-8000-000000000000", "no-such-thread", 4),
                {"message_id": "x", "score": "five"},
            ]
        )
    )

    summary = _import(migrated_url, chainlit_sqlite, "--ratings", str(ratings))

    assert summary["ratings"] == 0
    assert summary["skipped"] == {
        "rating for unknown message": 2,
        "rating for unknown thread": 1,
        "rating of a user message": 1,
        "malformed rating record": 1,
    }
    assert _rows(migrated_url, Feedback) == []


def test_since_takes_threads_created_or_continued_after_it(
    migrated_url: str, chainlit_sqlite: str
) -> None:
    cl = ChainlitWriter(chainlit_sqlite)
    old = cl.thread("tta", at=T0)
    cl.conversation(old, TTA_TURNS, at=T0)
    continued = cl.thread("bono", at=T0)
    cl.conversation(continued, BONO_TURNS, at=T0)
    cl.conversation(
        continued,
        [("And the red hat?", "Your feelings: how do you feel about the bakery?")],
        at=T0 + timedelta(days=9),
    )
    new = cl.thread("jtbd", at=T0 + timedelta(days=10))
    cl.conversation(
        new,
        [("What job does bread do?", "Who hires your bread, and for what moment of their day?")],
        at=T0 + timedelta(days=10),
    )

    since = (T0 + timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    summary = _import(migrated_url, chainlit_sqlite, "--since", since)

    assert (summary["threads"], summary["messages"]) == (2, 6)
    threads = {t.id for t in _rows(migrated_url, Thread)}
    assert threads == {f"chainlit:{continued}", f"chainlit:{new}"}
    assert _import(migrated_url, chainlit_sqlite)["threads"] == 1  # the old one, once asked


def test_a_rerun_imports_only_what_is_new_and_updates_changed_ratings(
    migrated_url: str, chainlit_sqlite: str
) -> None:
    cl = ChainlitWriter(chainlit_sqlite)
    tta = cl.thread("tta")
    replies = cl.conversation(tta, TTA_TURNS[:1])
    thumb = cl.thumb(replies[0], tta, 1)
    bono = cl.thread("bono")
    cl.conversation(bono, BONO_TURNS)
    first = _import(migrated_url, chainlit_sqlite)
    assert (first["threads"], first["messages"], first["ratings"]) == (2, 4, 1)

    more = cl.conversation(tta, TTA_TURNS[1:], at=T0 + timedelta(hours=1))
    cl.thumb(more[0], tta, 1)
    cl.set_thumb(thumb, 0)
    second = _import(migrated_url, chainlit_sqlite)

    assert (second["threads"], second["threads_extended"], second["messages"]) == (0, 1, 2)
    assert (second["ratings"], second["ratings_updated"]) == (1, 0 + 1)
    assert second["skipped"] == {"thread already imported": 1}
    tid = f"chainlit:{tta}"
    messages = _rows(migrated_url, Message, Message.thread_id == tid)  # type: ignore[arg-type]
    assert {m.id for m in messages} == {row[0] for row in chain(tid, _convo(TTA_TURNS))}
    thumbs = sorted(f.thumb for f in _rows(migrated_url, Feedback))
    assert thumbs == [0, 1]  # the changed thumb updated its row; the new one added

    third = _import(migrated_url, chainlit_sqlite)
    assert (third["threads"], third["messages"], third["ratings"], third["ratings_updated"]) == (
        0,
        0,
        0,
        0,
    )
    assert third["skipped"] == {"thread already imported": 2, "rating already imported": 2}
    assert len(_rows(migrated_url, Imported)) == 2 + 6 + 2


def test_the_bot_map_has_defaults_and_a_file_overrides_and_extends_them(tmp_path: Path) -> None:
    defaults = load_bot_map(None)
    assert (
        defaults.category("lawrence")
        == defaults.category("Larry Playground")
        == "problem_clarification"
    )
    assert (
        defaults.category("TTA"),
        defaults.category("S-Curve"),
        defaults.category("redteam"),
    ) == ("tta", "s_curve", "red_team")
    assert defaults.category("ackoff") == "ackoff_dikw" and defaults.category("bono") is None
    yaml_map = tmp_path / "bots.yaml"
    yaml_map.write_text("bono: red_team\ntta: null\n")
    custom = load_bot_map(yaml_map)
    assert (custom.category("bono"), custom.category("tta"), custom.category("jtbd")) == (
        "red_team",
        None,
        "jtbd",
    )
    json_map = tmp_path / "bots.json"
    json_map.write_text('{"scenario": "s_curve"}')
    assert load_bot_map(json_map).category("scenario") == "s_curve"
    json_map.write_text('{"scenario": "Scenario Planning"}')
    with pytest.raises(BotMapError, match="not a PWS category"):
        load_bot_map(json_map)


def test_the_bot_map_file_sets_the_category_of_imported_threads(
    migrated_url: str, chainlit_sqlite: str, tmp_path: Path
) -> None:
    cl = ChainlitWriter(chainlit_sqlite)
    bono = cl.thread("bono")
    cl.conversation(bono, BONO_TURNS)
    bots = tmp_path / "bots.yaml"
    bots.write_text("bono: red_team\n")
    _import(migrated_url, chainlit_sqlite, "--bot-map", str(bots))
    (row,) = _rows(migrated_url, Imported, Imported.kind == "thread")  # type: ignore[arg-type]
    assert (row.bot, row.category) == ("bono", "red_team")


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    return url


def test_a_bot_map_naming_an_unknown_category_exits_2(
    store: str, chainlit_sqlite: str, tmp_path: Path
) -> None:
    bots = tmp_path / "bots.yaml"
    bots.write_text("tta: trending\n")
    result = larrylab(
        "import",
        "chainlit",
        "--from",
        chainlit_sqlite,
        "--database-url",
        store,
        "--bot-map",
        str(bots),
    )
    assert_refused(result, "'trending', which is not a PWS category", 2)


def test_bad_input_is_refused_with_a_sentence(
    store: str, chainlit_sqlite: str, tmp_path: Path
) -> None:
    def run(*args: str) -> Any:
        return larrylab("import", "chainlit", "--database-url", store, *args)

    assert_refused(
        run("--from", "postgresql://postgres@127.0.0.1:1/chainlit"),
        "cannot read the Chainlit database",
        1,
    )
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    make_engine(empty).connect().close()
    assert_refused(run("--from", empty), "has no Chainlit tables", 2)
    assert_refused(run("--from", "mysql://larry@db/chainlit"), "unsupported database", 2)
    assert_refused(
        run("--from", chainlit_sqlite, "--since", "last tuesday"), "not an ISO 8601 time", 2
    )
    garbage = tmp_path / "ratings.json"
    garbage.write_text("thumbs up from everyone\nreally\n")
    assert_refused(
        run("--from", chainlit_sqlite, "--ratings", str(garbage)), "neither JSON nor JSON lines", 2
    )
    missing = tmp_path / "nowhere.jsonl"
    assert_refused(run("--from", chainlit_sqlite, "--ratings", str(missing)), "does not exist", 2)
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = larrylab("import", "chainlit", "--from", chainlit_sqlite, "--database-url", fresh)
    assert_refused(result, "larrylab db upgrade", 2)
