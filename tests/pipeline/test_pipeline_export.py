"""Export: which threads qualify (by stars, by thumbs, vetoes), exact rebuilds of what the model
saw, routed and imported threads alike, lineage, scrubbing, pseudonymised thread ids, and
categories from the bot, the classifier prompt (on the simulator) or keywords."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from larrylab.db._engine import make_engine
from larrylab.experiments import attribute_request, upsert_feedback
from larrylab.importers import ImportOptions, import_chainlit, open_source
from larrylab.pipeline.categories import CATEGORIES
from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.export import ExportOptions, run_export
from larrylab.pipeline.llm import LLMOptions
from larrylab.pipeline.pseudonyms import pseudonymizer
from larrylab.pipeline.records import Record, read_records
from larrylab.sim import SimConfig
from tests.importers.factories import ChainlitWriter, create_chainlit_schema
from tests.pipeline.factories import (
    SYSTEM,
    ThreadSpec,
    counting_sim,
    request,
    seed_store,
    sim_context,
)

USERS = ["What job do people hire our meal kits to do?", "They said it saves them planning time."]
REPLIES = [
    "What job is a busy parent hiring the meal kit to do on a Tuesday night?",
    "Planning time is a clue. What were they doing before the kit, and what did it cost them?",
]


def _thread(tid: str, scores: tuple[int, ...]) -> ThreadSpec:
    return ThreadSpec(id=tid, users=USERS, replies=REPLIES, scores=scores)


def _keywords(tmp_path: Path, **opts: object) -> PipelineContext:
    return PipelineContext(out=tmp_path / "run", llm=LLMOptions(), progress=False)


@pytest.fixture(autouse=True)
def _no_pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run folder makes its own pseudonym key unless a test sets one."""
    monkeypatch.delenv("LARRYLAB_PSEUDONYM_KEY", raising=False)


def _records(ctx: PipelineContext) -> list[Record]:
    return list(read_records(ctx.out / "export/records.jsonl"))


def _exported(ctx: PipelineContext, candidates: Iterable[str]) -> list[str]:
    """The store ids of the exported threads (records carry pseudonyms), sorted."""
    pseudonym = pseudonymizer(ctx.out)
    known = {pseudonym(c): c for c in candidates}
    return sorted({known[r.source_thread_id] for r in _records(ctx)})


def _thumb(engine: Engine, thread: str, thumb: int, source: str = "u") -> None:
    """A thumb on the last request of a routed thread."""
    with engine.connect() as conn:
        rid = conn.exec_driver_sql(
            f"SELECT id FROM request WHERE thread_id = '{thread}' ORDER BY id DESC LIMIT 1"
        ).scalar()
    target = attribute_request(engine, rid)
    assert target is not None
    upsert_feedback(
        engine, target=target, request_id=rid, score=None, thumb=thumb, comment=None, source=source
    )


def test_threads_qualify_by_mean_rating_and_a_low_rating_vetoes(
    migrated_url: str, tmp_path: Path
) -> None:
    ids = ["a-five", "b-mean-four", "c-one-star", "d-three"]
    seed_store(
        migrated_url,
        [
            _thread(ids[0], (5,)),
            _thread(ids[1], (5, 4, 3)),
            _thread(ids[2], (5, 5, 5, 1)),
            _thread(ids[3], (3,)),
        ],
    )
    engine = make_engine(migrated_url)
    ctx = _keywords(tmp_path)
    result = run_export(ctx, engine, ExportOptions(classifier="keywords"))
    assert _exported(ctx, ids) == ["a-five", "b-mean-four"]
    assert result.counts["threads_vetoed"] == 1 and result.counts["threads_below_min_score"] == 1
    relaxed = run_export(
        ctx, engine, ExportOptions(classifier="keywords", veto_score=0, min_score=3.5)
    )
    assert relaxed.counts["records"] == 3


