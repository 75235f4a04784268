"""Export: which threads qualify, exact rebuilds of what the model saw, lineage, scrubbing,
and categories from the classifier prompt (on the simulator) or keywords."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from larrylab.db._engine import make_engine
from larrylab.experiments import attribute_request, upsert_feedback
from larrylab.pipeline.categories import CATEGORIES
from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.export import ExportOptions, run_export
from larrylab.pipeline.llm import LLMOptions
from larrylab.pipeline.records import read_records
from larrylab.sim import SimConfig
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


def test_threads_qualify_by_mean_rating_and_a_low_rating_vetoes(
    migrated_url: str, tmp_path: Path
) -> None:
    seed_store(
        migrated_url,
        [
            _thread("a-five", (5,)),
            _thread("b-mean-four", (5, 4, 3)),
            _thread("c-one-star", (5, 5, 5, 1)),
            _thread("d-three", (3,)),
        ],
    )
    engine = make_engine(migrated_url)
    ctx = _keywords(tmp_path)
    result = run_export(ctx, engine, ExportOptions(classifier="keywords"))
    threads = sorted(r.source_thread_id for r in read_records(ctx.out / "export/records.jsonl"))
    assert threads == ["a-five", "b-mean-four"]
    assert result.counts["threads_vetoed"] == 1 and result.counts["threads_below_min_score"] == 1
    relaxed = run_export(
        ctx, engine, ExportOptions(classifier="keywords", veto_score=0, min_score=3.5)
    )
    assert relaxed.counts["records"] == 3


def test_a_thread_rated_by_thumbs_alone_is_counted_not_exported(
    migrated_url: str, tmp_path: Path
) -> None:
    seed_store(migrated_url, [_thread("a-five", (5,)), _thread("b-thumbs", ())])
    engine = make_engine(migrated_url)
    rid = (
        engine.connect()
        .exec_driver_sql("SELECT id FROM request WHERE thread_id = 'b-thumbs' LIMIT 1")
        .scalar()
    )
    target = attribute_request(engine, rid)
    assert target is not None
    upsert_feedback(
        engine, target=target, request_id=rid, score=None, thumb=1, comment=None, source="u"
    )
    ctx = _keywords(tmp_path)
    result = run_export(ctx, engine, ExportOptions(classifier="keywords"))
    threads = [r.source_thread_id for r in read_records(ctx.out / "export/records.jsonl")]
    assert threads == ["a-five"]
    assert result.counts["threads_without_score"] == 1


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
