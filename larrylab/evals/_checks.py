"""Deterministic checks on a coach reply: cheap, explainable, and the same on every run.

Each check holds for an ideal reply to the eval items that list it. They are heuristics over
the reply's text (English keyword patterns), so they are deliberately conservative: they catch
the clear failures (no question at all, a feature list, a refusal, a wall of text) and leave
judgement to the rubric judge.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check on one reply, with a sentence saying why."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """Tunable bounds for the checks.

    Attributes:
        min_words: Fewer words than this is too thin to coach with.
        max_words: More words than this is a lecture, not a workshop reply.
    """

    min_words: int = 15
    max_words: int = 300


def _patterns(*texts: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(t, re.IGNORECASE) for t in texts)


_QUESTION = re.compile(r"\?(?=[\s\"'\u201d)\]*_]|$)")

# Prescribing a solution: the reply tells the learner which product to build or hands over a
# plan. Verbs alone are too common in coaching ("design an interview"), so a product noun must
# follow within a few words.
_PRODUCT = (
    r"(?:an? |the |your |our |some )?(?:[\w-]+ ){0,2}(?:apps?|applications?|platforms?|tools?|"
    r"dashboards?|products?|features?|websites?|robots?|devices?|bots?|chatbots?|prototypes?|"
    r"marketplaces?|software|plugins?|mvps?|subscriptions?)\b"
)
_SOLUTION = _patterns(
    r"\b(?:you|we|they) (?:should|could|can|need to|must|might want to) (?:build|create|"
    r"develop|design|launch|add|implement|code|ship|offer) " + _PRODUCT,
    r"\bI(?:'d| would)? (?:recommend|suggest) (?:building|creating|developing|designing|"
    r"launching|adding|implementing) " + _PRODUCT,
    r"\blet'?s (?:build|design|create|develop|prototype|code|launch) " + _PRODUCT,
    r"\bhere(?:'s| is| are) (?:a|the|some|my) (?:solution|features?|app|product|design|"
    r"mock-?up|prototype)\b",
    r"\b(?:features?|functionality) (?:could|should|would|might) include\b",
    r"\bthe (?:solution|fix|answer) (?:is|would be) (?:to|a|an)\b",
    r"\bmust-have features?\b",
)

# Questioning a belief: the reply names an assumption, asks for evidence or offers a rival.
_CHALLENGE = _patterns(
    r"\bassum",
    r"\bhow (?:do|would|can|did) (?:you|we|they) know\b",
    r"\bevidence\b",
    r"\bare you (?:sure|certain)\b",
    r"\bwhat (?:would|must|has to|needs to) (?:have to )?be true\b",
    r"\bwhy do (?:you|they|we) (?:think|believe|assume)\b",
    r"\bwhat makes (?:you|them|us) (?:think|sure|confident|believe)\b",
    r"\bhow (?:sure|confident|certain)\b",
    r"\b(?:could|might|may) (?:it|this|that|there) (?:also )?be\b",
    r"\bis (?:it|that|this) (?:really|actually|necessarily)\b",
    r"\bdevil'?s advocate\b",
    r"\bchalleng",
    r"\bcounter-?(?:example|argument|evidence)",
    r"\balternative explanation",
    r"\bwhat if (?:you'?re|you are|we'?re|we are|they'?re|they are) wrong\b",
    r"\b(?:test|verify|validate|check) (?:that|this|it|whether|if)\b",
    r"\bproof\b|\bprove\b",
)

_REFUSAL = _patterns(
    r"\bI(?:'m| am) (?:sorry|afraid),? (?:but )?I (?:can(?:no|')t|am unable|won'?t)\b",
    r"\bI (?:can(?:no|')t|won'?t|am unable to|am not able to) (?:help|assist|answer|do that|"
    r"provide|comply|engage)\b",
    r"\bI'?m (?:not able|unable) to (?:help|assist|answer|provide)\b",
    r"\bas an ai(?: language model| assistant)?\b",
    r"\bI (?:must|have to) (?:decline|refuse)\b",
)


def _first_match(patterns: tuple[re.Pattern[str], ...], text: str) -> str | None:
    for p in patterns:
        m = p.search(text)
        if m:
            return m.group(0)
    return None


def asks_question(reply: str, config: CheckConfig) -> CheckResult:
    """The reply asks the learner at least one question."""
    n = len(_QUESTION.findall(reply))
    detail = f"asks {n} question(s)" if n else "asks no question (no '?')"
    return CheckResult("asks_question", n > 0, detail)


def no_solution_jump(reply: str, config: CheckConfig) -> CheckResult:
    """The reply does not prescribe a solution or hand over a plan."""
    hit = _first_match(_SOLUTION, reply)
    detail = f"prescribes a solution: {hit!r}" if hit else "prescribes no solution"
    return CheckResult("no_solution_jump", hit is None, detail)


def challenges_assumption(reply: str, config: CheckConfig) -> CheckResult:
    """The reply questions an assumption, asks for evidence or offers a rival explanation."""
    hit = _first_match(_CHALLENGE, reply)
    detail = f"challenges: {hit!r}" if hit else "challenges no assumption"
    return CheckResult("challenges_assumption", hit is not None, detail)


def no_refusal(reply: str, config: CheckConfig) -> CheckResult:
    """The reply is not empty and does not refuse to coach."""
    if not reply.strip():
        return CheckResult("no_refusal", False, "empty reply")
    hit = _first_match(_REFUSAL, reply)
    detail = f"refuses: {hit!r}" if hit else "no refusal"
    return CheckResult("no_refusal", hit is None, detail)


def length_bounds(reply: str, config: CheckConfig) -> CheckResult:
    """The reply has between `min_words` and `max_words` words."""
    n = len(reply.split())
    ok = config.min_words <= n <= config.max_words
    detail = f"{n} words ({'within' if ok else 'outside'} {config.min_words}-{config.max_words})"
    return CheckResult("length_bounds", ok, detail)


CHECKS: Mapping[str, Callable[[str, CheckConfig], CheckResult]] = MappingProxyType(
    {
        "asks_question": asks_question,
        "no_solution_jump": no_solution_jump,
        "challenges_assumption": challenges_assumption,
        "no_refusal": no_refusal,
        "length_bounds": length_bounds,
    }
)
CHECK_NAMES: frozenset[str] = frozenset(CHECKS)


def run_checks(
    reply: str, names: list[str], config: CheckConfig | None = None
) -> list[CheckResult]:
    """Run the named checks on `reply`; KeyError for an unknown name."""
    config = config or CheckConfig()
    return [CHECKS[name](reply, config) for name in names]
