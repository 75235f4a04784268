"""Stage 1, export: highly rated threads from the store, rebuilt exactly as the model saw them.

Threads come from two sources alike: routed (logged by the router) and imported (from Larry's
Chainlit database, `larrylab import chainlit`). A thread qualifies by its stars when it has any:
the mean of all its scores (every request, message and thread rating, from every source)
reaches `min_score`; a thread rated by thumbs alone qualifies when it has at least
`min_thumbs` thumbs and a share of at least `min_thumbs_up` of them is up. A score at or below
`veto_score` (a 1-star anywhere) or a thumbs down (`veto_thumbs_down`) excludes a thread.

Each branch tip of a qualifying thread (a reply no later message builds on) becomes one record:
the conversation up to that reply, rebuilt from the transcript tree, with lineage (request and
model ids of a routed thread; Chainlit message ids and bot of an imported one), personal data
scrubbed, the thread id pseudonymised (`pseudonyms`), and a category: the bot's for an imported
thread whose bot has one, else from the classifier prompt (or from keywords). A classifier that
fails falls back to keywords, and the stage says `partial`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, func, select

from larrylab.config import Settings
from larrylab.db import Feedback, Imported, Message, RequestLog
from larrylab.pipeline.categories import CATEGORIES, keyword_category
from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.llm import LLMClient, ReplyError, map_ordered
from larrylab.pipeline.manifest import StageClock, StagePlan, StageResult, Tally, finish_stage
from larrylab.pipeline.prompts import CLASSIFY_SCHEMA, PROMPT_VERSIONS, classify_messages
from larrylab.pipeline.pseudonyms import Pseudonymizer, pseudonymizer
from larrylab.pipeline.records import (
    ORIGIN_EXPORT,
    Record,
    atomic_writer,
    read_records,
    write_records,
)
from larrylab.pipeline.scrub import scrub_messages, scrubbing_report

STAGE = "export"
OUTPUT = "records.jsonl"
CLASSIFIERS = ("llm", "keywords")
IMPORT_SOURCE = "chainlit"
MAX_FAILURES_LISTED = 100


@dataclass(frozen=True)
class ExportOptions:
    """Which threads to export and how to categorise them.

    Attributes:
        min_score: Lowest mean score (1-5 stars) of a thread that is exported.
        veto_score: A score at or below this excludes its thread (0: no veto).
        min_thumbs_up: Lowest share of thumbs up of a thread rated by thumbs alone.
        min_thumbs: Fewest thumbs of a thread rated by thumbs alone.
        veto_thumbs_down: Whether a thumbs down excludes its thread.
        classifier: `llm` (the classifier prompt) or `keywords`.
    """

    min_score: float = 4.0
    veto_score: int = 1
    min_thumbs_up: float = 1.0
    min_thumbs: int = 1
    veto_thumbs_down: bool = True
    classifier: str = "llm"

    def __post_init__(self) -> None:
        if not 1 <= self.min_score <= 5:
            raise ValueError(f"min_score must be between 1 and 5, got {self.min_score}")
        if not 0 <= self.veto_score <= 5:
            raise ValueError(f"veto_score must be between 0 and 5, got {self.veto_score}")
        if not 0 <= self.min_thumbs_up <= 1:
            raise ValueError(f"min_thumbs_up must be between 0 and 1, got {self.min_thumbs_up}")
        if self.min_thumbs < 1:
            raise ValueError(f"min_thumbs must be at least 1, got {self.min_thumbs}")
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}")


def _cols(model: Any) -> Any:
    return model.__table__.c


def store_fingerprint(engine: Engine) -> dict[str, Any]:
    """Cheap aggregates that change whenever ratings, logged requests or imports change."""
    f, r, m, i = _cols(Feedback), _cols(RequestLog), _cols(Message), _cols(Imported)
    with engine.connect() as conn:
        fb = conn.execute(
            select(func.count(), func.max(f.updated_at), func.sum(f.score), func.sum(f.thumb))
        ).one()
        rq = conn.execute(select(func.count(), func.max(r.finished_at))).one()
        msgs = conn.execute(select(func.count(m.id))).scalar()
        imp = conn.execute(select(func.count(), func.max(i.imported_at))).one()
        categories = conn.execute(
            select(i.category, func.count())
            .where(i.kind == "thread")
            .group_by(i.category)
            .order_by(i.category)
        ).all()
    return {
        "feedback": [fb[0], str(fb[1]), int(fb[2] or 0), int(fb[3] or 0)],
        "requests": [rq[0], str(rq[1])],
        "messages": int(msgs or 0),
        "imported": [imp[0], str(imp[1]), [[c or "", int(n)] for c, n in categories]],
    }


def export_pseudonyms(ctx: PipelineContext) -> Pseudonymizer:
    """The run's pseudonymizer: the `pseudonym_key` setting, else the run folder's own key."""
    return pseudonymizer(ctx.out, Settings().pseudonym_key)


def plan_export(ctx: PipelineContext, engine: Engine, options: ExportOptions) -> StagePlan:
    """The export's inputs (a fingerprint of the store, the pseudonym key's id) and
    parameters."""
    models = {"classifier": ctx.llm.model} if options.classifier == "llm" else {}
    prompts = {"classify": PROMPT_VERSIONS["classify"]} if options.classifier == "llm" else {}
    url = engine.url.render_as_string(hide_password=True)
    return StagePlan(
        stage=STAGE,
        directory=ctx.stage_dir(STAGE),
        inputs={
            "store": {"url": url, "fingerprint": store_fingerprint(engine)},
            "pseudonym_key_id": export_pseudonyms(ctx).key_id,
        },
        params=asdict(options),
        prompt_versions=prompts,
        models=models,
        llm=ctx.llm.settings() if options.classifier == "llm" else {},
    )


def _verdict(row: Any, options: ExportOptions) -> str:
    """Why a thread with these rating aggregates is kept or left out: a counter's name."""
    n_scores, lowest, mean, n_thumbs, ups = row
    downs = n_thumbs - ups
    if options.veto_score and n_scores and lowest <= options.veto_score:
        return "threads_vetoed"
    if options.veto_thumbs_down and downs:
        return "threads_vetoed_thumbs_down"
    if n_scores:
        return "threads_by_score" if float(mean) >= options.min_score else "threads_below_min_score"
    if n_thumbs >= options.min_thumbs and ups / n_thumbs >= options.min_thumbs_up:
        return "threads_by_thumbs"
    return "threads_below_min_thumbs"


