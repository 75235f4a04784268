"""Stage 2, generate: five variations of every exported conversation, steered by quotas.

One request per (exported conversation, round) asks the model for the seed plan's five
variations (other industry, other persona, objection, recovery, advanced) as structured output.
Requests are ordered so the category furthest from its quota goes first; once a category's
planned total reaches its quota it gets no more requests (unless told to fill past quotas).
Every answer is cached by request hash, so an interrupted run resumes where it stopped.

Decontamination comes first: an exported record that overlaps the held-out eval set (exact
n-gram or near-duplicate, see `decontam`) gets no request at all, and every variation is
checked before it is kept; both are written to `dropped.jsonl` with the eval item they overlap.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from larrylab.pipeline.categories import CATEGORIES, QUOTAS
from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.decontam import (
    Decontaminator,
    DecontamOptions,
    EvalSet,
    Screen,
    load_eval_set,
)
from larrylab.pipeline.llm import LLMClient, ReplyError, map_ordered
from larrylab.pipeline.manifest import (
    StageClock,
    StagePlan,
    StageResult,
    Tally,
    finish_stage,
    input_file,
)
from larrylab.pipeline.prompts import (
    GENERATE_SCHEMA,
    PROMPT_VERSIONS,
    STRATEGIES,
    generate_messages,
)
from larrylab.pipeline.records import (
    ORIGIN_GENERATED,
    Record,
    RecordIndex,
    atomic_writer,
    read_records,
)

STAGE = "generate"
OUTPUT = "records.jsonl"
DROPPED = "dropped.jsonl"
PER_REQUEST = len(STRATEGIES)


@dataclass(frozen=True)
class GenerateOptions:
    """How much to generate.

    Attributes:
        quotas: Examples wanted per category (the seed plan's by default).
        max_rounds: Requests per exported conversation at most (each asks for 5 variations).
        limit: Most requests this run (None: all planned); spent on unmet quotas first.
        stop_at_quota: Stop planning for a category once its quota is planned.
        temperature: Sampling temperature of the generator.
        decontam: The held-out eval set and how overlap with it is found.
    """

    quotas: Mapping[str, int] = field(default_factory=lambda: dict(QUOTAS))
    max_rounds: int = 1
    limit: int | None = None
    stop_at_quota: bool = True
    temperature: float = 0.9
    decontam: DecontamOptions = field(default_factory=DecontamOptions)

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be at least 1, got {self.max_rounds}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"limit must not be negative, got {self.limit}")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be between 0 and 2, got {self.temperature}")

    def params(self) -> dict[str, Any]:
        """The options as manifest parameters."""
        return {
            "quotas": dict(self.quotas),
            "max_rounds": self.max_rounds,
            "limit": self.limit,
            "stop_at_quota": self.stop_at_quota,
            "temperature": self.temperature,
            "variations_per_request": PER_REQUEST,
            "strategies": list(STRATEGIES),
            "decontamination": self.decontam.params(),
        }


@dataclass(frozen=True, slots=True)
class Job:
    """One generation request: a source record and a round."""

    source: str
    category: str
    round: int


def plan_jobs(
    sources: list[tuple[str, str]], options: GenerateOptions
) -> tuple[list[Job], dict[str, int]]:
    """Generation requests in the order quotas want them, and requests skipped per category.

    Args:
        sources: `(record id, category)` of the exported records, in file order.
        options: Quotas, rounds, limit.
    """
    have = dict.fromkeys(CATEGORIES, 0)
    queues: dict[str, list[Job]] = {c: [] for c in CATEGORIES}
    for _, category in sources:
        have[category] = have.get(category, 0) + 1
        queues.setdefault(category, [])
    for r in range(options.max_rounds):
        for source, category in sources:
            queues[category].append(Job(source, category, r))
    order = {c: i for i, c in enumerate(queues)}
    remaining = {c: options.quotas.get(c, 0) - have.get(c, 0) for c in queues}
    heap = [
        (-_need(remaining[c], options.quotas.get(c, 0)), order[c], c) for c in queues if queues[c]
    ]
    heapq.heapify(heap)
    jobs: list[Job] = []
    skipped = dict.fromkeys(queues, 0)
    positions = dict.fromkeys(queues, 0)
    while heap:
        _, _, category = heapq.heappop(heap)
        queue, pos = queues[category], positions[category]
        if remaining[category] <= 0 and options.stop_at_quota:
            skipped[category] += len(queue) - pos
            continue
        jobs.append(queue[pos])
        positions[category] = pos + 1
        remaining[category] -= PER_REQUEST
        if pos + 1 < len(queue):
            need = _need(remaining[category], options.quotas.get(category, 0))
            heapq.heappush(heap, (-need, order[category], category))
    if options.limit is not None and len(jobs) > options.limit:
        for job in jobs[options.limit :]:
            skipped[job.category] += 1
        jobs = jobs[: options.limit]
    return jobs, skipped


def _need(remaining: int, quota: int) -> float:
    """How far a category is from its quota, relative to it (negative once it is met)."""
    return remaining / max(quota, 1)


def variations(source: Record, answer: dict[str, Any], job: Job, model: str) -> list[Record]:
    """The records of one generation answer."""
    system = [m for m in source.messages[:1] if m.get("role") == "system"]
    out: list[Record] = []
    for strategy in STRATEGIES:
        item = answer[strategy]
        messages = list(system)
        for turn in item["turns"]:
            messages.append({"role": "user", "content": turn["user"]})
            messages.append({"role": "assistant", "content": turn["assistant"]})
        out.append(
            Record(
                id=f"{source.id}:{strategy}:{job.round}",
                messages=messages,
                category=source.category,
                origin=ORIGIN_GENERATED,
                source_thread_id=source.source_thread_id,
                source_request_ids=list(source.source_request_ids),
                models=list(source.models),
                strategy=strategy,
                meta={
                    "setting": item["setting"],
                    "round": job.round,
                    "source_record": source.id,
                    "generator": model,
                },
            )
        )
    return out


def plan_generate(
    ctx: PipelineContext, options: GenerateOptions, evals: EvalSet | None = None
) -> StagePlan:
    """The generation stage's inputs (the export's records, the eval set) and settings.

    `evals` is the eval set named by the options (loaded here when not given).
    """
    export = input_file(ctx.stage_dir("export"), "records.jsonl", stage="export")
    if evals is None:
        evals = load_eval_set(options.decontam.eval_set)
    return StagePlan(
        stage=STAGE,
        directory=ctx.stage_dir(STAGE),
        inputs={"export": export, "eval_set": evals.describe()},
        params=options.params(),
        prompt_versions={"generate": PROMPT_VERSIONS["generate"]},
        models={"generator": ctx.llm.model},
        llm=ctx.llm.settings(),
    )


async def _one(
    job: Job, sources: RecordIndex, client: LLMClient, options: GenerateOptions
) -> list[Record] | str:
    source = sources.get(job.source)
    prompt = generate_messages(source.messages, source.category, round_index=job.round)
    try:
        answer = await client.structured(
            name="variations",
            messages=prompt,
            schema=GENERATE_SCHEMA,
            temperature=options.temperature,
        )
    except ReplyError as exc:
        return f"{job.source} round {job.round}: {exc}"
    return variations(source, answer, job, client.options.model)


def _clean_sources(ctx: PipelineContext, screen: Screen, tally: Tally) -> list[tuple[str, str]]:
    """`(id, category)` of the exported records that do not overlap the eval set."""
    tally.add("exported", 0)
    clean = []
    records = read_records(ctx.stage_dir("export") / "records.jsonl")
    for rec in ctx.bar(records, total=None, desc="generate: decontaminate"):
        tally.add("exported")
        if screen.passes(rec):
            clean.append((rec.id, rec.category))
    return clean


async def _generate_async(
    ctx: PipelineContext,
    options: GenerateOptions,
    plan: StagePlan,
    tally: Tally,
    decon: Decontaminator,
) -> tuple[dict[str, int], dict[str, int], list[str], list[dict[str, str]]]:
    with atomic_writer(plan.directory / DROPPED) as dropped:
        screen = Screen(decon, dropped, tally)
        clean = await asyncio.to_thread(_clean_sources, ctx, screen, tally)
        with RecordIndex(ctx.stage_dir("export") / "records.jsonl") as sources:
            made, failures = await _run_jobs(ctx, options, plan, tally, sources, clean, screen)
    have = dict.fromkeys(CATEGORIES, 0)
    for _, category in clean:
        have[category] = have.get(category, 0) + 1
    return have, made, failures, screen.reasons


async def _run_jobs(
    ctx: PipelineContext,
    options: GenerateOptions,
    plan: StagePlan,
    tally: Tally,
    sources: RecordIndex,
    clean: list[tuple[str, str]],
    screen: Screen,
) -> tuple[dict[str, int], list[str]]:
    jobs, skipped = plan_jobs(clean, options)
    tally.add("requests_planned", len(jobs))
    tally.add("requests_skipped_quota_or_limit", sum(skipped.values()))
    tally.add("requests_failed", 0)
    tally.add("variations", 0)
    client = ctx.client()
    made = dict.fromkeys(CATEGORIES, 0)
    failures: list[str] = []
    bar = ctx.manual_bar(total=len(jobs) * PER_REQUEST, desc="generate: variations")
    with atomic_writer(plan.directory / OUTPUT) as fh:
        async for result in map_ordered(
            jobs, lambda job: _one(job, sources, client, options), window=4 * ctx.llm.concurrency
        ):
            if isinstance(result, str):
                failures.append(result)
                tally.add("requests_failed")
                continue
            for rec in result:
                if not screen.passes(rec):
                    continue
                fh.write(rec.to_json() + b"\n")
                made[rec.category] = made.get(rec.category, 0) + 1
                tally.add("variations")
            bar.update(len(result))
    bar.close()
    tally.counts.update(client.stats.as_counts("generator"))
    return made, failures


def quota_table(
    quotas: Mapping[str, int], have: Mapping[str, int], made: Mapping[str, int]
) -> list[dict[str, Any]]:
    """Rows of progress against the quotas: exported + generated per category."""
    rows = []
    for category in CATEGORIES:
        quota = quotas.get(category, 0)
        total = have.get(category, 0) + made.get(category, 0)
        rows.append(
            {
                "category": category,
                "quota": quota,
                "exported": have.get(category, 0),
                "generated": made.get(category, 0),
                "total": total,
                "progress": f"{min(total / quota, 9.99):.0%}" if quota else "-",
            }
        )
    return rows


def run_generate(ctx: PipelineContext, options: GenerateOptions) -> StageResult:
    """Generate variations of `out/export/records.jsonl` into `out/generate/records.jsonl`.

    Exported records and variations that overlap the eval set go to `dropped.jsonl` instead.
    """
    clock = StageClock(imports=ctx.llm_libraries())
    evals = load_eval_set(options.decontam.eval_set)
    plan = plan_generate(ctx, options, evals)
    plan.directory.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    decon = Decontaminator.from_options(evals, options.decontam)
    tally.add("eval_items", len(evals))
    have, made, failures, contaminated = asyncio.run(
        _generate_async(ctx, options, plan, tally, decon)
    )
    rate = tally.counts.get("variations", 0) / max(clock.seconds(), 1e-9)
    return finish_stage(
        plan,
        clock,
        status="partial" if failures else "done",
        counts=tally.counts,
        outputs=[OUTPUT, DROPPED],
        tables={"quotas": quota_table(options.quotas, have, made)},
        extra={
            "failures": failures[:100],
            "contaminated": contaminated,
            "eval_set_warning": evals.warning,
            "variations_per_s": round(rate, 2),
        },
    )
