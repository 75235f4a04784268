"""The promotion gate: a candidate must be good in absolute terms and not worse than the baseline.

`decide_gate` is a pure function of both models' per-sample scores on the same samples. The
candidate passes only if all three hold:

1. **Absolute floor** — its mean over all samples is at least `floor` (default 0.6). A sample
   score of 0.6 is a mean rubric grade of 3.4/5 with every check holding: above "partly met"
   (3) on average, short of "met" (4). Below that Larry's learners would notice.
2. **Category floors** — no category's mean is below `category_floor` (default 0.5, a rubric
   grade of 3/5). A model may not buy its overall score with one PWS tool it cannot teach. The
   floor sits lower than the overall one because a category mean rests on about 16 samples
   (standard error near 0.05), so an equal floor would refuse good models by chance.
3. **Non-inferiority** — the lower bound of the two-sided 95% paired-t interval of the mean
   difference (candidate - baseline, same samples) is above `-margin` (default 0.05). Pairing
   removes the variance of the items' difficulty. 0.05 is a fifth of one rubric point: smaller
   than a difference a workshop facilitator would notice, and, with the 112 samples and a
   paired standard deviation near 0.2, the interval's half-width is about 0.04, so a model
   equal to the baseline passes about three times in four while one 0.1 worse (0.4 rubric
   points) is refused almost always. The paired t interval is used rather than a bootstrap:
   with over 100 bounded differences the mean is close to normal and the result is exact and
   reproducible.

`run_gate` runs (or reuses) the evals of both models on the current eval set with the same
judge, decides, and stores the decision with the registry entry.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inspect_ai.log import read_eval_log
from sqlmodel import Session

from larrylab.db import make_engine
from larrylab.evals._resolve import model_target, routing_table, target_spec
from larrylab.evals._stats import mean_interval, paired_interval
from larrylab.evals.evalset import EVAL_SET_VERSION, eval_set_hash
from larrylab.evals.runner import expected_sample_ids, resolve_judges, run_evals, task_names
from larrylab.experiments import NotFoundError
from larrylab.release import (
    EvalTaskResult,
    GateDecisionIn,
    GateDecisionPublic,
    latest_eval_results,
    record_gate_decision,
)
from larrylab.router import RoutingTable


@dataclass(frozen=True, slots=True)
class GateConfig:
    """The gate's thresholds (see the module docstring for why these defaults)."""

    floor: float = 0.6
    category_floor: float = 0.5
    margin: float = 0.05
    confidence: float = 0.95

    def __post_init__(self) -> None:
        """Reject thresholds outside the score scale."""
        for name in ("floor", "category_floor", "margin"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"gate {name} must be between 0 and 1")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError("gate confidence must be between 0.5 and 1")


def _pairs(
    candidate: Sequence[EvalTaskResult], baseline: Sequence[EvalTaskResult], reasons: list[str]
) -> list[tuple[str, str, float, float]]:
    """(sample id, category, candidate score, baseline score) for every shared sample."""
    cand = {r.task: r for r in candidate}
    base = {r.task: r for r in baseline}
    for task in sorted(set(cand) ^ set(base)):
        side = "baseline" if task in cand else "candidate"
        reasons.append(f"task {task} has no {side} result: both must run the same tasks")
    pairs = []
    for task in sorted(set(cand) & set(base)):
        c, b = cand[task].sample_scores, base[task].sample_scores
        if set(c) != set(b):
            reasons.append(
                f"task {task}: candidate and baseline were scored on different samples "
                f"({len(c)} vs {len(b)}, {len(set(c) ^ set(b))} not shared)"
            )
            continue
        pairs += [(sid, cand[task].category, c[sid], b[sid]) for sid in sorted(c)]
    return pairs


def decide_gate(
    *,
    candidate: str,
    baseline: str,
    eval_set_hash: str,
    candidate_results: Sequence[EvalTaskResult],
    baseline_results: Sequence[EvalTaskResult],
    config: GateConfig | None = None,
) -> GateDecisionIn:
    """Decide the gate from both models' per-task results on the same samples."""
    config = config or GateConfig()
    problems: list[str] = []
    pairs = _pairs(candidate_results, baseline_results, problems)
    cand_scores = [p[2] for p in pairs]
    overall = mean_interval(cand_scores, config.confidence)
    base_overall = mean_interval([p[3] for p in pairs], config.confidence)
    categories: dict[str, dict[str, float]] = {}
    for category in sorted({p[1] for p in pairs}):
        c = [p[2] for p in pairs if p[1] == category]
        b = [p[3] for p in pairs if p[1] == category]
        categories[category] = {
            "n": len(c),
            "candidate": statistics.fmean(c),
            "baseline": statistics.fmean(b),
        }
    diff = paired_interval(cand_scores, [p[3] for p in pairs], config.confidence)
    pct = f"{config.confidence:.0%}"
    if len(pairs) < 2:
        problems.append(f"only {len(pairs)} paired sample(s): at least 2 are needed")
    if overall.mean < config.floor:
        problems.append(f"overall score {overall.mean:.3f} is below the floor {config.floor:.2f}")
    for category, stats in categories.items():
        if stats["candidate"] < config.category_floor:
            problems.append(
                f"category {category} scores {stats['candidate']:.3f}, below its floor "
                f"{config.category_floor:.2f}"
            )
    if pairs and diff.ci_low <= -config.margin:
        problems.append(
            f"not shown non-inferior to {baseline}: the paired difference {diff.mean:+.3f} has "
            f"a {pct} lower bound {diff.ci_low:+.3f}, not above -{config.margin:.2f}"
        )
    passed = not problems
    reasons = problems or [
        f"overall score {overall.mean:.3f} clears the floor {config.floor:.2f}",
        f"every category is at least {config.category_floor:.2f} "
        f"(lowest {min(s['candidate'] for s in categories.values()):.3f})",
        f"non-inferior to {baseline}: paired difference {diff.mean:+.3f}, {pct} CI "
        f"[{diff.ci_low:+.3f}, {diff.ci_high:+.3f}], lower bound above -{config.margin:.2f}",
    ]
    evidence: dict[str, Any] = {
        "config": asdict(config),
        "n_paired": len(pairs),
        "overall": {"candidate": asdict(overall), "baseline": asdict(base_overall)},
        "categories": categories,
        "paired_difference": {"method": "paired t", **asdict(diff)},
        "tasks": {
            side: {
                r.task: {
                    "mean": r.mean,
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                    "n_samples": r.n_samples,
                    "log_path": r.log_path,
                }
                for r in results
            }
            for side, results in (("candidate", candidate_results), ("baseline", baseline_results))
        },
    }
    return GateDecisionIn(
        candidate=candidate,
        baseline=baseline,
        eval_set_hash=eval_set_hash,
        passed=passed,
        reasons=reasons,
        evidence=evidence,
    )


