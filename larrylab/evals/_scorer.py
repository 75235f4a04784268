"""The PWS scorer: the rubric judge and the deterministic checks, combined into one score.

Each sample scores `{"score", "judge", "checks"}`, all in [0, 1]:

- `judge`: the mean over rubric criteria of the judges' median grade, mapped from 1..5 to 0..1
  (0 when every judge failed after its retries).
- `checks`: the share of the item's deterministic checks that hold (1 when it lists none).
- `score = judge * ((1 - check_weight) + check_weight * checks)`: the rubric is the measure,
  and a failed check can only lower it. With the default weight 0.5, failing every check halves
  the score; with all checks holding, the score is the judge's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
from inspect_ai.model import ChatMessage, ChatMessageUser, Model, get_model
from inspect_ai.scorer import (
    Metric,
    SampleScore,
    Score,
    Scorer,
    Target,
    mean,
    metric,
    scorer,
    stderr,
)
from inspect_ai.solver import TaskState
from inspect_ai.util import collect

from larrylab.evals._checks import CheckConfig, run_checks
from larrylab.evals._judge import JudgeSummary, combine, grade
from larrylab.evals._resolve import control_model, routing_table
from larrylab.evals._stats import mean_interval


def _score_values(scores: list[SampleScore]) -> list[float]:
    return [float(s.score.as_float()) for s in scores]


@metric
def ci_low() -> Metric:
    """Lower bound of the Student-t 95% confidence interval of the mean."""

    def compute(scores: list[SampleScore]) -> float:
        return mean_interval(_score_values(scores)).ci_low

    return compute


@metric
def ci_high() -> Metric:
    """Upper bound of the Student-t 95% confidence interval of the mean."""

    def compute(scores: list[SampleScore]) -> float:
        return mean_interval(_score_values(scores)).ci_high

    return compute


def combined_score(judge: float, checks: float, check_weight: float) -> float:
    """The sample score: the judge's value, lowered by failed checks (see module docstring)."""
    return judge * ((1.0 - check_weight) + check_weight * checks)


def judge_names(judge: str | Sequence[str] | None) -> list[str]:
    """Judge registry names from a name, a comma-separated string or a list."""
    if judge is None:
        return []
    parts = judge.split(",") if isinstance(judge, str) else list(judge)
    return [p.strip() for p in parts if p and p.strip()]


async def _default_judges() -> list[str]:
    table = await anyio.to_thread.run_sync(routing_table)
    return [control_model(table, None)]


def is_inspect_model(name: str) -> bool:
    """Whether a judge is named as an inspect model (`provider/model`, e.g. `openai/larry`)
    rather than as a registry model: it is then called over HTTP with no database."""
    return "/" in name


def _judge_model(name: str, spec: dict[str, Any] | None, args: dict[str, Any]) -> Model:
    """The judge: an inspect model as named (with model args `args`), or `larrylab/<name>`
    (at the resolved target if one was passed)."""
    if is_inspect_model(name):
        return get_model(name, **args)
    if spec is None:
        return get_model(f"larrylab/{name}")
    return get_model(f"larrylab/{name}", target=spec)


def _conversation(state: TaskState) -> list[ChatMessage]:
    if isinstance(state.input, str):
        return [ChatMessageUser(content=state.input)]
    return list(state.input)


@scorer(
    metrics={
        "score": [mean(), stderr(), ci_low(), ci_high()],
        "judge": [mean()],
        "checks": [mean()],
    }
)
def pws_scorer(
    judge: str | list[str] | None = None,
    judge_targets: dict[str, dict[str, Any]] | None = None,
    judge_args: dict[str, Any] | None = None,
    judge_retries: int = 2,
    check_weight: float = 0.5,
    min_words: int = 15,
    max_words: int = 300,
) -> Scorer:
    """Score a coach reply by rubric judge(s) and the item's deterministic checks.

    Args:
        judge: The judge model(s): a registry name, called as `larrylab/<name>` (needs the
            database), or an inspect model `provider/model` (e.g. `openai/larry` with
            `OPENAI_BASE_URL` at a router), called over HTTP alone; default the control model
            of the only route (from `LARRYLAB_DATABASE_URL`).
        judge_targets: Resolved target specs per judge name (the runner passes them).
        judge_args: Model args for the judges named as inspect models, e.g.
            `{responses_api: false}` for `openai/<route>` at a larrylab router.
        judge_retries: How many times to ask again after a malformed judge reply.
        check_weight: How much failed checks can lower the score (0 = ignore checks).
        min_words: Lower word bound of the `length_bounds` check.
        max_words: Upper word bound of the `length_bounds` check.
    """
    if not 0.0 <= check_weight <= 1.0:
        raise ValueError("check_weight must be between 0 and 1")
    config = CheckConfig(min_words=min_words, max_words=max_words)
    names = judge_names(judge)
    targets = judge_targets or {}
    model_args = dict(judge_args or {})
    resolved: list[str] = []  # the default judge, looked up once per scorer

    async def judges() -> list[str]:
        if names:
            return names
        if not resolved:
            found = await _default_judges()
            if not resolved:
                resolved.extend(found)
        return resolved

    async def score(state: TaskState, target: Target) -> Score:
        reply = state.output.completion
        rubric: list[str] = state.metadata["rubric"]
        checks = run_checks(reply, state.metadata["checks"], config)
        checks_value = sum(c.passed for c in checks) / len(checks) if checks else 1.0
        models = [_judge_model(n, targets.get(n), model_args) for n in await judges()]
        conversation = _conversation(state)
        verdicts = await collect(
            *(grade(m, conversation, reply, rubric, retries=judge_retries) for m in models)
        )
        summary = combine(verdicts, rubric)
        value = combined_score(summary.value, checks_value, check_weight)
        failed = [f"{c.name}: {c.detail}" for c in checks if not c.passed]
        explanation = summary.explanation + (
            "; failed checks: " + "; ".join(failed) if failed else "; all checks hold"
        )
        return Score(
            value={"score": value, "judge": summary.value, "checks": checks_value},
            answer=reply,
            explanation=explanation,
            metadata=_metadata(summary, checks),
        )

    return score


def _metadata(summary: JudgeSummary, checks: Sequence[Any]) -> dict[str, Any]:
    return {
        "checks": {c.name: {"passed": c.passed, "detail": c.detail} for c in checks},
        "judges": [
            {
                "judge": v.judge,
                "attempts": v.attempts,
                "error": v.error,
                "grades": [
                    {"criterion": g.criterion, "score": g.score, "rationale": g.rationale}
                    for g in v.grades
                ],
            }
            for v in summary.verdicts
        ],
        "criterion_medians": list(summary.medians),
    }
