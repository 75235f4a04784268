"""`larrylab pipeline ...`: export, generate, filter, dataset, or all of them with `run`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from larrylab.cli._kit import (
    DbOpt,
    JsonOpt,
    console,
    fail,
    guard,
    print_json,
    settings_from,
    writable_folder,
)
from larrylab.pipeline.llm import DEFAULT_CONCURRENCY, DEFAULT_MODEL, LLMError, LLMOptions
from larrylab.pipeline.manifest import StageInputError, StageResult

T = TypeVar("T")

pipeline_app = typer.Typer(
    help="The training-data pipeline: export rated threads, generate variations, filter, "
    "build a dataset.",
    no_args_is_help=True,
)

OutOpt = Annotated[Path, typer.Option("--out", help="Run folder: each stage writes DIR/<stage>/.")]
ModelOpt = Annotated[
    str, typer.Option("--model", help="litellm model for classifying, generating and judging.")
]
ApiBaseOpt = Annotated[
    str | None, typer.Option("--api-base", help="Base URL of an OpenAI-compatible endpoint.")
]
ApiKeyEnvOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key-env", help="Environment variable with the API key (default: the provider's)."
    ),
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", min=1, max=512, help="Model requests in flight at once.")
]
RetriesOpt = Annotated[
    int, typer.Option("--retries", min=0, max=20, help="Retries of a failed or malformed answer.")
]
MinScoreOpt = Annotated[
    float,
    typer.Option("--min-score", min=1, max=5, help="Lowest mean rating of an exported thread."),
]
VetoOpt = Annotated[
    int,
    typer.Option(
        "--veto-score",
        min=0,
        max=5,
        help="A rating at or below this excludes its thread (0: none).",
    ),
]
MinThumbsUpOpt = Annotated[
    float,
    typer.Option(
        "--min-thumbs-up",
        min=0,
        max=1,
        help="Lowest share of thumbs up of a thread rated by thumbs alone (1: all up).",
    ),
]
MinThumbsOpt = Annotated[
    int,
    typer.Option("--min-thumbs", min=1, help="Fewest thumbs of a thread rated by thumbs alone."),
]
VetoThumbsDownOpt = Annotated[
    bool,
    typer.Option(
        "--veto-thumbs-down/--no-veto-thumbs-down",
        help="Whether a thumbs down excludes its thread.",
    ),
]
ClassifierOpt = Annotated[
    str, typer.Option("--classifier", help="Category by 'llm' (classifier prompt) or 'keywords'.")
]
RoundsOpt = Annotated[
    int,
    typer.Option(
        "--max-rounds", min=1, max=100, help="Generation requests per exported thread at most."
    ),
]
LimitOpt = Annotated[
    int | None,
    typer.Option("--limit", min=0, help="Most generation requests (unmet quotas first)."),
]
QuotaOpt = Annotated[
    list[str] | None,
    typer.Option("--quota", help="CATEGORY=N, overrides a seed quota (repeatable)."),
]
FillOpt = Annotated[
    bool,
    typer.Option("--fill-past-quota", help="Keep generating for categories whose quota is met."),
]
TempOpt = Annotated[
    float, typer.Option("--temperature", min=0, max=2, help="Generator temperature.")
]
EvalSetOpt = Annotated[
    Path | None,
    typer.Option(
        "--eval-set", help="Held-out eval set (JSONL with 'messages'); default: larrylab's."
    ),
]
ExistingOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--existing", help="Existing training data (JSONL with 'messages') to dedupe against."
    ),
]
NearDupOpt = Annotated[
    float,
    typer.Option(
        "--near-dup-threshold", min=0.01, max=1, help="Jaccard similarity of a near-duplicate."
    ),
]
NgramOpt = Annotated[
    int, typer.Option("--ngram", min=5, max=50, help="Decontamination n-gram length.")
]
ContamOpt = Annotated[
    float,
    typer.Option(
        "--contamination-threshold",
        min=0.05,
        max=1,
        help="Jaccard similarity at which a passage is a near-duplicate of an eval item.",
    ),
]
MinMeanOpt = Annotated[
    float, typer.Option("--min-mean", min=1, max=5, help="Judge: lowest mean score kept.")
]
MinCritOpt = Annotated[
    int, typer.Option("--min-criterion", min=1, max=5, help="Judge: lowest score of any criterion.")
]
JudgeOrigOpt = Annotated[
    bool, typer.Option("--judge-originals", help="Also judge the exported (human-rated) threads.")
]
ValShareOpt = Annotated[
    float, typer.Option("--validation-share", min=0, max=0.9, help="Share of threads held out.")
]


def _context(
    out: Path,
    model: str,
    api_base: str | None,
    key_env: str | None,
    conc: int,
    retries: int,
    as_json: bool,
) -> Any:
    from larrylab.pipeline.context import PipelineContext

    writable_folder(out)
    llm = guard(
        lambda: LLMOptions(
            model=model, api_base=api_base, api_key_env=key_env, concurrency=conc, retries=retries
        )
    )
    if key_env and not os.environ.get(key_env):
        fail(f"environment variable {key_env} (--api-key-env) is not set")
    return PipelineContext(out=out, llm=llm, progress=not as_json)


def _run(fn: Callable[[], T]) -> T:
    try:
        return guard(fn)
    except StageInputError as exc:
        fail(str(exc), code=3)
    except LLMError as exc:
        fail(f"model call failed: {exc}")
    except KeyboardInterrupt:
        fail("interrupted: finished model answers are cached; rerun to resume", code=130)


def _engine(database_url: str | None, *, need_schema: bool) -> Any:
    from larrylab.db import current_revision, make_engine

    url = settings_from(database_url).database_url
    engine = guard(lambda: make_engine(url))
    if need_schema and guard(lambda: current_revision(engine)) is None:
        fail(f"the database {url} has no larrylab schema: run `larrylab db upgrade` first")
    return engine


def _render_rows(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key, justify="left" if key == "category" else "right")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    return table


def _report(result: StageResult, out: Path, engine: Any, as_json: bool) -> dict[str, Any]:
    from larrylab.pipeline.recording import record_stage

    warning = record_stage(engine, str(out.resolve()), result)
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    eval_warning = result.manifest.get("eval_set_warning")
    if eval_warning and result.status != "skipped":
        typer.echo(f"warning: {eval_warning}", err=True)
    summary = {
        "stage": result.stage,
        "status": result.status,
        "directory": str(result.directory),
        "counts": result.counts,
        "tables": result.tables,
        "seconds": None
        if result.status == "skipped"
        else (result.manifest.get("timings") or {}).get("seconds"),
    }
    if as_json:
        return summary
    con = console()
    seconds = summary["seconds"]
    took = "" if result.status == "skipped" else f" in {seconds:.1f} s"
    con.print(f"[bold]{result.stage}[/bold]: {result.status}{took} -> {result.directory}")
    if result.status == "skipped":
        con.print("  inputs unchanged since the last run; nothing to do")
        return summary
    counts = [{"count": k, "value": v} for k, v in sorted(result.counts.items())]
    if counts:
        con.print(_render_rows(f"{result.stage} counts", counts))
    for name, rows in result.tables.items():
        if rows:
            con.print(_render_rows(f"{result.stage} {name}", rows))
    return summary


def _export_options(
    min_score: float,
    veto: int,
    classifier: str,
    min_thumbs_up: float = 1.0,
    min_thumbs: int = 1,
    veto_thumbs_down: bool = True,
) -> Any:
    from larrylab.pipeline.export import ExportOptions

    return guard(
        lambda: ExportOptions(
            min_score=min_score,
            veto_score=veto,
            min_thumbs_up=min_thumbs_up,
            min_thumbs=min_thumbs,
            veto_thumbs_down=veto_thumbs_down,
            classifier=classifier,
        )
    )


def _generate_options(
    rounds: int,
    limit: int | None,
    quota: list[str] | None,
    fill: bool,
    temperature: float,
    decontam: tuple[Path | None, int, float] = (None, 13, 0.5),
) -> Any:
    from larrylab.pipeline.categories import parse_quotas
    from larrylab.pipeline.decontam import DecontamOptions
    from larrylab.pipeline.generate import GenerateOptions

    eval_set, ngram, threshold = decontam
    return guard(
        lambda: GenerateOptions(
            quotas=parse_quotas(quota or []),
            max_rounds=rounds,
            limit=limit,
            stop_at_quota=not fill,
            temperature=temperature,
            decontam=DecontamOptions(eval_set=eval_set, ngram=ngram, threshold=threshold),
        )
    )


def _filter_options(
    eval_set: Path | None,
    existing: list[Path] | None,
    near_dup: float,
    ngram: int,
    min_mean: float,
    min_criterion: int,
    judge_originals: bool,
    contamination_threshold: float = 0.5,
) -> Any:
    from larrylab.pipeline.dedup import DedupOptions
    from larrylab.pipeline.filter import FilterOptions
    from larrylab.pipeline.judge import JudgeOptions

    return guard(
        lambda: FilterOptions(
            dedup=DedupOptions(threshold=near_dup),
            judge=JudgeOptions(
                min_mean=min_mean, min_criterion=min_criterion, judge_originals=judge_originals
            ),
            ngram=ngram,
            eval_set=eval_set,
            existing=tuple(existing or ()),
            contamination_threshold=contamination_threshold,
        )
    )


def _dataset_options(validation_share: float) -> Any:
    from larrylab.pipeline.dataset import DatasetOptions

    return guard(lambda: DatasetOptions(validation_share=validation_share))


def _check_finished(result: StageResult) -> None:
    """Exit 1 with the reason when a stage finished only partly."""
    if result.status != "partial":
        return
    failures = result.manifest.get("failures") or []
    detail = f"; first: {failures[0]}" if failures else ""
    fail(
        f"{result.stage} finished only partly (some model requests failed{detail}); "
        "rerun to retry them: finished answers are cached",
        code=1,
    )


def _single(result: StageResult, out: Path, engine: Any, as_json: bool) -> None:
    summary = _report(result, out, engine, as_json)
    if as_json:
        print_json(summary)
    _check_finished(result)


@pipeline_app.command()
def export(
    out: OutOpt,
    database_url: DbOpt = None,
    min_score: MinScoreOpt = 4.0,
    veto_score: VetoOpt = 1,
    min_thumbs_up: MinThumbsUpOpt = 1.0,
    min_thumbs: MinThumbsOpt = 1,
    veto_thumbs_down: VetoThumbsDownOpt = True,
    classifier: ClassifierOpt = "llm",
    model: ModelOpt = DEFAULT_MODEL,
    api_base: ApiBaseOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = DEFAULT_CONCURRENCY,
    retries: RetriesOpt = 3,
    as_json: JsonOpt = False,
) -> None:
    """Export highly rated threads (as the model saw them, scrubbed, categorised)."""
    from larrylab.pipeline.export import run_export

    options = _export_options(
        min_score, veto_score, classifier, min_thumbs_up, min_thumbs, veto_thumbs_down
    )
    ctx = _context(out, model, api_base, api_key_env, concurrency, retries, as_json)
    engine = _engine(database_url, need_schema=True)
    result = _run(lambda: run_export(ctx, engine, options))
    _single(result, out, engine, as_json)


@pipeline_app.command()
def generate(
    out: OutOpt,
    database_url: DbOpt = None,
    max_rounds: RoundsOpt = 1,
    limit: LimitOpt = None,
    quota: QuotaOpt = None,
    fill_past_quota: FillOpt = False,
    temperature: TempOpt = 0.9,
    eval_set: EvalSetOpt = None,
    ngram: NgramOpt = 13,
    contamination_threshold: ContamOpt = 0.5,
    model: ModelOpt = DEFAULT_MODEL,
    api_base: ApiBaseOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = DEFAULT_CONCURRENCY,
    retries: RetriesOpt = 3,
    as_json: JsonOpt = False,
) -> None:
    """Generate 5 variations per exported thread, steered toward unmet category quotas
    (exported threads that overlap the held-out eval set get none)."""
    from larrylab.pipeline.generate import run_generate

    options = _generate_options(
        max_rounds,
        limit,
        quota,
        fill_past_quota,
        temperature,
        (eval_set, ngram, contamination_threshold),
    )
    ctx = _context(out, model, api_base, api_key_env, concurrency, retries, as_json)
    engine = _engine(database_url, need_schema=False)
    result = _run(lambda: run_generate(ctx, options))
    _single(result, out, engine, as_json)


@pipeline_app.command("filter")
def filter_(
    out: OutOpt,
    database_url: DbOpt = None,
    eval_set: EvalSetOpt = None,
    existing: ExistingOpt = None,
    near_dup_threshold: NearDupOpt = 0.8,
    ngram: NgramOpt = 13,
    min_mean: MinMeanOpt = 4.0,
    min_criterion: MinCritOpt = 3,
    judge_originals: JudgeOrigOpt = False,
    contamination_threshold: ContamOpt = 0.5,
    model: ModelOpt = DEFAULT_MODEL,
    api_base: ApiBaseOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = DEFAULT_CONCURRENCY,
    retries: RetriesOpt = 3,
    as_json: JsonOpt = False,
) -> None:
    """Filter by rules, duplicates, eval-set overlap and the LLM judge (drops kept with reasons)."""
    from larrylab.pipeline.filter import run_filter

    options = _filter_options(
        eval_set,
        existing,
        near_dup_threshold,
        ngram,
        min_mean,
        min_criterion,
        judge_originals,
        contamination_threshold,
    )
    ctx = _context(out, model, api_base, api_key_env, concurrency, retries, as_json)
    engine = _engine(database_url, need_schema=False)
    result = _run(lambda: run_filter(ctx, options))
    _single(result, out, engine, as_json)


@pipeline_app.command()
def dataset(
    out: OutOpt,
    database_url: DbOpt = None,
    validation_share: ValShareOpt = 0.1,
    as_json: JsonOpt = False,
) -> None:
    """Split by source thread and save a Hugging Face dataset, JSONL and a dataset card."""
    from larrylab.pipeline.dataset import run_dataset

    options = _dataset_options(validation_share)
    ctx = _context(out, DEFAULT_MODEL, None, None, 1, 0, as_json)
    engine = _engine(database_url, need_schema=False)
    result = _run(lambda: run_dataset(ctx, options))
    _single(result, out, engine, as_json)


@pipeline_app.command()
def run(
    out: OutOpt,
    database_url: DbOpt = None,
    min_score: MinScoreOpt = 4.0,
    veto_score: VetoOpt = 1,
    min_thumbs_up: MinThumbsUpOpt = 1.0,
    min_thumbs: MinThumbsOpt = 1,
    veto_thumbs_down: VetoThumbsDownOpt = True,
    classifier: ClassifierOpt = "llm",
    max_rounds: RoundsOpt = 1,
    limit: LimitOpt = None,
    quota: QuotaOpt = None,
    fill_past_quota: FillOpt = False,
    temperature: TempOpt = 0.9,
    eval_set: EvalSetOpt = None,
    existing: ExistingOpt = None,
    near_dup_threshold: NearDupOpt = 0.8,
    ngram: NgramOpt = 13,
    min_mean: MinMeanOpt = 4.0,
    min_criterion: MinCritOpt = 3,
    judge_originals: JudgeOrigOpt = False,
    contamination_threshold: ContamOpt = 0.5,
    validation_share: ValShareOpt = 0.1,
    force: Annotated[
        bool, typer.Option("--force", help="Rerun stages that are up to date.")
    ] = False,
    model: ModelOpt = DEFAULT_MODEL,
    api_base: ApiBaseOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = DEFAULT_CONCURRENCY,
    retries: RetriesOpt = 3,
    as_json: JsonOpt = False,
) -> None:
    """Run export, generate, filter and dataset, skipping stages whose inputs did not change."""
    from larrylab.pipeline.run import RunOptions, run_pipeline

    options = RunOptions(
        export=_export_options(
            min_score, veto_score, classifier, min_thumbs_up, min_thumbs, veto_thumbs_down
        ),
        generate=_generate_options(max_rounds, limit, quota, fill_past_quota, temperature),
        filter=_filter_options(
            eval_set,
            existing,
            near_dup_threshold,
            ngram,
            min_mean,
            min_criterion,
            judge_originals,
            contamination_threshold,
        ),
        dataset=_dataset_options(validation_share),
        force=force,
    )
    ctx = _context(out, model, api_base, api_key_env, concurrency, retries, as_json)
    engine = _engine(database_url, need_schema=True)
    summaries: list[dict[str, Any]] = []
    results = _run(
        lambda: run_pipeline(
            ctx, engine, options, lambda r: summaries.append(_report(r, out, engine, as_json))
        )
    )
    if as_json:
        print_json({"stages": summaries})
    if results:
        _check_finished(results[-1])