def test_a_thread_rated_by_thumbs_alone_qualifies_when_its_thumbs_are_up(
    migrated_url: str, tmp_path: Path
) -> None:
    ids = ["a-five", "b-up", "c-up-up", "d-up-down"]
    seed_store(migrated_url, [_thread(ids[0], (5,)), *(_thread(t, ()) for t in ids[1:])])
    engine = make_engine(migrated_url)
    _thumb(engine, "b-up", 1)
    _thumb(engine, "c-up-up", 1, "u1")
    _thumb(engine, "c-up-up", 1, "u2")
    _thumb(engine, "d-up-down", 1, "u1")
    _thumb(engine, "d-up-down", 0, "u2")
    ctx = _keywords(tmp_path)
    result = run_export(ctx, engine, ExportOptions(classifier="keywords"))
    assert _exported(ctx, ids) == ["a-five", "b-up", "c-up-up"]
    assert result.counts["threads_by_thumbs"] == 2 and result.counts["threads_by_score"] == 1
    assert result.counts["threads_vetoed_thumbs_down"] == 1

    run_export(ctx, engine, ExportOptions(classifier="keywords", min_thumbs=2))
    assert _exported(ctx, ids) == ["a-five", "c-up-up"]
    lenient = ExportOptions(classifier="keywords", veto_thumbs_down=False, min_thumbs_up=0.5)
    run_export(ctx, engine, lenient)
    assert _exported(ctx, ids) == ids
    strict_share = ExportOptions(classifier="keywords", veto_thumbs_down=False)
    run_export(ctx, engine, strict_share)
    assert _exported(ctx, ids) == ["a-five", "b-up", "c-up-up"]  # half up is not all up


def test_a_thumbs_down_vetoes_a_thread_with_good_stars_unless_configured(
    migrated_url: str, tmp_path: Path
) -> None:
    seed_store(migrated_url, [_thread("t-stars", (5, 5))])
    engine = make_engine(migrated_url)
    _thumb(engine, "t-stars", 0)
    ctx = _keywords(tmp_path)
    vetoed = run_export(ctx, engine, ExportOptions(classifier="keywords"))
    assert vetoed.counts["records"] == 0 and vetoed.counts["threads_vetoed_thumbs_down"] == 1
    kept = run_export(ctx, engine, ExportOptions(classifier="keywords", veto_thumbs_down=False))
    assert kept.counts["records"] == 1 and kept.counts["threads_by_score"] == 1


def test_records_rebuild_the_prompt_exactly_with_lineage(migrated_url: str, tmp_path: Path) -> None:
    seed_store(migrated_url, [_thread("t1", (5,))])
    ctx = _keywords(tmp_path)
    run_export(ctx, make_engine(migrated_url), ExportOptions(classifier="keywords"))
    (record,) = read_records(ctx.out / "export/records.jsonl")
    assert record.messages == [
        SYSTEM,
        {"role": "user", "content": USERS[0]},
        {"role": "assistant", "content": REPLIES[0]},
        {"role": "user", "content": USERS[1]},
        {"role": "assistant", "content": REPLIES[1]},
    ]
    assert record.id == "t1-r1" and record.source_request_ids == ["t1-r0", "t1-r1"]
    assert record.source_thread_id == pseudonymizer(ctx.out)("t1") != "t1"
    assert record.models == ["gemini-flash"] and record.origin == "export"
    assert record.category == "jtbd" and record.meta["category_source"] == "keywords"


def test_each_branch_tip_is_one_record_and_failed_requests_are_ignored(
    migrated_url: str, tmp_path: Path
) -> None:
    at = datetime(2025, 6, 2, tzinfo=UTC)
    history = [SYSTEM, {"role": "user", "content": USERS[0]}]
    regenerated = request(
        "t1-regen",
        "t1",
        history,
        {"role": "assistant", "content": "Let us start with who buys them. Who is it, exactly?"},
        at,
        model="larry-v1",
    )
    failed = request(
        "t1-err", "t1", history, {"role": "assistant", "content": "partial"}, at, status="error"
    )
    spec = _thread("t1", (5,))
    spec.extra_requests = [regenerated, failed]
    seed_store(migrated_url, [spec])
    ctx = _keywords(tmp_path)
    run_export(ctx, make_engine(migrated_url), ExportOptions(classifier="keywords"))
    records = {r.id: r for r in read_records(ctx.out / "export/records.jsonl")}
    assert set(records) == {"t1-r1", "t1-regen"}
    assert records["t1-regen"].messages[-1]["content"].startswith("Let us start")
    assert records["t1-regen"].models == ["larry-v1"]
    assert len(records["t1-regen"].messages) == 3


