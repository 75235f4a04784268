"""Stage 3, filter: rules, decontamination, deduplication, then the LLM judge.

Reads the exported conversations and the generated variations; the cheap checks run first and
the judge sees only what survives them. Decontamination (exact n-grams and near-duplicates of
the held-out eval set, see `decontam`) follows lineage: the variations of a contaminated
exported record are dropped with it. Every dropped record is written to `dropped.jsonl` with
the step that dropped it and the reason; the rest go to `records.jsonl`.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from larrylab.pipeline.categories import CATEGORIES, QUOTAS
from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.decontam import (
    DEFAULT_NEAR_THRESHOLD,
    DEFAULT_NGRAM,
    Decontaminator,
    DecontamOptions,
    EvalSet,
    EvalSetError,
    Screen,
    load_eval_set,
)
from larrylab.pipeline.dedup import Deduplicator, DedupOptions
from larrylab.pipeline.judge import JudgeOptions, Verdict, judge_record, score_distribution
from larrylab.pipeline.llm import LLMClient, map_ordered
from larrylab.pipeline.manifest import (
    StageClock,
    StagePlan,
    StageResult,
    Tally,
    finish_stage,
    input_file,
    read_manifest,
)
from larrylab.pipeline.prompts import PROMPT_VERSIONS
from larrylab.pipeline.records import (
    ORIGIN_EXPORT,
    Record,
    atomic_writer,
    file_sha256,
    read_records,
    write_records,
)
from larrylab.pipeline.rules import RuleOptions, check_rules

STAGE = "filter"
OUTPUT = "records.jsonl"
DROPPED = "dropped.jsonl"


@dataclass(frozen=True)
class FilterOptions:
    """The filter's settings.

    Attributes:
        rules: Bounds of the rule checks.
        dedup: Near-duplicate threshold and MinHash settings.
        judge: Judge thresholds.
        ngram: Decontamination n-gram length.
        eval_set: A JSONL eval set; None uses the evals package's held-out set.
        existing: JSONL files of existing training data (`messages` per line) to dedupe against.
        contamination_threshold: Jaccard similarity at or above which a passage is a
            near-duplicate of an eval item.
    """

    rules: RuleOptions = field(default_factory=RuleOptions)
    dedup: DedupOptions = field(default_factory=DedupOptions)
    judge: JudgeOptions = field(default_factory=JudgeOptions)
    ngram: int = DEFAULT_NGRAM
    eval_set: Path | None = None
    existing: tuple[Path, ...] = ()
    contamination_threshold: float = DEFAULT_NEAR_THRESHOLD

    def __post_init__(self) -> None:
        self.decontam()  # validates the n-gram length and the threshold

    def decontam(self) -> DecontamOptions:
        """The eval set and decontamination settings (the generate stage of a run shares them)."""
        return DecontamOptions(
            eval_set=self.eval_set, ngram=self.ngram, threshold=self.contamination_threshold
        )

    def params(self) -> dict[str, Any]:
        """The options as manifest parameters (file inputs are listed as inputs instead)."""
        return {
            "rules": asdict(self.rules),
            "dedup": asdict(self.dedup),
            "judge": asdict(self.judge),
            "decontamination": self.decontam().params(),
        }


def plan_filter(
    ctx: PipelineContext, options: FilterOptions, evals: EvalSet | None = None
) -> StagePlan:
    """The filter's inputs (records, eval set, existing data) and settings.

    `evals` is the eval set named by the options (loaded here when not given).
    """
    if evals is None:
        evals = load_eval_set(options.eval_set)
    existing = []
    for path in options.existing:
        if not path.is_file():
            raise EvalSetError(f"existing training data {path} does not exist")
        existing.append({"path": str(path), "sha256": file_sha256(path)})
    inputs = {
        "export": input_file(ctx.stage_dir("export"), "records.jsonl", stage="export"),
        "generate": input_file(ctx.stage_dir("generate"), "records.jsonl", stage="generate"),
        "eval_set": evals.describe(),
        "existing": existing,
    }
    return StagePlan(
        stage=STAGE,
        directory=ctx.stage_dir(STAGE),
        inputs=inputs,
        params=options.params(),
        prompt_versions={"judge": PROMPT_VERSIONS["judge"]},
        models={"judge": ctx.llm.model},
        llm=ctx.llm.settings(),
    )


def _existing_texts(paths: tuple[Path, ...]) -> Iterator[tuple[str, str]]:
    for path in paths:
        with path.open("rb") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    messages = orjson.loads(line)["messages"]
                    text = "\n".join(
                        str(m.get("content") or "") for m in messages if m.get("role") != "system"
                    )
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                    raise EvalSetError(
                        f"{path}, line {number}: expected a JSON object with 'messages'"
                    ) from None
                yield f"existing:{path.name}:{number}", text


def _drop(fh: IO[bytes], rec: Record, step: str, reason: str, tally: Tally) -> None:
    tally.add(f"dropped_{step}")
    row = {"step": step, "reason": reason, "record": asdict(rec)}
    fh.write(orjson.dumps(row) + b"\n")


def _rules_pass(
    ctx: PipelineContext,
    options: FilterOptions,
    screen: Screen,
    dedup: Deduplicator,
    dropped: IO[bytes],
    tally: Tally,
) -> Iterator[Record]:
    """Records that pass the rules and are not contaminated; their texts go to `dedup`.

    Exported records come first, so a variation of a contaminated one is known as such.
    """
    export = ctx.stage_dir("export") / "records.jsonl"
    generated = ctx.stage_dir("generate") / "records.jsonl"
    records = itertools.chain(read_records(export), read_records(generated))
    for rec in ctx.bar(records, total=None, desc="filter: rules"):
        tally.add("input_export" if rec.origin == ORIGIN_EXPORT else "input_generated")
        reason = check_rules(rec, options.rules)
        if reason is not None:
            _drop(dropped, rec, "rules", reason, tally)
            continue
        if not screen.passes(rec):
            continue
        dedup.add(rec.id, rec.text())
        yield rec


def _cheap_filters(
    ctx: PipelineContext, options: FilterOptions, screen: Screen, dropped: IO[bytes], tally: Tally
) -> Iterator[Record]:
    """Rules, then contamination, then duplicates; yields what the judge should see."""
    dedup = Deduplicator(options.dedup)
    for key, text in _existing_texts(options.existing):
        tally.add("existing_reference")
        dedup.add(key, text, reference=True)
    first = len(dedup)
    passed = ctx.stage_dir(STAGE) / ".passed.jsonl"
    write_records(passed, _rules_pass(ctx, options, screen, dedup, dropped, tally))
    duplicates = dedup.duplicates()
    del dedup
    for index, rec in enumerate(read_records(passed), start=first):
        reason = duplicates.get(index)
        if reason is not None:
            _drop(dropped, rec, "duplicate", reason, tally)
            continue
        yield rec
    passed.unlink(missing_ok=True)


async def _verdict(rec: Record, client: LLMClient, options: JudgeOptions) -> tuple[Record, Verdict]:
    if rec.origin == ORIGIN_EXPORT and not options.judge_originals:
        return rec, Verdict(None)
    return rec, await judge_record(rec, client, options)


async def _filter_async(
    ctx: PipelineContext, options: FilterOptions, evals: EvalSet, plan: StagePlan, tally: Tally
) -> tuple[dict[str, int], list[dict[str, str]]]:
    for origin in ("export", "generated"):
        tally.add(f"input_{origin}", 0)
        tally.add(f"kept_{origin}", 0)
    for step in ("rules", "duplicate", "contaminated", "judge"):
        tally.add(f"dropped_{step}", 0)
    tally.add("kept", 0)
    candidates = plan.directory / ".candidates.jsonl"
    kept = dict.fromkeys(CATEGORIES, 0)
    client = ctx.client()
    decon = Decontaminator.from_options(evals, options.decontam())
    tally.add("eval_items", len(evals.items))
    tally.add("eval_items_shorter_than_ngram", decon.short_items)
    with atomic_writer(plan.directory / DROPPED) as dropped:
        screen = Screen(decon, dropped, tally)
        n = await asyncio.to_thread(
            write_records, candidates, _cheap_filters(ctx, options, screen, dropped, tally)
        )
        bar = ctx.manual_bar(total=n, desc="filter: judge")
        with atomic_writer(plan.directory / OUTPUT) as out:
            async for rec, verdict in map_ordered(
                read_records(candidates),
                lambda rec: _verdict(rec, client, options.judge),
                window=4 * ctx.llm.concurrency,
            ):
                bar.update(1)
                tally.add("judge_malformed", int(verdict.malformed))
                tally.add("judge_unavailable", int(verdict.unavailable))
                if verdict.reason is not None:
                    _drop(dropped, rec, "judge", verdict.reason, tally)
                    continue
                out.write(rec.to_json() + b"\n")
                kept[rec.category] = kept.get(rec.category, 0) + 1
                tally.add("kept")
                tally.add("kept_export" if rec.origin == ORIGIN_EXPORT else "kept_generated")
        bar.close()
    candidates.unlink(missing_ok=True)
    tally.counts.update(client.stats.as_counts("judge"))
    return kept, screen.reasons


def _quotas(ctx: PipelineContext) -> dict[str, int]:
    manifest = read_manifest(ctx.stage_dir("generate")) or {}
    quotas = (manifest.get("params") or {}).get("quotas")
    return dict(quotas) if isinstance(quotas, dict) else dict(QUOTAS)


def run_filter(ctx: PipelineContext, options: FilterOptions) -> StageResult:
    """Filter `out/export` and `out/generate` records into `out/filter/records.jsonl`."""
    clock = StageClock(imports=ctx.llm_libraries())
    evals = load_eval_set(options.eval_set)
    plan = plan_filter(ctx, options, evals)
    plan.directory.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    kept, contaminated = asyncio.run(_filter_async(ctx, options, evals, plan, tally))
    quotas = _quotas(ctx)
    table = [{"category": c, "kept": kept.get(c, 0), "quota": quotas.get(c, 0)} for c in CATEGORIES]
    scores = score_distribution(read_records(plan.directory / OUTPUT))
    return finish_stage(
        plan,
        clock,
        status="partial" if tally.counts.get("judge_unavailable") else "done",
        counts=tally.counts,
        outputs=[OUTPUT, DROPPED],
        tables={"categories": table},
        extra={
            "eval_set_warning": evals.warning,
            "judge_scores": scores,
            "contaminated": contaminated,
        },
    )
