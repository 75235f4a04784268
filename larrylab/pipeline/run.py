"""`run`: export, generate, filter and dataset in order, skipping stages already up to date.

A stage is skipped when its folder holds a finished manifest whose fingerprint (inputs with
their hashes, parameters, prompt versions, models, the model's endpoint and sampling settings)
matches what the stage would read now and whose outputs still match their hashes. A stage that
reruns and writes the same output leaves the next stage's inputs unchanged, so that stage is
skipped too.

One held-out eval set per run: the generate stage checks against the filter's eval set and
decontamination settings. A stage that runs has its libraries imported before it starts, so its
reported seconds cover its own work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy import Engine

from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.dataset import DatasetOptions, plan_dataset, run_dataset
from larrylab.pipeline.export import ExportOptions, plan_export, run_export
from larrylab.pipeline.filter import FilterOptions, plan_filter, run_filter
from larrylab.pipeline.generate import GenerateOptions, plan_generate, run_generate
from larrylab.pipeline.manifest import (
    StagePlan,
    StageResult,
    import_libraries,
    is_current,
    skipped,
)

DATASET_LIBRARIES = ("datasets",)


@dataclass(frozen=True)
class RunOptions:
    """The options of every stage, and whether to rerun stages that are up to date.

    The filter's eval set, n-gram length and contamination threshold apply to the generate
    stage too (its own `decontam` options are replaced by them).
    """

    export: ExportOptions = field(default_factory=ExportOptions)
    generate: GenerateOptions = field(default_factory=GenerateOptions)
    filter: FilterOptions = field(default_factory=FilterOptions)
    dataset: DatasetOptions = field(default_factory=DatasetOptions)
    force: bool = False


def _stage(
    plan: Callable[[], StagePlan],
    work: Callable[[], StageResult],
    libraries: Sequence[str],
    *,
    force: bool,
) -> StageResult:
    if not force:
        current_plan = plan()
        manifest = is_current(current_plan)
        if manifest is not None:
            return skipped(current_plan, manifest)
    import_libraries(libraries)  # before the stage's clock starts
    return work()


def run_pipeline(
    ctx: PipelineContext,
    engine: Engine,
    options: RunOptions,
    on_result: Callable[[StageResult], None] | None = None,
) -> list[StageResult]:
    """Run the four stages in order; `on_result` sees each result as soon as it is known.

    Stops after a stage that finished only partly (some model requests failed).
    """
    f = options.force
    generate = replace(options.generate, decontam=options.filter.decontam())
    llm_libraries = ctx.llm_libraries()
    classifies = options.export.classifier == "llm"
    steps: list[tuple[Callable[[], StagePlan], Callable[[], StageResult], Sequence[str]]] = [
        (
            lambda: plan_export(ctx, engine, options.export),
            lambda: run_export(ctx, engine, options.export),
            llm_libraries if classifies else (),
        ),
        (
            lambda: plan_generate(ctx, generate),
            lambda: run_generate(ctx, generate),
            llm_libraries,
        ),
        (
            lambda: plan_filter(ctx, options.filter),
            lambda: run_filter(ctx, options.filter),
            llm_libraries,
        ),
        (
            lambda: plan_dataset(ctx, options.dataset),
            lambda: run_dataset(ctx, options.dataset),
            DATASET_LIBRARIES,
        ),
    ]
    results: list[StageResult] = []
    for plan, work, libraries in steps:
        result = _stage(plan, work, libraries, force=f)
        results.append(result)
        if on_result is not None:
            on_result(result)
        if result.status == "partial":
            break  # later stages would build on missing data; a rerun retries the failures
    return results
