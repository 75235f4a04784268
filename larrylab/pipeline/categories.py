"""PWS training-data categories, the seed plan's quotas, and a keyword classifier.

The quotas are the seed plan's "examples needed" per category; generation steers toward the
categories furthest from theirs. The keyword classifier is the deterministic fallback when no
classifier model is used (or the model's answer cannot be had).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from larrylab.pws import CATEGORIES

LABELS: Mapping[str, str] = MappingProxyType(
    {
        "problem_clarification": "Problem Clarification",
        "tta": "TTA Extrapolations",
        "jtbd": "JTBD Discovery",
        "s_curve": "S-Curve Analysis",
        "ackoff_dikw": "Ackoff DIKW Validation",
        "red_team": "Red Team Challenges",
        "error_recovery": "Error Recovery",
    }
)

DESCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "problem_clarification": "sharpening a vague idea into a problem worth solving",
        "tta": "Trending to the Absurd: extrapolating a trend to its extreme",
        "jtbd": "Jobs to Be Done: the job a customer hires a product to do",
        "s_curve": "placing a technology or market on its S-curve",
        "ackoff_dikw": "Ackoff's data, information, knowledge, wisdom hierarchy",
        "red_team": "challenging the learner's assumptions and plans",
        "error_recovery": "correcting a learner's misunderstanding of the methodology",
    }
)

QUOTAS: Mapping[str, int] = MappingProxyType(
    {
        "problem_clarification": 500,
        "tta": 200,
        "jtbd": 200,
        "s_curve": 200,
        "ackoff_dikw": 300,
        "red_team": 200,
        "error_recovery": 100,
    }
)

DEFAULT_CATEGORY = "problem_clarification"

# Checked in order: the first category whose pattern matches wins.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (category, re.compile(pattern, re.IGNORECASE))
    for category, pattern in (
        (
            "error_recovery",
            r"\bconfus|\bgot it wrong\b|\bmisunderst|\bdon'?t (?:understand|follow)\b|"
            r"\bmistake|\bcorrect me\b",
        ),
        ("red_team", r"\bred[- ]?team|\bchallenge|\battack my\b|\bdevil'?s advocate"),
        ("tta", r"\btrend|\babsurd|\btta\b|\bextrapolat|\bextreme\b"),
        ("jtbd", r"\bjobs? to be done\b|\bjtbd\b|\bjob\b|\bhir(?:e|ed|es|ing)\b"),
        ("s_curve", r"\bs[- ]?curve|\bmaturity\b|\bmatured?\b|\badoption curve\b"),
        ("ackoff_dikw", r"\bdikw\b|\backoff|\bwisdom\b|\bknowledge\b|\binformation\b|\bdata\b"),
    )
)


class QuotaError(ValueError):
    """A quota override that names an unknown category or a bad number."""


def keyword_category(messages: Sequence[dict[str, Any]]) -> str:
    """The category of a conversation by keywords in its user messages, first message first."""
    texts = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    for text in texts:
        for category, pattern in _PATTERNS:
            if pattern.search(text):
                return category
    return DEFAULT_CATEGORY


def parse_quotas(overrides: Sequence[str]) -> dict[str, int]:
    """The seed quotas with `CATEGORY=N` overrides applied."""
    quotas = dict(QUOTAS)
    for item in overrides:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in quotas:
            known = ", ".join(CATEGORIES)
            raise QuotaError(
                f"quota {item!r} must look like CATEGORY=N with CATEGORY one of {known}"
            )
        try:
            number = int(value)
        except ValueError:
            raise QuotaError(f"quota {item!r}: {value!r} is not a whole number") from None
        if number < 0:
            raise QuotaError(f"quota {item!r} must not be negative")
        quotas[name] = number
    return quotas
