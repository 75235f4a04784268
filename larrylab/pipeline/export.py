"""Stage 1, export: highly rated threads from the store, rebuilt exactly as the model saw them.

A thread qualifies when the mean of all its ratings (every request and thread rating, from
every source) reaches `min_score` and no rating is at or below `veto_score` (a 1-star anywhere
excludes it by default). Each branch tip of a qualifying thread (a reply no later prompt
builds on) becomes one record: its prompt rebuilt from the transcript tree plus the reply,
with the thread, request and model ids for lineage, personal data scrubbed, and a category
from the classifier prompt (or from keywords).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, func, select

from larrylab.db import Feedback, Message, RequestLog
from larrylab.pipeline.categories import CATEGORIES, keyword_category
from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.llm import LLMClient, ReplyError, map_ordered
from larrylab.pipeline.manifest import StageClock, StagePlan, StageResult, Tally, finish_stage
from larrylab.pipeline.prompts import CLASSIFY_SCHEMA, PROMPT_VERSIONS, classify_messages
from larrylab.pipeline.records import (
    ORIGIN_EXPORT,
    Record,
    atomic_writer,
    read_records,
    write_records,
)
from larrylab.pipeline.scrub import scrub_messages

STAGE = "export"
OUTPUT = "records.jsonl"
CLASSIFIERS = ("llm", "keywords")


@dataclass(frozen=True)
class ExportOptions:
    """Which threads to export and how to categorise them.

    Attributes:
        min_score: Lowest mean rating of a thread that is exported.
        veto_score: A rating at or below this excludes its thread (0: no veto).
        classifier: `llm` (the classifier prompt) or `keywords`.
    """

    min_score: float = 4.0
    veto_score: int = 1
    classifier: str = "llm"

    def __post_init__(self) -> None:
        if not 1 <= self.min_score <= 5:
            raise ValueError(f"min_score must be between 1 and 5, got {self.min_score}")
        if not 0 <= self.veto_score <= 5:
            raise ValueError(f"veto_score must be between 0 and 5, got {self.veto_score}")
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}")


def _cols(model: Any) -> Any:
    return model.__table__.c


def store_fingerprint(engine: Engine) -> dict[str, Any]:
    """Cheap aggregates that change whenever ratings or logged requests change."""
    f, r, m = _cols(Feedback), _cols(RequestLog), _cols(Message)
    with engine.connect() as conn:
        fb = conn.execute(select(func.count(), func.max(f.updated_at), func.sum(f.score))).one()
        rq = conn.execute(select(func.count(), func.max(r.finished_at))).one()
        msgs = conn.execute(select(func.count(m.id))).scalar()
    return {
        "feedback": [fb[0], str(fb[1]), int(fb[2] or 0)],
        "requests": [rq[0], str(rq[1])],
        "messages": int(msgs or 0),
    }


def plan_export(ctx: PipelineContext, engine: Engine, options: ExportOptions) -> StagePlan:
    """The export's inputs (a fingerprint of the store) and parameters."""
    models = {"classifier": ctx.llm.model} if options.classifier == "llm" else {}
    prompts = {"classify": PROMPT_VERSIONS["classify"]} if options.classifier == "llm" else {}
    url = engine.url.render_as_string(hide_password=True)
    return StagePlan(
        stage=STAGE,
        directory=ctx.stage_dir(STAGE),
        inputs={"store": {"url": url, "fingerprint": store_fingerprint(engine)}},
        params=asdict(options),
        prompt_versions=prompts,
        models=models,
    )


def qualifying_threads(engine: Engine, options: ExportOptions, tally: Tally) -> list[str]:
    """Ids of the threads whose ratings pass the thresholds, sorted."""
    f = _cols(Feedback)
    query = select(f.thread_id, func.avg(f.score), func.min(f.score)).group_by(f.thread_id)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    keep: list[str] = []
    for name in ("threads_rated", "threads_vetoed", "threads_below_min_score"):
        tally.add(name, 0)
    for thread_id, mean, lowest in rows:
        tally.add("threads_rated")
        if mean is None:  # rated by thumbs alone: no score to pass the thresholds with
            tally.add("threads_without_score")
        elif options.veto_score and lowest <= options.veto_score:
            tally.add("threads_vetoed")
        elif float(mean) < options.min_score:
            tally.add("threads_below_min_score")
        else:
            keep.append(thread_id)
    return sorted(keep)


def _message_json(body: str) -> dict[str, Any]:
    data = orjson.loads(body)
    content = data.get("content")
    if isinstance(content, list):
        content = " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return {
        "role": str(data.get("role", "")),
        "content": content if isinstance(content, str) else "",
    }