KEPT = ("threads_by_score", "threads_by_thumbs")


def qualifying_threads(engine: Engine, options: ExportOptions, tally: Tally) -> list[str]:
    """Ids of the threads whose ratings pass the thresholds, sorted."""
    f = _cols(Feedback)
    query = select(
        f.thread_id,
        func.count(f.score),
        func.min(f.score),
        func.avg(f.score),
        func.count(f.thumb),
        func.coalesce(func.sum(f.thumb), 0),
    ).group_by(f.thread_id)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    keep: list[str] = []
    for name in (
        "threads_rated",
        "threads_vetoed",
        "threads_vetoed_thumbs_down",
        "threads_below_min_score",
        "threads_below_min_thumbs",
        *KEPT,
    ):
        tally.add(name, 0)
    for thread_id, *aggregates in rows:
        tally.add("threads_rated")
        verdict = _verdict(
            (
                int(aggregates[0]),
                aggregates[1],
                aggregates[2],
                int(aggregates[3]),
                int(aggregates[4]),
            ),
            options,
        )
        tally.add(verdict)
        if verdict in KEPT:
            keep.append(thread_id)
    return sorted(keep)


def imported_threads(engine: Engine) -> dict[str, tuple[str | None, str | None]]:
    """The imported threads: larrylab thread id -> (bot, category)."""
    i = _cols(Imported)
    with engine.connect() as conn:
        rows = conn.execute(
            select(i.thread_id, i.bot, i.category).where(
                i.source == IMPORT_SOURCE, i.kind == "thread"
            )
        ).all()
    return {row[0]: (row[1], row[2]) for row in rows}


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


def _tips(nodes: dict[str, tuple[str | None, str, str]]) -> list[str]:
    """The assistant messages of a transcript tree that no later assistant message builds on,
    shallowest first."""
    covered: set[str] = set()
    for parent, role, _ in nodes.values():
        if role != "assistant":
            continue
        cursor = parent
        while cursor is not None and cursor not in covered and cursor in nodes:
            covered.add(cursor)
            cursor = nodes[cursor][0]
    tips = [
        mid for mid, (_, role, _) in nodes.items() if role == "assistant" and mid not in covered
    ]
    depth = {mid: _depth(nodes, mid) for mid in tips}
    return sorted(tips, key=lambda mid: (depth[mid], mid))


def _depth(nodes: dict[str, tuple[str | None, str, str]], mid: str) -> int:
    n, cursor = 0, nodes[mid][0]
    while cursor is not None and cursor in nodes:
        n, cursor = n + 1, nodes[cursor][0]
    return n


def imported_thread_records(
    conn: Connection, thread_id: str, bot: str | None, category: str | None, tally: Tally
) -> list[Record]:
    """One record per branch tip of an imported thread, with its Chainlit lineage (the message
    ids each message came from, the bot) and the bot's category when it has one."""
    m, i = _cols(Message), _cols(Imported)
    nodes = {
        row[0]: (row[1], row[2], row[3])
        for row in conn.execute(
            select(m.id, m.parent_id, m.role, m.body).where(m.thread_id == thread_id)
        ).all()
    }
    steps: dict[str, list[str]] = {}
    for message_id, step_id in conn.execute(
        select(i.message_id, i.source_id).where(
            i.source == IMPORT_SOURCE, i.kind == "message", i.thread_id == thread_id
        )
    ).all():
        steps.setdefault(message_id, []).append(step_id)
    out: list[Record] = []
    for tip in _tips(nodes):
        chain: list[str] = []
        cursor: str | None = tip
        while cursor is not None and cursor in nodes:
            chain.append(cursor)
            cursor = nodes[cursor][0]
        if cursor is not None:
            continue  # a message of this transcript is missing: it cannot be rebuilt exactly
        chain.reverse()
        if not any(nodes[mid][1] == "user" for mid in chain):
            tally.add("tips_without_user_message")
            continue
        lineage = [step for mid in chain for step in sorted(steps.get(mid, []))]
        tip_steps = sorted(steps.get(tip, []))
        meta: dict[str, Any] = {
            "source": IMPORT_SOURCE,
            "source_message_ids": lineage,
            "bot": bot,
        }
        if category:
            meta["category_source"] = "bot"
        out.append(
            Record(
                id=f"{IMPORT_SOURCE}:{tip_steps[-1]}" if tip_steps else f"message:{tip}",
                messages=[_message_json(nodes[mid][2]) for mid in chain],
                category=category or "",
                origin=ORIGIN_EXPORT,
                source_thread_id=thread_id,
                meta=meta,
            )
        )
    return out


