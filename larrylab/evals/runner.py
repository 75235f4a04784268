"""Running the PWS suite on a registry model and storing the scores in the larrylab store.

`run_evals` resolves the model and the judge(s) in the registry, runs the inspect tasks with
`inspect_ai.eval` (logs go to `log_dir`, so `inspect view --log-dir DIR` opens them), turns each
task's log into an `EvalTaskResult` (per-sample scores, mean, standard error, 95% CI) and records
the run with `larrylab.release._evalstore`.

A sample whose model call failed (after inspect's retries) scores 0: an unreliable model must
not look better by losing its hard samples. More than `MAX_ERROR_SHARE` failed samples in a
task fails the whole run and nothing is stored, so an outage is not mistaken for a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from inspect_ai import Task, eval
from inspect_ai.log import EvalLog
from sqlmodel import Session

from larrylab.db import make_engine
from larrylab.evals import _registry  # noqa: F401 (registers the larrylab model API)
from larrylab.evals._resolve import control_model, model_target, routing_table, target_spec
from larrylab.evals._scorer import judge_names
from larrylab.evals._stats import mean_interval
from larrylab.evals.evalset import (
    CATEGORIES,
    EVAL_SET_VERSION,
    items_by_category,
    items_hash,
    load_eval_items,
)
from larrylab.evals.tasks import TASKS
from larrylab.release import EvalTaskResult, record_eval_run, register_eval_set
from larrylab.router import RoutingTable

Display = Literal["full", "conversation", "rich", "plain", "log", "none"]
MAX_ERROR_SHARE = 0.1
MAX_RETRIES = 3  # per model call, for the failures the router would fall back on
SCORER = "pws_scorer"


class EvalRunError(RuntimeError):
    """An eval run that produced no usable result; the message says which task and why."""


def task_names(tasks: Sequence[str] | str | None) -> list[str]:
    """The tasks to run (all by default); ValueError naming an unknown one."""
    if tasks is None:
        return list(CATEGORIES)
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks)]
    names = [n.removeprefix("larrylab/") for n in names if n]
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown task(s) {unknown}; choose from {', '.join(CATEGORIES)}")
    return list(dict.fromkeys(names))


def expected_sample_ids(task: str, limit: int | None = None) -> list[str]:
    """The sample ids a run of `task` with `limit` scores (inspect takes the first `limit`)."""
    items = items_by_category(load_eval_items())[task]
    return [i.id for i in (items if limit is None else items[:limit])]


def resolve_judges(
    table: RoutingTable, judge: str | Sequence[str] | None, route: str | None = None
) -> list[str]:
    """The judge names: as given, else the control model of `route` (or of the only route)."""
    names = judge_names(judge) or [control_model(table, route)]
    for name in names:
        model_target(table, name)  # NotFoundError for an unknown judge
    return names


def result_from_log(log: EvalLog) -> EvalTaskResult:
    """The stored form of one task's log: per-sample scores (failed samples 0) and metrics."""
    task = log.eval.task.split("/")[-1]
    if log.status != "success":
        why = log.error.message if log.error else log.status
        raise EvalRunError(f"task {task} did not finish ({log.status}): {why}")
    scores: dict[str, float] = {}
    errors = 0
    for sample in log.samples or []:
        score = (sample.scores or {}).get(SCORER)
        if sample.error is not None or score is None:
            errors += 1
            scores[str(sample.id)] = 0.0
            continue
        value = score.value
        if not isinstance(value, dict) or "score" not in value:
            raise EvalRunError(f"task {task}: sample {sample.id} has no 'score' value")
        scores[str(sample.id)] = float(value["score"])
    interval = mean_interval(list(scores.values()))
    metrics: dict[str, float] = {"errors": float(errors)}
    for eval_score in log.results.scores if log.results else []:
        for name, m in eval_score.metrics.items():
            metrics[f"{eval_score.name}_{name.split('/')[-1]}"] = float(m.value)
    return EvalTaskResult(
        task=task,
        category=task,
        n_samples=len(scores),
        mean=interval.mean,
        stderr=interval.stderr,
        ci_low=interval.ci_low,
        ci_high=interval.ci_high,
        metrics=metrics,
        sample_scores=scores,
        log_path=log.location or None,
    )


def run_evals(
    *,
    database_url: str,
    model: str,
    tasks: Sequence[str] | str | None = None,
    judge: str | Sequence[str] | None = None,
    log_dir: str | Path,
    limit: int | None = None,
    route: str | None = None,
    display: Display = "none",
    max_tokens: int | None = None,
) -> list[EvalTaskResult]:
    """Run the PWS tasks on registry model `model`, store the results and return them.

    Args:
        database_url: The larrylab store with the registry (results are written there too).
        model: Registry name of the model under test.
        tasks: Task names (default: all seven categories).
        judge: Judge registry name(s); default the control model of `route`.
        log_dir: Where inspect writes its logs.
        limit: Score only the first `limit` samples of each task.
        route: The route whose control model judges when `judge` is not given.
        display: inspect's display ("none", "plain", "rich", "full").
        max_tokens: Cap on each reply of the model under test (the judges are not capped);
            default the model's own limit.

    Raises:
        NotFoundError: Unknown model, judge or route.
        ValueError: Unknown task or bad limit.
        EvalRunError: A task did not finish (nothing is stored then).
    """
    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1")
    names = task_names(tasks)
    table = routing_table(database_url)
    target = model_target(table, model)
    judges = resolve_judges(table, judge, route)
    judge_targets = {j: target_spec(model_target(table, j)) for j in judges}
    items = load_eval_items()
    built: list[Task] = [TASKS[n](judge=judges, judge_targets=judge_targets) for n in names]
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    logs = eval(
        built,
        model=f"larrylab/{model}",
        model_args={"target": target_spec(target)},
        log_dir=str(log_dir),
        limit=limit,
        display=display,
        fail_on_error=MAX_ERROR_SHARE,
        max_retries=MAX_RETRIES,
        log_format="eval",
        max_tokens=max_tokens,  # None: inspect's default, the model's own limit
    )
    results = [result_from_log(log) for log in logs]
    digest = items_hash(items)
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            register_eval_set(
                session=session,
                eval_set_hash=digest,
                version=EVAL_SET_VERSION,
                n_samples=len(items),
            )
            record_eval_run(
                session=session,
                model=model,
                eval_set_hash=digest,
                results=results,
                judge=",".join(judges),
                log_dir=str(log_dir),
            )
    finally:
        engine.dispose()
    return results