def test_personal_data_is_scrubbed(migrated_url: str, tmp_path: Path) -> None:
    spec = ThreadSpec(
        id="pii",
        users=["Mail me at ana.lopez@example.org or call +1 415 555 0199 about my jobs idea."],
        replies=["Thanks. Before contact details: what job does your customer hire you for?"],
    )
    seed_store(migrated_url, [spec])
    ctx = _keywords(tmp_path)
    result = run_export(ctx, make_engine(migrated_url), ExportOptions(classifier="keywords"))
    (record,) = read_records(ctx.out / "export/records.jsonl")
    text = record.text()
    assert "ana.lopez" not in text and "555" not in text
    assert "[EMAIL]" in text and "[PHONE]" in text
    assert result.counts["scrubbed_emails"] == 1 and result.counts["scrubbed_phones"] == 1


def test_the_classifier_prompt_categorises_through_the_model_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    from larrylab.db._engine import upgrade

    upgrade(url)
    seed_store(url, [_thread("c1", (5,)), _thread("c2", (4,))])
    with counting_sim(SimConfig(ttft_ms=1, tokens_per_s=0, seed=5)) as (sim_url, counter):
        ctx = sim_context(tmp_path / "run", sim_url)
        result = run_export(ctx, make_engine(url), ExportOptions(classifier="llm"))
        records = list(read_records(ctx.out / "export/records.jsonl"))
        assert counter.requests == 2 and result.counts["classifier_requests"] == 2
        assert all(r.category in CATEGORIES and r.meta["category_source"] == "llm" for r in records)
        assert all(r.meta["category_reason"] for r in records)
        again = run_export(ctx, make_engine(url), ExportOptions(classifier="llm"))
        assert counter.requests == 2 and again.counts["classifier_cache_hits"] == 2
    assert result.manifest["models"] == {"classifier": "openai/gemini-2.5-flash"}
    assert result.manifest["prompt_versions"]["classify"].startswith("classify-v1-")


def test_export_options_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="classifier"):
        ExportOptions(classifier="magic")
    with pytest.raises(ValueError, match="min_score"):
        ExportOptions(min_score=7)
    with pytest.raises(ValueError, match="min_thumbs_up"):
        ExportOptions(min_thumbs_up=1.5)
    with pytest.raises(ValueError, match="min_thumbs"):
        ExportOptions(min_thumbs=0)


def _import_history(store: str, tmp_path: Path) -> dict[str, tuple[str, list[str]]]:
    """Two Chainlit threads (bots tta and bono, thumbs up) imported into `store`; bot ->
    (Chainlit thread id, its assistant message ids)."""
    source = f"sqlite:///{tmp_path / 'chainlit.db'}"
    create_chainlit_schema(source)
    cl = ChainlitWriter(source)
    out = {}
    for bot, turns in (
        (
            "tta",
            [
                (
                    "Where does the trend of tiny homes end?",
                    "Push it to the absurd: homes the size of a phone booth. Who needs them then?",
                )
            ],
        ),
        (
            "bono",
            [
                (
                    "Six hats for my bakery, please.",
                    "White hat first: what facts do you have about who buys your bread?",
                ),
                (
                    "Mostly students.",
                    "Red hat now: how do you feel about serving students at night?",
                ),
            ],
        ),
    ):
        tid = cl.thread(bot)
        replies = cl.conversation(tid, turns)
        cl.thumb(replies[-1], tid, 1)
        out[bot] = (tid, replies)
    engine = open_source(source)
    import_chainlit(engine, make_engine(store), ImportOptions())
    engine.dispose()
    return out


