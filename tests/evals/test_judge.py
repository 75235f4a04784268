"""The rubric judge: parsing its replies, retrying malformed ones, combining several judges."""

from __future__ import annotations

import asyncio
import json

import pytest
from inspect_ai.model import ChatMessageUser, GenerateConfig, ModelOutput

from larrylab.evals._judge import (
    CriterionGrade,
    JudgeReplyError,
    JudgeVerdict,
    combine,
    grade,
    parse_verdict,
    verdict_schema,
)

RUBRIC = ["Asks who has the problem", "Does not propose features", "Warm tone"]


def _reply(*scores: int) -> str:
    return json.dumps(
        {f"c{i}": {"rationale": f"r{i}", "score": s} for i, s in enumerate(scores, 1)}
    )


def test_a_valid_reply_parses_in_rubric_order() -> None:
    grades = parse_verdict(_reply(5, 2, 4), RUBRIC)
    assert [(g.criterion, g.score, g.rationale) for g in grades] == [
        ("Asks who has the problem", 5, "r1"),
        ("Does not propose features", 2, "r2"),
        ("Warm tone", 4, "r3"),
    ]


def test_a_fenced_reply_parses() -> None:
    assert len(parse_verdict(f"```json\n{_reply(3, 3, 3)}\n```", RUBRIC)) == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("The reply is good, 4/5.", "not JSON"),
        ("[1, 2, 3]", "not a JSON object"),
        (_reply(5, 2), "no grade object for c3"),
        (_reply(5, 2, 6), "c3: score must be an integer from 1 to 5, got 6"),
        (_reply(5, 2, True), "c3: score must be an integer"),
        (json.dumps({f"c{i}": {"score": 3} for i in (1, 2, 3)}), "c1: rationale must be"),
        ('{"c1": {"rationale": "r", "score": 3}', "not JSON"),
    ],
)
def test_malformed_replies_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(JudgeReplyError, match=message):
        parse_verdict(text, RUBRIC)


def test_schema_requires_every_criterion_with_scores_1_to_5() -> None:
    schema = verdict_schema(3).json_schema.model_dump(exclude_none=True)
    assert schema["required"] == ["c1", "c2", "c3"]
    assert schema["properties"]["c2"]["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]
    assert schema["additionalProperties"] is False


class ScriptedJudge:
    """Answers with the given completions in turn and records what it was asked."""

    def __init__(self, *completions: str) -> None:
        self.completions = list(completions)
        self.configs: list[GenerateConfig] = []

    async def generate(self, input: list[object], config: GenerateConfig) -> ModelOutput:
        self.configs.append(config)
        return ModelOutput.from_content("scripted", self.completions.pop(0))

    def __str__(self) -> str:
        return "scripted/judge"


def _mock(*completions: str) -> ScriptedJudge:
    return ScriptedJudge(*completions)


def _grade(model: object, retries: int = 2) -> JudgeVerdict:
    convo = [ChatMessageUser(content="We want to build an app for nurses.")]
    return asyncio.run(grade(model, convo, "Who struggles today?", RUBRIC, retries=retries))  # type: ignore[arg-type]


def test_malformed_replies_are_retried_then_accepted() -> None:
    judge = _mock("not json", _reply(4, 4)[:-1], _reply(4, 5, 3))
    verdict = _grade(judge)
    assert verdict.error is None
    assert verdict.attempts == 3
    assert [g.score for g in verdict.grades] == [4, 5, 3]
    schema = judge.configs[0].response_schema
    assert schema is not None and schema.json_schema.required == ["c1", "c2", "c3"]


def test_a_judge_malformed_after_every_retry_fails_with_the_reason() -> None:
    verdict = _grade(_mock("nope", "still nope", "[1]"), retries=2)
    assert verdict.grades == ()
    assert verdict.error == "judge reply is not a JSON object (after 3 attempts)"
    summary = combine([verdict], RUBRIC)
    assert summary.value == 0.0
    assert summary.explanation.startswith("judge failed, scored 0:")


def _verdict(name: str, *scores: int) -> JudgeVerdict:
    grades = tuple(CriterionGrade(c, s, "") for c, s in zip(RUBRIC, scores, strict=True))
    return JudgeVerdict(name, grades, 1)


def test_several_judges_combine_by_median_per_criterion() -> None:
    verdicts = [_verdict("a", 5, 1, 4), _verdict("b", 4, 2, 4), _verdict("c", 1, 2, 5)]
    summary = combine(verdicts, RUBRIC)
    assert summary.medians == (4.0, 2.0, 4.0)
    # mean of (4-1)/4, (2-1)/4, (4-1)/4
    assert summary.value == pytest.approx(0.58333, abs=1e-5)


def test_a_failed_judge_is_left_out_when_others_answered() -> None:
    failed = JudgeVerdict("broken", (), 3, "judge reply is not JSON")
    summary = combine([_verdict("a", 5, 5, 5), failed], RUBRIC)
    assert summary.value == 1.0
    assert "ignored failed judge(s): broken" in summary.explanation