def route_model(table: RoutingTable, route: str | None) -> str:
    """The model a route serves by default (the promoted one); the only route if none named."""
    if route is None:
        if len(table.routes) != 1:
            listed = ", ".join(sorted(table.routes)) or "none"
            raise ValueError(f"name a route or a baseline model: routes are {listed}")
        route = next(iter(table.routes))
    model = table.routes.get(route)
    if model is None:
        raise NotFoundError(f"unknown route {route!r}")
    return model


@dataclass(frozen=True, slots=True)
class _Run:
    """What a gate's evals must match to reuse stored results."""

    digest: str
    judges: list[str]
    targets: dict[str, dict[str, Any]]
    judge_targets: dict[str, dict[str, Any]]


def _log_matches(path: str | None, target: dict[str, Any], judges: dict[str, Any]) -> bool:
    """Whether the inspect log at `path` evaluated this target with these judge targets."""
    if not path:
        return False
    try:
        spec = read_eval_log(path, header_only=True).eval
    except Exception:  # moved, deleted or unreadable: run again rather than trust the row
        return False
    return bool(
        spec.model_args.get("target") == target and spec.task_args.get("judge_targets") == judges
    )


def _stored(
    session: Session,
    model: str,
    run: _Run,
    tasks: list[str],
    limit: int | None,
) -> list[EvalTaskResult] | None:
    """The model's stored results if they cover exactly this run: the same eval set, samples,
    judges, and endpoints (read back from each task's inspect log, since a registry entry can
    be pointed at another endpoint after it was evaluated)."""
    stored = latest_eval_results(session=session, model=model, eval_set_hash=run.digest)
    rows = {r.task: r for r in stored}
    out = []
    for task in tasks:
        row = rows.get(task)
        if row is None or row.judge != ",".join(run.judges):
            return None
        if set(row.sample_scores) != set(expected_sample_ids(task, limit)):
            return None
        if not _log_matches(row.log_path, run.targets[model], run.judge_targets):
            return None
        out.append(EvalTaskResult(**row.model_dump(include=set(EvalTaskResult.model_fields))))
    return out


def run_gate(
    *,
    database_url: str,
    candidate: str,
    baseline: str | None = None,
    route: str | None = None,
    judge: str | Sequence[str] | None = None,
    log_dir: str | Path,
    limit: int | None = None,
    config: GateConfig | None = None,
    reuse: bool = True,
    actor: str = "larrylab gate",
    max_tokens: int | None = None,
) -> GateDecisionPublic:
    """Evaluate candidate and baseline on the same samples, decide, and store the decision.

    The baseline defaults to the model `route` serves (the only route if none is named), the
    judge to that route's control model. Stored results for the same eval set, samples, judges
    and endpoints are reused unless `reuse` is False or `max_tokens` caps the replies (both
    models are then evaluated afresh under that cap).
    """
    table = routing_table(database_url)
    baseline = baseline or route_model(table, route)
    if baseline == candidate:
        raise ValueError(f"{candidate!r} is the baseline itself; gate a different model")
    judges = resolve_judges(table, judge, route)
    run = _Run(
        digest=eval_set_hash(),
        judges=judges,
        # NotFoundError for an unknown model before any eval runs
        targets={m: target_spec(model_target(table, m)) for m in (candidate, baseline)},
        judge_targets={j: target_spec(model_target(table, j)) for j in judges},
    )
    tasks = task_names(None)
    results: dict[str, list[EvalTaskResult]] = {}
    engine = make_engine(database_url)
    try:
        for model in (candidate, baseline):
            with Session(engine) as session:
                fresh = not reuse or max_tokens is not None
                stored = None if fresh else _stored(session, model, run, tasks, limit)
            results[model] = stored or run_evals(
                database_url=database_url,
                model=model,
                judge=judges,
                log_dir=log_dir,
                limit=limit,
                route=route,
                max_tokens=max_tokens,
            )
        decision = decide_gate(
            candidate=candidate,
            baseline=baseline,
            eval_set_hash=run.digest,
            candidate_results=results[candidate],
            baseline_results=results[baseline],
            config=config,
        )
        decision.evidence.update(
            {"eval_set_version": EVAL_SET_VERSION, "judge": judges, "limit": limit}
        )
        if limit is not None:
            decision.reasons.append(f"scored on the first {limit} sample(s) of each task only")
        with Session(engine) as session:
            return record_gate_decision(session=session, decision=decision, actor=actor)
    finally:
        engine.dispose()