def test_imported_and_routed_threads_are_exported_alike_with_their_lineage(
    migrated_url: str, tmp_path: Path
) -> None:
    seed_store(migrated_url, [_thread("routed", (5,))])
    history = _import_history(migrated_url, tmp_path)
    ctx = _keywords(tmp_path)
    result = run_export(ctx, make_engine(migrated_url), ExportOptions(classifier="keywords"))

    counts = result.counts
    assert (counts["threads_routed"], counts["threads_imported"]) == (1, 2)
    assert (counts["records_routed"], counts["records_imported"]) == (1, 2)
    assert result.tables["sources"] == [
        {"source": "routed", "threads": 1, "records": 1},
        {"source": "imported", "threads": 2, "records": 2},
    ]
    manifest = json.loads((ctx.out / "export/manifest.json").read_text())
    assert manifest["counts"]["threads_imported"] == 2 and manifest["status"] == "done"
    pseudonym = pseudonymizer(ctx.out)
    by_thread = {r.source_thread_id: r for r in _records(ctx)}
    tta_id, tta_replies = history["tta"]
    tta = by_thread[pseudonym(f"chainlit:{tta_id}")]
    assert tta.id == f"chainlit:{tta_replies[-1]}" and tta.source_request_ids == []
    assert (tta.category, tta.meta["category_source"], tta.meta["bot"]) == ("tta", "bot", "tta")
    assert (
        len(tta.meta["source_message_ids"]) == 2
        and tta.meta["source_message_ids"][-1] == tta_replies[-1]
    )
    bono_id, _ = history["bono"]
    bono = by_thread[pseudonym(f"chainlit:{bono_id}")]
    assert [m["role"] for m in bono.messages] == ["user", "assistant", "user", "assistant"]
    assert bono.meta["category_source"] == "keywords"  # bono has no category: the classifier's
    assert by_thread[pseudonym("routed")].meta.get("source") is None


def test_a_classifier_outage_makes_the_export_partial(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    from larrylab.db._engine import upgrade

    upgrade(url)
    seed_store(url, [_thread("c1", (5,)), _thread("c2", (4,))])
    with counting_sim(SimConfig(error_rate=1.0, error_status=503, ttft_ms=1)) as (sim_url, _):
        ctx = sim_context(tmp_path / "run", sim_url, retries=0)
        result = run_export(ctx, make_engine(url), ExportOptions(classifier="llm"))
    assert result.status == "partial"
    assert result.counts["classifier_fallbacks"] == 2 and result.counts["records"] == 2
    manifest = json.loads((ctx.out / "export/manifest.json").read_text())
    assert manifest["status"] == "partial" and manifest["counts"]["classifier_fallbacks"] == 2
    assert len(manifest["failures"]) == 2 and "classifier" in manifest["failures"][0]
    assert {r.meta["category_source"] for r in _records(ctx)} == {"keywords"}


def test_thread_ids_are_pseudonymised_the_same_way_under_the_same_key(
    migrated_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_store(migrated_url, [_thread("thread-of-ana", (5,))])
    engine = make_engine(migrated_url)
    ctx = _keywords(tmp_path)
    first = run_export(ctx, engine, ExportOptions(classifier="keywords"))
    key_file = ctx.out / ".pseudonym-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert first.manifest["pseudonyms"] == {
        "method": "HMAC-SHA256",
        "key": f"generated in {key_file}",
    }
    generated = [r.source_thread_id for r in _records(ctx)]
    run_export(ctx, engine, ExportOptions(classifier="keywords", min_score=3))
    assert [r.source_thread_id for r in _records(ctx)] == generated  # the same key, reused
    for path in ctx.out.rglob("*"):  # the id as a value (the factory's request ids embed it)
        if path.is_file():
            assert b'"thread-of-ana"' not in path.read_bytes(), path

    monkeypatch.setenv("LARRYLAB_PSEUDONYM_KEY", "a key kept in the settings")
    other = _keywords(tmp_path / "other")
    result = run_export(other, engine, ExportOptions(classifier="keywords"))
    assert result.manifest["pseudonyms"]["key"] == "settings"
    assert "a key kept in the settings" not in (other.out / "export/manifest.json").read_text()
    assert not (other.out / ".pseudonym-key").exists()
    (record,) = _records(other)
    assert record.source_thread_id == pseudonymizer(other.out, "a key kept in the settings")(
        "thread-of-ana"
    )
    assert record.source_thread_id != generated[0]
