"""The PWS eval suite: one inspect task per PWS category of the held-out eval set.

Each sample is a workshop moment: the conversation so far (ending with the learner's message)
is the input, the model under test writes Larry's next reply, and `pws_scorer` grades it by
rubric judge(s) and the item's deterministic checks. Run one with

    inspect eval larrylab/problem_clarification --model larrylab/<registry-name>

or, over HTTP alone against a router (see docs/evals-and-promotion.md),

    OPENAI_BASE_URL=http://127.0.0.1:8400/v1 OPENAI_API_KEY=unused \
      inspect eval larrylab/problem_clarification --model openai/<route> \
      -M responses_api=false -T judge=openai/<route> -T judge_args='{responses_api: false}'

or all of them with `larrylab eval run <registry-name>`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import (
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageUser,
)
from inspect_ai.solver import generate

from larrylab.evals._scorer import pws_scorer
from larrylab.evals.evalset import (
    CATEGORIES,
    EVAL_SET_SHA256,
    EVAL_SET_VERSION,
    EvalItem,
    load_eval_items,
)


def _message(m: dict[str, str]) -> ChatMessage:
    if m["role"] == "system":
        return ChatMessageSystem(content=m["content"])
    if m["role"] == "assistant":
        return ChatMessageAssistant(content=m["content"])
    return ChatMessageUser(content=m["content"])


def record_to_sample(item: EvalItem) -> Sample:
    """An inspect sample for one eval item: the conversation in, the rubric as the target."""
    return Sample(
        id=item.id,
        input=[_message(m) for m in item.messages],
        target=list(item.rubric),
        metadata={"category": item.category, "rubric": list(item.rubric), "checks": item.checks},
    )


def pws_task(
    category: str,
    *,
    judge: str | list[str] | None = None,
    judge_targets: dict[str, dict[str, Any]] | None = None,
    judge_args: dict[str, Any] | None = None,
    judge_retries: int = 2,
    check_weight: float = 0.5,
) -> Task:
    """The task for one category (see `pws_scorer` for the judge and check arguments)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; use one of {', '.join(CATEGORIES)}")
    items = [i for i in load_eval_items() if i.category == category]
    return Task(
        dataset=MemoryDataset(
            [record_to_sample(i) for i in items], name=f"{EVAL_SET_VERSION}/{category}"
        ),
        solver=generate(),
        scorer=pws_scorer(
            judge=judge,
            judge_targets=judge_targets,
            judge_args=judge_args,
            judge_retries=judge_retries,
            check_weight=check_weight,
        ),
        name=category,
        version=EVAL_SET_VERSION,
        # load_eval_items() refuses a file that does not match the pinned hash
        metadata={"category": category, "eval_set_hash": EVAL_SET_SHA256},
    )


@task
def problem_clarification(
    judge: str | list[str] | None = None,
    judge_targets: dict[str, dict[str, Any]] | None = None,
    judge_args: dict[str, Any] | None = None,
    judge_retries: int = 2,
    check_weight: float = 0.5,
) -> Task:
    """Clarifying the problem before any solution: who, when, evidence, no feature lists."""
    return pws_task("problem_clarification", **_args(locals()))


@task
def tta(
    judge: str | list[str] | None = None,
    judge_targets: dict[str, dict[str, Any]] | None = None,
    judge_args: dict[str, Any] | None = None,
    judge_retries: int = 2,
    check_weight: float = 0.5,
) -> Task:
    """Trending to the Absurd: push a measurable trend to its extreme and find the problems."""
    return pws_task("tta", **_args(locals()))


@task
def jtbd(
    judge: str | list[str] | None = None,
    judge_targets: dict[str, dict[str, Any]] | None = None,
    judge_args: dict[str, Any] | None = None,
    judge_retries: int = 2,
    check_weight: float = 0.5,
) -> Task:
    """Jobs to Be Done: the circumstance and the progress a customer hires a product for."""
    return pws_task("jtbd", **_args(locals()))


@task
def s_curve(
    judge: str | list[str] | None = None,
    judge_targets: dict[str, dict[str, Any]] | None = None,
    judge_args: dict[str, Any] | None = None,
    judge_retries: int = 2,
    check_weight: float = 0.5,
) -> Task:
    """S-curve analysis: placing a technology by a performance measure and its evidence."""
    return pws_task("s_curve", **_args(locals()))


@task
def ackoff_dikw(
    judge: str | list[str] | None = None,
    judge_targets: dict[str, dict[str, Any]] | None = None,
    judge_args: dict[str, Any] | None = None,
    judge_retries: int = 2,
    check_weight: float = 0.5,
) -> Task:
    """Ackoff's DIKW hierarchy: is a claim data, information, knowledge or wisdom?"""
    return pws_task("ackoff_dikw", **_args(locals()))


@task
def red_team(
    judge: str | list[str] | None = None,
    judge_targets: dict[str, dict[str, Any]] | None = None,
    judge_args: dict[str, Any] | None = None,
    judge_retries: int = 2,
    check_weight: float = 0.5,
) -> Task:
    """Red-team challenges: question the learner's assumptions and evidence, constructively."""
    return pws_task("red_team", **_args(locals()))


@task
def error_recovery(
    judge: str | list[str] | None = None,
    judge_targets: dict[str, dict[str, Any]] | None = None,
    judge_args: dict[str, Any] | None = None,
    judge_retries: int = 2,
    check_weight: float = 0.5,
) -> Task:
    """Recovering from mistakes and confusion, the coach's own included."""
    return pws_task("error_recovery", **_args(locals()))


def _args(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: values[k]
        for k in ("judge", "judge_targets", "judge_args", "judge_retries", "check_weight")
    }


TASKS: Mapping[str, Callable[..., Task]] = MappingProxyType(
    {
        "problem_clarification": problem_clarification,
        "tta": tta,
        "jtbd": jtbd,
        "s_curve": s_curve,
        "ackoff_dikw": ackoff_dikw,
        "red_team": red_team,
        "error_recovery": error_recovery,
    }
)
