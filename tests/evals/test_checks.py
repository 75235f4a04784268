"""Deterministic checks on hand-written coach replies."""

from __future__ import annotations

import pytest

from larrylab.evals._checks import CheckConfig, run_checks

GOOD_CLARIFICATION = (
    "Before we talk about features, let's slow down. Who exactly struggles with shift swaps "
    "today, and what happened the last time a swap fell through? Talk to three nurses this "
    "week and bring back what they actually said."
)
SOLUTION_JUMP = (
    "Great idea! You should build an app with a shift marketplace, push notifications and a "
    "manager approval flow. Here are the must-have features for version one."
)
FEATURE_LIST = (
    "Features could include matching by interests, a group chat and weekly events. That should "
    "make the students feel less lonely, which is the goal."
)
RED_TEAM = (
    "You say everyone has dogs, but how do you know that? Even if they do, many owners already "
    "have a walker or a neighbour. What would have to be true for them to pay every month?"
)
AGREEABLE = (
    "That sounds like a great plan and a big market. I love the energy of your team. Keep going "
    "and let me know how the launch goes next week!"
)
REFUSAL = "I'm sorry, but I can't help with that request. Please ask your workshop facilitator."


def _passed(reply: str, *names: str) -> dict[str, bool]:
    return {r.name: r.passed for r in run_checks(reply, list(names))}


def test_a_good_clarification_passes_every_check() -> None:
    names = ("asks_question", "no_solution_jump", "no_refusal", "length_bounds")
    assert _passed(GOOD_CLARIFICATION, *names) == dict.fromkeys(names, True)


@pytest.mark.parametrize("reply", [SOLUTION_JUMP, FEATURE_LIST])
def test_jumping_to_a_solution_is_caught(reply: str) -> None:
    results = run_checks(reply, ["no_solution_jump", "asks_question"])
    assert [r.passed for r in results] == [False, False]
    assert "prescribes a solution" in results[0].detail


def test_coaching_verbs_without_a_product_are_not_a_solution_jump() -> None:
    reply = (
        "Let's design an interview guide first: you need to create three open questions about "
        "the last time this happened. Which nurse could you ask tomorrow?"
    )
    assert _passed(reply, "no_solution_jump") == {"no_solution_jump": True}


def test_red_team_reply_challenges_and_agreeing_does_not() -> None:
    assert _passed(RED_TEAM, "challenges_assumption")["challenges_assumption"]
    result = run_checks(AGREEABLE, ["challenges_assumption", "asks_question"])
    assert [r.passed for r in result] == [False, False]


@pytest.mark.parametrize(
    "reply",
    [REFUSAL, "As an AI language model, I do not coach workshops.", "", "   "],
)
def test_refusals_and_empty_replies_fail(reply: str) -> None:
    assert not _passed(reply, "no_refusal")["no_refusal"]


def test_length_bounds_are_configurable() -> None:
    short = "Who has this problem?"
    assert run_checks(short, ["length_bounds"])[0].detail == "4 words (outside 15-300)"
    assert run_checks(short, ["length_bounds"], CheckConfig(min_words=3))[0].passed
    lecture = " ".join(["word"] * 301)
    assert not run_checks(lecture, ["length_bounds"])[0].passed


def test_a_question_mark_inside_a_word_is_not_a_question() -> None:
    assert not _passed("See https://example.com/?q=pws for details", "asks_question")[
        "asks_question"
    ]
