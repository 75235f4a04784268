"""Filter step 4, the LLM judge: 1-5 on the seed plan's four criteria, with a rationale each.

The judge answers as structured output validated against `JUDGE_SCHEMA`; a malformed answer is
retried and, if it stays malformed, its record is dropped with the reason. A record is kept when
the mean score reaches `min_mean` and no criterion is below `min_criterion`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from larrylab.pipeline.llm import LLMClient, ReplyError
from larrylab.pipeline.prompts import CRITERIA, JUDGE_SCHEMA, judge_messages
from larrylab.pipeline.records import Record


@dataclass(frozen=True)
class JudgeOptions:
    """When the judge keeps a record.

    Attributes:
        min_mean: Lowest mean score over the four criteria that is kept.
        min_criterion: Lowest score any single criterion may have.
        judge_originals: Also judge exported (human-rated) conversations.
    """

    min_mean: float = 4.0
    min_criterion: int = 3
    judge_originals: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.min_mean <= 5:
            raise ValueError(f"min_mean must be between 1 and 5, got {self.min_mean}")
        if not 1 <= self.min_criterion <= 5:
            raise ValueError(f"min_criterion must be between 1 and 5, got {self.min_criterion}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's decision on one record: None for `reason` means kept."""

    reason: str | None
    malformed: bool = False
    unavailable: bool = False


def decide(scores: dict[str, Any], options: JudgeOptions) -> tuple[float, str | None]:
    """The mean score and the reason to drop (None to keep) for a valid judge answer."""
    values = {name: int(scores[name]["score"]) for name in CRITERIA}
    mean = sum(values.values()) / len(values)
    low = [name for name, v in values.items() if v < options.min_criterion]
    if low:
        listed = ", ".join(f"{name} {values[name]}" for name in low)
        return mean, f"judge: {listed} below {options.min_criterion}"
    if mean < options.min_mean:
        return mean, f"judge: mean {mean:.2f} below {options.min_mean:g}"
    return mean, None


async def judge_record(rec: Record, client: LLMClient, options: JudgeOptions) -> Verdict:
    """Ask the judge about `rec`; its scores go to `rec.meta['judge']`."""
    try:
        answer = await client.structured(
            name="judge", messages=judge_messages(rec.messages, rec.category), schema=JUDGE_SCHEMA
        )
    except ReplyError as exc:
        if exc.malformed:
            return Verdict(f"judge: malformed answer, dropped ({exc})", malformed=True)
        return Verdict(f"judge: unavailable ({exc})", unavailable=True)
    mean, reason = decide(answer, options)
    rec.meta["judge"] = {
        "model": client.options.model,
        "mean": mean,
        "scores": {name: answer[name]["score"] for name in CRITERIA},
        "rationales": {name: answer[name]["rationale"] for name in CRITERIA},
    }
    return Verdict(reason)


def score_distribution(records: Iterable[Record]) -> dict[str, dict[str, int]]:
    """Counts of judge scores: the mean (in half points) and each criterion's 1-5 score."""
    means: Counter[str] = Counter()
    per: dict[str, Counter[str]] = {name: Counter() for name in CRITERIA}
    for rec in records:
        judged = rec.meta.get("judge")
        if not judged:
            continue
        means[f"{round(judged['mean'] * 2) / 2:.1f}"] += 1
        for name, score in judged["scores"].items():
            per.setdefault(name, Counter())[str(score)] += 1
    out = {"mean": dict(sorted(means.items()))}
    out.update({name: dict(sorted(c.items())) for name, c in per.items()})
    return out