def thread_records(conn: Connection, thread_id: str) -> list[Record]:
    """One record per branch tip of a thread: the whole conversation up to that reply."""
    r, m = _cols(RequestLog), _cols(Message)
    requests = conn.execute(
        select(r.id, r.prompt_message_id, r.reply_message_id, r.model)
        .where(r.thread_id == thread_id, r.status == "ok", r.reply_message_id.is_not(None))
        .order_by(r.created_at, r.id)
    ).all()
    if not requests:
        return []
    nodes = {
        row[0]: (row[1], row[2])
        for row in conn.execute(
            select(m.id, m.parent_id, m.body).where(m.thread_id == thread_id)
        ).all()
    }
    covered: set[str] = set()
    for req in requests:
        cursor = req.prompt_message_id
        while cursor is not None and cursor not in covered and cursor in nodes:
            covered.add(cursor)
            cursor = nodes[cursor][0]
    by_reply = {req.reply_message_id: req for req in requests}
    out: list[Record] = []
    done: set[str] = set()
    for req in requests:
        if req.reply_message_id in covered or req.reply_message_id in done:
            continue
        done.add(req.reply_message_id)
        chain: list[str] = []
        cursor = req.reply_message_id
        while cursor is not None and cursor in nodes:
            chain.append(cursor)
            cursor = nodes[cursor][0]
        if cursor is not None:
            continue  # a message of this transcript is missing: it cannot be rebuilt exactly
        chain.reverse()
        served = [by_reply[mid] for mid in chain if mid in by_reply]
        out.append(
            Record(
                id=req.id,
                messages=[_message_json(nodes[mid][1]) for mid in chain],
                category="",
                origin=ORIGIN_EXPORT,
                source_thread_id=thread_id,
                source_request_ids=[s.id for s in served],
                models=list(dict.fromkeys(s.model for s in served if s.model)),
            )
        )
    return out


def _raw_records(
    ctx: PipelineContext, engine: Engine, threads: list[str], tally: Tally
) -> Iterator[Record]:
    with engine.connect() as conn:
        for thread_id in ctx.bar(threads, total=len(threads), desc="export: threads"):
            records = thread_records(conn, thread_id)
            if not records:
                tally.add("threads_without_transcript")
            for rec in records:
                rec.messages = scrub_messages(rec.messages, tally)
                yield rec


async def _categorise(rec: Record, client: LLMClient | None, tally: Tally) -> Record:
    if client is None:
        rec.category, rec.meta["category_source"] = keyword_category(rec.messages), "keywords"
        return rec
    try:
        answer = await client.structured(
            name="classify", messages=classify_messages(rec.messages), schema=CLASSIFY_SCHEMA
        )
        rec.category, rec.meta["category_source"] = answer["category"], "llm"
        rec.meta["category_reason"] = answer.get("reason", "")
    except ReplyError as exc:
        tally.add("classifier_fallbacks")
        rec.category, rec.meta["category_source"] = keyword_category(rec.messages), "keywords"
        rec.meta["category_fallback_reason"] = str(exc)
    return rec


async def _export_async(
    ctx: PipelineContext, engine: Engine, options: ExportOptions, tally: Tally, plan: StagePlan
) -> dict[str, int]:
    threads = await asyncio.to_thread(qualifying_threads, engine, options, tally)
    tally.add("threads_exported", len(threads))
    tally.add("threads_without_transcript", 0)
    tally.add("records", 0)
    raw_path = plan.directory / ".raw.jsonl"
    n_raw = await asyncio.to_thread(
        write_records, raw_path, _raw_records(ctx, engine, threads, tally)
    )
    client = ctx.client() if options.classifier == "llm" else None
    per_category = dict.fromkeys(CATEGORIES, 0)
    bar = ctx.manual_bar(total=n_raw, desc="export: classify")
    with atomic_writer(plan.directory / OUTPUT) as fh:
        async for rec in map_ordered(
            read_records(raw_path),
            lambda rec: _categorise(rec, client, tally),
            window=4 * ctx.llm.concurrency,
        ):
            per_category[rec.category] = per_category.get(rec.category, 0) + 1
            fh.write(rec.to_json() + b"\n")
            tally.add("records")
            bar.update(1)
    bar.close()
    raw_path.unlink(missing_ok=True)
    if client is not None:
        tally.counts.update(client.stats.as_counts("classifier"))
    return per_category


def run_export(ctx: PipelineContext, engine: Engine, options: ExportOptions) -> StageResult:
    """Export the store's highly rated threads to `out/export/records.jsonl`."""
    clock = StageClock()
    plan = plan_export(ctx, engine, options)
    plan.directory.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    per_category = asyncio.run(_export_async(ctx, engine, options, tally, plan))
    table = [{"category": c, "records": n} for c, n in per_category.items()]
    return finish_stage(
        plan,
        clock,
        status="done",
        counts=tally.counts,
        outputs=[OUTPUT],
        tables={"categories": table},
    )
