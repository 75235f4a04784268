"""Filter step 1, rules: well-formed messages, alternating roles, sane lengths, the language.

Each rule returns the reason a record fails it, or None. Rules are cheap and run before the
deduplication, decontamination and the (paid) judge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from larrylab.pipeline.records import Record

ROLES = ("system", "user", "assistant")
_LATIN_END = 0x250  # Basic Latin through Latin Extended-B


@dataclass(frozen=True)
class RuleOptions:
    """Bounds the rules check.

    Attributes:
        min_chars: Shortest user message, in characters.
        min_reply_chars: Shortest assistant message, in characters.
        max_chars: Longest single message.
        max_total_chars: Longest conversation (all messages).
        max_turns: Most user/assistant pairs.
        min_latin_share: Least share of letters in Latin script (the data set is English).
    """

    min_chars: int = 2
    min_reply_chars: int = 20
    max_chars: int = 8000
    max_total_chars: int = 40_000
    max_turns: int = 40
    min_latin_share: float = 0.9

    def __post_init__(self) -> None:
        if self.min_chars < 0 or self.min_reply_chars < 0:
            raise ValueError("minimum message lengths must not be negative")
        if self.max_chars < max(self.min_chars, self.min_reply_chars):
            raise ValueError("max_chars must be at least the minimum message lengths")
        if not 0 <= self.min_latin_share <= 1:
            raise ValueError(f"min_latin_share must be between 0 and 1, got {self.min_latin_share}")


def check_schema(rec: Record, opts: RuleOptions) -> str | None:
    """Messages are objects with a known role and text content."""
    if not isinstance(rec.messages, list) or not rec.messages:
        return "schema: no messages"
    for i, message in enumerate(rec.messages):
        if not isinstance(message, dict):
            return f"schema: message {i} is not an object"
        if message.get("role") not in ROLES:
            return f"schema: message {i} has role {message.get('role')!r}"
        if not isinstance(message.get("content"), str):
            return f"schema: message {i} has no text content"
    return None


def check_roles(rec: Record, opts: RuleOptions) -> str | None:
    """An optional system prompt, then user and assistant alternating, ending with the assistant."""
    roles = [m["role"] for m in rec.messages]
    if roles and roles[0] == "system":
        roles = roles[1:]
    if "system" in roles:
        return "roles: a system message after the start"
    if not roles:
        return "roles: no user or assistant message"
    for i, role in enumerate(roles):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            return f"roles: message {i} is {role!r} where {expected!r} should be"
    if roles[-1] != "assistant":
        return "roles: the conversation does not end with the assistant"
    return None


def check_lengths(rec: Record, opts: RuleOptions) -> str | None:
    """Message and conversation lengths within bounds."""
    total = 0
    turns = 0
    for i, message in enumerate(rec.messages):
        size = len(message["content"].strip())
        total += size
        if message["role"] == "user":
            turns += 1
            if size < opts.min_chars:
                return f"length: user message {i} is shorter than {opts.min_chars} characters"
        if message["role"] == "assistant" and size < opts.min_reply_chars:
            return f"length: reply {i} is shorter than {opts.min_reply_chars} characters"
        if size > opts.max_chars:
            return f"length: message {i} is longer than {opts.max_chars} characters"
    if total > opts.max_total_chars:
        return f"length: conversation is longer than {opts.max_total_chars} characters"
    if turns > opts.max_turns:
        return f"length: more than {opts.max_turns} turns"
    return None


def latin_share(text: str) -> float:
    """Share of the letters in `text` that are Latin script (1.0 for text without letters)."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 1.0
    return sum(1 for ch in letters if ord(ch) < _LATIN_END) / len(letters)


def check_language(rec: Record, opts: RuleOptions) -> str | None:
    """Mostly Latin-script letters (the training set is English)."""
    text = rec.text()
    if not any(ch.isalpha() for ch in text):
        return "language: no words"
    share = latin_share(text)
    if share < opts.min_latin_share:
        return f"language: only {share:.0%} of the letters are Latin script"
    return None


RULES: tuple[Callable[[Record, RuleOptions], str | None], ...] = (
    check_schema,
    check_roles,
    check_lengths,
    check_language,
)


def check_rules(rec: Record, opts: RuleOptions) -> str | None:
    """The first rule `rec` fails, as a reason, or None if it passes them all."""
    for rule in RULES:
        reason = rule(rec, opts)
        if reason is not None:
            return reason
    return None
