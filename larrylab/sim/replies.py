"""Choosing a coach reply for a conversation, and the simulator's notion of a token."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from larrylab.sim.corpus import PWS_REPLIES

# Checked in order: the first category whose pattern matches the latest user message wins.
_CATEGORY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (category, re.compile(pattern, re.IGNORECASE))
    for category, pattern in (
        (
            "error_recovery",
            r"\bconfus|\bwrong\b|\bmisunderst|\bdon'?t (?:understand|get)\b|\bmistake",
        ),
        ("red_team", r"\bred[- ]?team|\bchallenge|\bassum|\bdevil'?s advocate"),
        ("tta", r"\btrend|\babsurd|\btta\b|\bextrapolat"),
        ("jtbd", r"\bjobs?\b|\bjtbd\b|\bhir(?:e|ed|es|ing)\b"),
        ("s_curve", r"\bs[- ]?curve|\bmaturity\b|\bmature\b"),
        ("ackoff_dikw", r"\bdata\b|\binformation\b|\bknowledge\b|\bwisdom\b|\bdikw\b|\backoff"),
    )
)
DEFAULT_CATEGORY = "problem_clarification"

_TOKEN = re.compile(r"\s*\S+")


def category_for(text: str) -> str:
    """The PWS category a user message asks about, by keywords; problem clarification if none."""
    for category, pattern in _CATEGORY_PATTERNS:
        if pattern.search(text):
            return category
    return DEFAULT_CATEGORY


def pick_reply(text: str, rng: random.Random) -> tuple[str, str]:
    """A `(category, reply)` for the latest user message `text`, drawn with `rng`."""
    category = category_for(text)
    return category, rng.choice(PWS_REPLIES[category])


def content_text(content: Any) -> str:
    """The text of a message's `content`: a string, a list of parts, or nothing."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def latest_user_text(messages: Sequence[dict[str, Any]]) -> str:
    """The text of the last `user` message (empty if there is none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """Whitespace word count of all message texts: the simulator's prompt token count."""
    return sum(len(content_text(m.get("content")).split()) for m in messages)


def split_tokens(text: str) -> list[str]:
    """Split `text` into word tokens that keep their leading whitespace (they join back)."""
    return _TOKEN.findall(text)
