"""Config validation, the banner, the corpus, reply choice and seeded determinism."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from larrylab.sim import CATEGORIES, PWS_REPLIES, SimConfig, create_app
from larrylab.sim.app import banner
from larrylab.sim.replies import category_for, prompt_tokens, split_tokens

QUESTIONS = [
    "I want to build an app for students",
    "Can we trend this to the absurd?",
    "What job would someone hire this for?",
    "Is solar power at maturity yet?",
    "How is information different from knowledge?",
    "Please red team my plan",
    "I'm confused, did I get that wrong?",
] * 3


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("error_rate", 1.5, "between 0 and 1"),
        ("drop_rate", -0.1, "between 0 and 1"),
        ("hang_rate", float("nan"), "finite"),
        ("latency_ms", -1.0, "must not be negative"),
        ("ttft_ms", float("inf"), "finite"),
        ("hang_s", -5.0, "must not be negative"),
        ("error_status", 200, "HTTP error status"),
        ("label", " ", "must not be empty"),
        ("label", "caf\u00e9\n", "printable ASCII"),
        ("models", ("ok", ""), "non-empty strings"),
    ],
)
def test_config_rejects_bad_values(field: str, value: Any, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        SimConfig(**{field: value})


def test_config_defaults_and_coercion() -> None:
    config = SimConfig(models=["a", "b"], tokens_per_s=-1)  # type: ignore[arg-type]
    assert config.models == ("a", "b")
    assert config.fingerprint == "larrylab-sim:simulated"
    assert SimConfig().ttft_ms == 150.0


def test_banner_says_simulated() -> None:
    text = banner(SimConfig(label="demo", error_rate=0.05, seed=3), host="127.0.0.1", port=8500)
    assert "SIMULATED" in text
    assert "'demo'" in text and "larrylab-sim:demo" in text
    assert "http://127.0.0.1:8500" in text
    assert "/v1/chat/completions" in text and "/api/chat" in text
    assert "errors 5.0%" in text and "seed: 3" in text


def test_corpus_has_enough_distinct_replies() -> None:
    assert tuple(PWS_REPLIES) == CATEGORIES
    for category, replies in PWS_REPLIES.items():
        assert len(set(replies)) >= 6, category
        for reply in replies:
            sentences = re.findall(r"[.?!](?:['\"]?)(?=\s|$)", reply)
            assert 2 <= len(sentences) <= 5, reply


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("My idea is an app for dog owners", "problem_clarification"),
        ("Let's look at the trend in remote work", "tta"),
        ("That sounds absurd", "tta"),
        ("What job is the customer hiring it for?", "jtbd"),
        ("Where on the S-curve is VR?", "s_curve"),
        ("Is this market at maturity?", "s_curve"),
        ("Ackoff said what about wisdom?", "ackoff_dikw"),
        ("We have lots of data", "ackoff_dikw"),
        ("Red team this please", "red_team"),
        ("I want to challenge that assumption", "red_team"),
        ("I misunderstood the exercise", "error_recovery"),
        ("Sorry, I'm confused about the data", "error_recovery"),
    ],
)
def test_category_keywords(text: str, category: str) -> None:
    assert category_for(text) == category


def test_tokens_and_prompt_counts() -> None:
    text = "Let's  trend this\nto the absurd."
    assert "".join(split_tokens(text)) == text
    assert len(split_tokens(text)) == 6
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one two"}, {"type": "image_url"}]},
        {"role": "assistant", "content": None},
    ]
    assert prompt_tokens(messages) == 4


def replies(config: SimConfig) -> list[str]:
    with TestClient(create_app(config)) as client:
        out = []
        for question in QUESTIONS:
            body = {"model": "m", "messages": [{"role": "user", "content": question}]}
            response = client.post("/v1/chat/completions", json=body)
            out.append(response.json()["choices"][0]["message"]["content"])
            response = client.post("/api/chat", json={**body, "stream": False})
            out.append(response.json()["message"]["content"])
        return out


def test_same_seed_same_replies() -> None:
    config = SimConfig(seed=42, ttft_ms=0, tokens_per_s=0)
    first = replies(config)
    assert replies(config) == first
    # Fault and timing settings draw from their own generator: replies stay the same.
    assert replies(SimConfig(seed=42, ttft_ms=1, tokens_per_s=0, hang_rate=0.5, hang_s=0)) == first
    assert replies(SimConfig(seed=43, ttft_ms=0, tokens_per_s=0)) != first
    for question, reply in zip(QUESTIONS, first[::2], strict=True):
        assert reply in PWS_REPLIES[category_for(question)]