def _raw_records(
    ctx: PipelineContext,
    engine: Engine,
    threads: list[str],
    pseudonym: Pseudonymizer,
    tally: Tally,
) -> Iterator[Record]:
    imported = imported_threads(engine)
    with engine.connect() as conn:
        for thread_id in ctx.bar(threads, total=len(threads), desc="export: threads"):
            if thread_id in imported:
                tally.add("threads_imported")
                bot, category = imported[thread_id]
                records = imported_thread_records(conn, thread_id, bot, category, tally)
            else:
                tally.add("threads_routed")
                records = thread_records(conn, thread_id)
            if not records:
                tally.add("threads_without_transcript")
            for rec in records:
                rec.source_thread_id = pseudonym(rec.source_thread_id)
                rec.messages = scrub_messages(rec.messages, tally)
                yield rec


async def _categorise(
    rec: Record, client: LLMClient | None, tally: Tally, failures: list[str]
) -> Record:
    if rec.meta.get("category_source") == "bot":
        tally.add("categories_from_bot")
        return rec
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
        if len(failures) < MAX_FAILURES_LISTED:
            failures.append(f"record {rec.id}: classifier: {exc}")
        rec.category, rec.meta["category_source"] = keyword_category(rec.messages), "keywords"
        rec.meta["category_fallback_reason"] = str(exc)
    return rec


async def _export_async(
    ctx: PipelineContext,
    engine: Engine,
    options: ExportOptions,
    tally: Tally,
    plan: StagePlan,
    failures: list[str],
) -> dict[str, int]:
    pseudonym = export_pseudonyms(ctx)
    threads = await asyncio.to_thread(qualifying_threads, engine, options, tally)
    for name in ("threads_without_transcript", "threads_routed", "threads_imported"):
        tally.add(name, 0)
    for name in ("records", "records_routed", "records_imported", "categories_from_bot"):
        tally.add(name, 0)
    tally.add("threads_exported", len(threads))
    raw_path = plan.directory / ".raw.jsonl"
    n_raw = await asyncio.to_thread(
        write_records, raw_path, _raw_records(ctx, engine, threads, pseudonym, tally)
    )
    client = ctx.client() if options.classifier == "llm" else None
    if client is not None:
        tally.add("classifier_fallbacks", 0)
    per_category = dict.fromkeys(CATEGORIES, 0)
    bar = ctx.manual_bar(total=n_raw, desc="export: classify")
    with atomic_writer(plan.directory / OUTPUT) as fh:
        async for rec in map_ordered(
            read_records(raw_path),
            lambda rec: _categorise(rec, client, tally, failures),
            window=4 * ctx.llm.concurrency,
        ):
            per_category[rec.category] = per_category.get(rec.category, 0) + 1
            fh.write(rec.to_json() + b"\n")
            tally.add("records")
            imported = rec.meta.get("source") == IMPORT_SOURCE
            tally.add("records_imported" if imported else "records_routed")
            bar.update(1)
    bar.close()
    raw_path.unlink(missing_ok=True)
    if client is not None:
        tally.counts.update(client.stats.as_counts("classifier"))
    return per_category


def run_export(ctx: PipelineContext, engine: Engine, options: ExportOptions) -> StageResult:
    """Export the store's highly rated threads to `out/export/records.jsonl`. The stage is
    `partial` when the classifier failed for some records (they got keyword categories)."""
    clock = StageClock(imports=ctx.llm_libraries() if options.classifier == "llm" else ())
    plan = plan_export(ctx, engine, options)
    plan.directory.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    failures: list[str] = []
    per_category = asyncio.run(_export_async(ctx, engine, options, tally, plan, failures))
    table = [{"category": c, "records": n} for c, n in per_category.items()]
    sources = [
        {
            "source": source,
            "threads": tally.counts.get(f"threads_{source}", 0),
            "records": tally.counts.get(f"records_{source}", 0),
        }
        for source in ("routed", "imported")
    ]
    return finish_stage(
        plan,
        clock,
        status="partial" if tally.counts.get("classifier_fallbacks") else "done",
        counts=tally.counts,
        outputs=[OUTPUT],
        tables={"categories": table, "sources": sources},
        extra={
            "failures": failures,
            "pseudonyms": export_pseudonyms(ctx).manifest(),
            "scrubbing": scrubbing_report(),
        },
    )
