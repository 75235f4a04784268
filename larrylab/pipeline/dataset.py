"""Stage 4, dataset: a train/validation split by source thread, on disk in two formats.

All records that come from one rated thread (the conversation and its variations) land on the
same side of the split, so validation never sees a paraphrase of a training example. Written
as a Hugging Face `DatasetDict` (`hf/`, `save_to_disk`), as JSONL in the `messages` format
(`train.jsonl`, `validation.jsonl`) and with a dataset card (`README.md`) whose Privacy section
states what the export scrubbed and pseudonymised, and what it did not.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from larrylab.pipeline.categories import CATEGORIES, LABELS
from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.manifest import (
    StageClock,
    StagePlan,
    StageResult,
    finish_stage,
    input_file,
    read_manifest,
)
from larrylab.pipeline.privacy_card import privacy_section
from larrylab.pipeline.records import Record, atomic_writer, read_records

STAGE = "dataset"
SPLITS = ("train", "validation")
HF_DIR = "hf"
CARD = "README.md"


@dataclass(frozen=True)
class DatasetOptions:
    """How to split.

    Attributes:
        validation_share: Share of source threads held out for validation.
        split_seed: Salt of the hash that orders threads for the split.
    """

    validation_share: float = 0.1
    split_seed: str = "larrylab"

    def __post_init__(self) -> None:
        if not 0 <= self.validation_share < 1:
            raise ValueError(
                f"validation_share must be at least 0 and below 1, got {self.validation_share}"
            )


def validation_threads(thread_ids: Iterable[str], options: DatasetOptions) -> set[str]:
    """The source threads held out: a fixed share, chosen by a salted hash (at least one)."""
    threads = sorted(set(thread_ids))
    if len(threads) < 2 or options.validation_share == 0:
        return set()
    n = min(len(threads) - 1, max(1, math.ceil(len(threads) * options.validation_share)))
    salt = options.split_seed.encode("utf-8")
    ranked = sorted(threads, key=lambda t: hashlib.sha256(salt + t.encode("utf-8")).digest())
    return set(ranked[:n])


def plan_dataset(ctx: PipelineContext, options: DatasetOptions) -> StagePlan:
    """The dataset stage's input (the filter's records) and parameters."""
    return StagePlan(
        stage=STAGE,
        directory=ctx.stage_dir(STAGE),
        inputs={"filter": input_file(ctx.stage_dir("filter"), "records.jsonl", stage="filter")},
        params=asdict(options),
    )


def _features() -> Any:
    from datasets import Features, List, Value

    return Features(
        {
            "id": Value("string"),
            "messages": List({"role": Value("string"), "content": Value("string")}),
            "category": Value("string"),
            "origin": Value("string"),
            "strategy": Value("string"),
            "source_thread_id": Value("string"),
            "source_request_ids": List(Value("string")),
            "models": List(Value("string")),
            "judge_mean": Value("float64"),
        }
    )


def _split_of(rec: Record, held_out: set[str]) -> str:
    return "validation" if rec.source_thread_id in held_out else "train"


def hf_rows(path: str, split: str, held_out: str) -> Iterator[dict[str, Any]]:
    """The rows of one split, read from the filter's records (a `from_generator` source).

    `held_out` is a JSON list of the validation threads: a string, because `datasets` shards a
    generator over any list it is given.
    """
    held = set(json.loads(held_out))
    for rec in read_records(Path(path)):
        if _split_of(rec, held) != split:
            continue
        yield {
            "id": rec.id,
            "messages": [{"role": m["role"], "content": m["content"]} for m in rec.messages],
            "category": rec.category,
            "origin": rec.origin,
            "strategy": rec.strategy or "",
            "source_thread_id": rec.source_thread_id,
            "source_request_ids": rec.source_request_ids,
            "models": rec.models,
            "judge_mean": (rec.meta.get("judge") or {}).get("mean"),
        }


def save_hf(ctx: PipelineContext, source: Path, held_out: set[str], sizes: dict[str, int]) -> None:
    """Save the splits as a Hugging Face DatasetDict under `dataset/hf/`, streaming the rows."""
    from datasets import Dataset, DatasetDict, disable_progress_bars

    disable_progress_bars()
    features = _features()
    target = ctx.stage_dir(STAGE) / HF_DIR
    held = json.dumps(sorted(held_out))
    with tempfile.TemporaryDirectory(dir=ctx.stage_dir(STAGE), prefix=".hf-build-") as tmp:
        splits = {
            name: Dataset.from_generator(
                hf_rows,
                features=features,
                cache_dir=tmp,
                gen_kwargs={"path": str(source), "split": name, "held_out": held},
            )
            if sizes[name]
            else Dataset.from_dict({key: [] for key in features}, features=features)
            for name in SPLITS
        }
        shutil.rmtree(target, ignore_errors=True)
        DatasetDict(splits).save_to_disk(str(target))


@dataclass
class CardStats:
    """What the dataset card reports, counted while the records stream past."""

    per_category: dict[str, Counter[str]] = field(default_factory=dict)
    origins: Counter[tuple[str, str]] = field(default_factory=Counter)
    judge_means: Counter[str] = field(default_factory=Counter)
    criteria: dict[str, Counter[int]] = field(default_factory=dict)
    threads: set[str] = field(default_factory=set)
    requests: set[str] = field(default_factory=set)
    models: set[str] = field(default_factory=set)

    def add(self, rec: Record, split: str) -> None:
        """Count one record of `split`."""
        self.per_category.setdefault(rec.category, Counter())[split] += 1
        self.origins[(rec.origin, split)] += 1
        self.threads.add(rec.source_thread_id)
        self.requests.update(rec.source_request_ids)
        self.models.update(rec.models)
        judged = rec.meta.get("judge")
        if judged:
            self.judge_means[f"{round(judged['mean'] * 2) / 2:.1f}"] += 1
            for name, score in judged["scores"].items():
                self.criteria.setdefault(name, Counter())[int(score)] += 1

    def split_size(self, split: str) -> int:
        """Records in `split`."""
        return sum(c[split] for c in self.per_category.values())

    def category_rows(self) -> list[dict[str, Any]]:
        """Records per category and split, every category listed."""
        return [
            {"category": c, **{s: self.per_category.get(c, Counter())[s] for s in SPLITS}}
            for c in CATEGORIES
        ]


def _md_table(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def dataset_card(
    stats: CardStats, lineage: dict[str, Any], export_manifest: dict[str, Any] | None
) -> str:
    """The dataset card (README.md): counts per category, judge scores, privacy, lineage.

    `export_manifest` is the export stage's manifest: the Privacy section states what it
    scrubbed and pseudonymised (None: the card says that cannot be stated).
    """
    category_rows = [
        [LABELS[r["category"]], *(r[s] for s in SPLITS), sum(r[s] for s in SPLITS)]
        for r in stats.category_rows()
    ]
    origins = sorted({origin for origin, _ in stats.origins})
    size = sum(stats.split_size(s) for s in SPLITS)
    size_category = "n<1K" if size < 1000 else ("1K<n<10K" if size < 10_000 else "10K<n<100K")
    parts = [
        "---\nlanguage:\n- en\npretty_name: Larry PWS coaching conversations\n"
        f"task_categories:\n- text-generation\nsize_categories:\n- {size_category}\n---\n",
        "# Larry PWS coaching conversations\n",
        "Conversations of Larry, a coach teaching the Problems Worth Solving methodology: "
        "highly rated threads from the larrylab store and LLM-generated variations of them, "
        "filtered by rules, deduplication, decontamination against the held-out eval set and "
        "an LLM judge. Split by source thread: all records of one thread are on one side.\n",
        "## Counts per category\n",
        _md_table(["category", *SPLITS, "total"], category_rows) + "\n",
        "## Origin\n",
        _md_table(
            ["origin", *SPLITS], [[o, *(stats.origins[(o, s)] for s in SPLITS)] for o in origins]
        )
        + "\n",
        "## Judge scores\n",
        "Mean over the four criteria, in half points (generated records):\n",
        _md_table(["mean", "records"], sorted(stats.judge_means.items())) + "\n",
        _md_table(
            ["criterion", *map(str, range(1, 6))],
            [[name, *(c[i] for i in range(1, 6))] for name, c in sorted(stats.criteria.items())],
        )
        + "\n",
        privacy_section(export_manifest),
        "## Lineage\n",
        "```json\n" + json.dumps(lineage, indent=2, sort_keys=True) + "\n```\n",
        "## Files\n",
        "- `hf/`: `datasets.DatasetDict` (`load_from_disk`)\n"
        '- `train.jsonl`, `validation.jsonl`: one `{"messages": [...]}` per line\n',
    ]
    return "\n".join(parts)


def _lineage(ctx: PipelineContext, stats: CardStats) -> dict[str, Any]:
    stages: dict[str, Any] = {}
    for stage in ("export", "generate", "filter"):
        m = read_manifest(ctx.stage_dir(stage)) or {}
        stages[stage] = {
            "fingerprint": m.get("fingerprint"),
            "outputs": m.get("outputs"),
            "models": m.get("models"),
            "prompt_versions": m.get("prompt_versions"),
            "eval_set": (m.get("inputs") or {}).get("eval_set"),
        }
    return {
        "source_threads": len(stats.threads),
        "source_requests": len(stats.requests),
        "serving_models": sorted(stats.models),
        "stages": stages,
    }


def run_dataset(ctx: PipelineContext, options: DatasetOptions) -> StageResult:
    """Build `out/dataset/` from `out/filter/records.jsonl` (records are streamed, not held)."""
    clock = StageClock(imports=("datasets",))
    plan = plan_dataset(ctx, options)
    plan.directory.mkdir(parents=True, exist_ok=True)
    source = ctx.stage_dir("filter") / "records.jsonl"
    held_out = validation_threads((r.source_thread_id for r in read_records(source)), options)
    stats = CardStats()
    with (
        atomic_writer(plan.directory / "train.jsonl") as train,
        atomic_writer(plan.directory / "validation.jsonl") as validation,
    ):
        files = {"train": train, "validation": validation}
        for rec in read_records(source):
            split = _split_of(rec, held_out)
            files[split].write(orjson.dumps({"messages": rec.messages}) + b"\n")
            stats.add(rec, split)
    save_hf(ctx, source, held_out, {name: stats.split_size(name) for name in SPLITS})
    lineage = _lineage(ctx, stats)
    with atomic_writer(plan.directory / CARD) as fh:
        card = dataset_card(stats, lineage, read_manifest(ctx.stage_dir("export")))
        fh.write(card.encode("utf-8"))
    counts = {name: stats.split_size(name) for name in SPLITS}
    counts["source_threads"] = lineage["source_threads"]
    counts["validation_threads"] = len(held_out)
    return finish_stage(
        plan,
        clock,
        status="done",
        counts=counts,
        outputs=["train.jsonl", "validation.jsonl", CARD, f"{HF_DIR}/dataset_dict.json"],
        tables={"categories": stats.category_rows()},
        extra={"lineage": lineage},
    )
