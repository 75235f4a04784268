"""The rubric judge: a model grades a coach reply 1-5 per criterion, with a rationale each.

The judge answers through JSON-schema structured output. The schema is built per item, one
required property per criterion (`c1`, `c2`, ...) holding `{rationale, score}` with the score
restricted to 1..5, so any reply valid against the schema is a complete verdict. A reply that
is not (a provider that ignores the schema, truncated JSON) is retried, and after the last
retry the judge counts as failed, with the parse error as the explanation. Several judges are
combined per criterion by the median (the majority view for three judges).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inspect_ai.model import (
    ChatMessage,
    ChatMessageSystem,
    ChatMessageUser,
    GenerateConfig,
    Model,
    ResponseSchema,
)
from inspect_ai.util import JSONSchema

JUDGE_SYSTEM = """\
You are an experienced facilitator of PWS ("Problems Worth Solving") workshops. You grade the
replies of Larry, an AI coach who teaches the PWS methodology: problem clarification, Trending
to the Absurd (TTA), Jobs to Be Done (JTBD), S-curves, Ackoff's DIKW hierarchy and red-teaming.
A good coach reply helps the learner think for themselves: it asks rather than tells, stays on
the problem before any solution, is accurate about the methods, and is short and warm.

Grade only the final coach reply, against each criterion separately:
1 = not met or contradicted, 2 = barely met, 3 = partly met, 4 = met, 5 = fully met, exemplary.
For each criterion write one sentence of rationale first, then the score."""

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class JudgeReplyError(ValueError):
    """A judge reply that is not a complete, valid verdict; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class CriterionGrade:
    """One criterion's grade from one judge."""

    criterion: str
    score: int
    rationale: str


@dataclass(frozen=True, slots=True)
class JudgeVerdict:
    """One judge's verdict on one reply: its grades, or the error after the last retry."""

    judge: str
    grades: tuple[CriterionGrade, ...]
    attempts: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class JudgeSummary:
    """The judges combined: the median grade per criterion and the score in [0, 1]."""

    value: float
    medians: tuple[float, ...]
    verdicts: tuple[JudgeVerdict, ...]
    explanation: str


def verdict_schema(n_criteria: int) -> ResponseSchema:
    """The structured-output schema for a verdict on `n_criteria` criteria."""
    grade = {
        "type": "object",
        "properties": {
            "rationale": {"type": "string"},
            "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        },
        "required": ["rationale", "score"],
        "additionalProperties": False,
    }
    keys = [f"c{i}" for i in range(1, n_criteria + 1)]
    schema = {
        "type": "object",
        "properties": {k: grade for k in keys},
        "required": keys,
        "additionalProperties": False,
    }
    return ResponseSchema(
        name="rubric_verdict",
        json_schema=JSONSchema.model_validate(schema),
        description="A 1-5 score with a one-sentence rationale per rubric criterion.",
        strict=True,
    )


def judge_prompt(conversation: Sequence[ChatMessage], reply: str, rubric: Sequence[str]) -> str:
    """The user message asking the judge to grade `reply` against `rubric`."""
    lines = ["## Conversation so far"]
    lines += [f"[{m.role}] {m.text}" for m in conversation]
    lines += ["", "## Larry's reply to grade", reply or "(empty reply)", "", "## Criteria"]
    lines += [f"c{i}: {c}" for i, c in enumerate(rubric, 1)]
    lines += [
        "",
        "Answer with a JSON object with keys "
        + ", ".join(f"c{i}" for i in range(1, len(rubric) + 1))
        + ', each {"rationale": "...", "score": 1-5}.',
    ]
    return "\n".join(lines)


def parse_verdict(text: str, rubric: Sequence[str]) -> tuple[CriterionGrade, ...]:
    """The grades in a judge reply; JudgeReplyError naming the first problem found."""
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JudgeReplyError(f"judge reply is not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(data, dict):
        raise JudgeReplyError("judge reply is not a JSON object")
    grades = []
    for i, criterion in enumerate(rubric, 1):
        entry = data.get(f"c{i}")
        if not isinstance(entry, dict):
            raise JudgeReplyError(f"judge reply has no grade object for c{i}")
        score, rationale = entry.get("score"), entry.get("rationale")
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise JudgeReplyError(f"c{i}: score must be an integer from 1 to 5, got {score!r}")
        if not isinstance(rationale, str):
            raise JudgeReplyError(f"c{i}: rationale must be a string")
        grades.append(CriterionGrade(criterion, score, rationale.strip()))
    return tuple(grades)


async def grade(
    model: Model,
    conversation: Sequence[ChatMessage],
    reply: str,
    rubric: Sequence[str],
    *,
    retries: int = 2,
) -> JudgeVerdict:
    """One judge's verdict, asking again up to `retries` times after a malformed reply."""
    messages: list[ChatMessage] = [
        ChatMessageSystem(content=JUDGE_SYSTEM),
        ChatMessageUser(content=judge_prompt(conversation, reply, rubric)),
    ]
    config = GenerateConfig(response_schema=verdict_schema(len(rubric)), temperature=0.0)
    error = ""
    for attempt in range(1, retries + 2):
        output = await model.generate(messages, config=config)
        try:
            return JudgeVerdict(str(model), parse_verdict(output.completion, rubric), attempt)
        except JudgeReplyError as exc:
            error = str(exc)
    return JudgeVerdict(str(model), (), retries + 1, f"{error} (after {retries + 1} attempts)")


def combine(verdicts: Sequence[JudgeVerdict], rubric: Sequence[str]) -> JudgeSummary:
    """Median grade per criterion over the judges that answered; 0 if none did.

    The value maps the mean of the medians from 1..5 onto 0..1.
    """
    ok = [v for v in verdicts if v.error is None]
    failed = [f"{v.judge}: {v.error}" for v in verdicts if v.error is not None]
    if not ok:
        why = "; ".join(failed) or "no judge configured"
        return JudgeSummary(0.0, (), tuple(verdicts), f"judge failed, scored 0: {why}")
    medians = tuple(
        float(statistics.median(v.grades[i].score for v in ok)) for i in range(len(rubric))
    )
    value = statistics.fmean((m - 1) / 4 for m in medians)
    parts = [f"c{i} {m:g}/5" for i, m in enumerate(medians, 1)]
    explanation = f"rubric (median of {len(ok)} judge(s)): " + ", ".join(parts)
    if failed:
        explanation += "; ignored failed judge(s): " + "; ".join(failed)
    return JudgeSummary(value, medians, tuple(verdicts), explanation)
