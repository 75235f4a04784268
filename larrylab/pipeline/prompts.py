"""The pipeline's prompts and the JSON schemas of the answers they ask for.

Each prompt's version is a short hash of its text and schema, so changing either changes the
version recorded in the manifests, the request cache keys and the stage fingerprints: an old
answer is never reused for a new prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from larrylab.pipeline.categories import CATEGORIES, DESCRIPTIONS, LABELS
from larrylab.pipeline.records import json_sha256

STRATEGIES: Mapping[str, str] = MappingProxyType(
    {
        "other_industry": "Address a similar problem from a different industry.",
        "other_persona": "Use the same methodology with a different user persona.",
        "objection": "Handle a common objection or confusion point.",
        "recovery": "Show recovery from a misunderstanding.",
        "advanced": "Demonstrate advanced application of the methodology.",
    }
)

CRITERIA: Mapping[str, str] = MappingProxyType(
    {
        "pws_accuracy": "PWS methodology accuracy",
        "pedagogical_value": "Pedagogical value",
        "realistic_user": "Realistic user behavior",
        "larry_voice": "Larry voice consistency",
    }
)

CLASSIFY_SYSTEM = (
    "You sort workshop conversations of Larry, a coach who teaches the Problems Worth Solving "
    "(PWS) methodology, into the methodology topic they practise."
)
CLASSIFY_PROMPT = """Which PWS category does this conversation practise? Categories:
{categories}

Conversation:
{conversation}

Answer with the category id and a one-sentence reason."""

GENERATE_SYSTEM = (
    "You write training conversations for Larry, a Socratic coach who teaches the Problems "
    "Worth Solving (PWS) methodology. Larry asks before he tells, never jumps to solutions, "
    "and holds learners to the methodology's rigor."
)
GENERATE_PROMPT = """Given this successful PWS workshop conversation ({category}):
{conversation}

Generate 5 variations that:
1. Address similar problems from different industries (other_industry)
2. Use the same methodology with different user personas (other_persona)
3. Handle common objections or confusion points (objection)
4. Show recovery from misunderstandings (recovery)
5. Demonstrate advanced methodology application (advanced)

Each variation should maintain Larry's teaching style and PWS rigor. Each is a conversation of
2 to 6 turns; a turn is what the learner says and Larry's reply. Describe each variation's
setting (industry and persona) in one line.{steering}"""

JUDGE_SYSTEM = (
    "You are a strict reviewer of training data for Larry, a coach who teaches the Problems "
    "Worth Solving (PWS) methodology."
)
JUDGE_PROMPT = """Rate this training example (1-5) on:
- PWS methodology accuracy (pws_accuracy)
- Pedagogical value (pedagogical_value)
- Realistic user behavior (realistic_user)
- Larry voice consistency (larry_voice)

Give each criterion a score from 1 (poor) to 5 (excellent) and a short rationale.

Category: {category}
Example:
{conversation}"""


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


CLASSIFY_SCHEMA: dict[str, Any] = _object(
    {
        "category": {"type": "string", "enum": list(CATEGORIES)},
        "reason": {"type": "string", "maxLength": 300},
    }
)

_TURN = _object(
    {
        "user": {"type": "string", "minLength": 20, "maxLength": 2000},
        "assistant": {"type": "string", "minLength": 40, "maxLength": 4000},
    }
)
_VARIATION = _object(
    {
        "setting": {"type": "string", "minLength": 3, "maxLength": 200},
        "turns": {"type": "array", "items": _TURN, "minItems": 2, "maxItems": 6},
    }
)
GENERATE_SCHEMA: dict[str, Any] = _object({name: _VARIATION for name in STRATEGIES})

_CRITERION = _object(
    {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "rationale": {"type": "string", "minLength": 1, "maxLength": 400},
    }
)
JUDGE_SCHEMA: dict[str, Any] = _object({name: _CRITERION for name in CRITERIA})


def _version(name: str, *parts: Any) -> str:
    return f"{name}-v1-{json_sha256(list(parts))[:10]}"


PROMPT_VERSIONS: Mapping[str, str] = MappingProxyType(
    {
        "classify": _version("classify", CLASSIFY_SYSTEM, CLASSIFY_PROMPT, CLASSIFY_SCHEMA),
        "generate": _version("generate", GENERATE_SYSTEM, GENERATE_PROMPT, GENERATE_SCHEMA),
        "judge": _version("judge", JUDGE_SYSTEM, JUDGE_PROMPT, JUDGE_SCHEMA),
    }
)


def render_conversation(messages: Sequence[dict[str, Any]], *, max_chars: int = 12_000) -> str:
    """The conversation as `Role: text` lines (system prompt left out), cut to `max_chars`."""
    lines = [
        f"{'Learner' if m.get('role') == 'user' else 'Larry'}: {m.get('content') or ''}"
        for m in messages
        if m.get("role") in ("user", "assistant")
    ]
    text = "\n".join(lines)
    return text if len(text) <= max_chars else text[:max_chars] + "\n[...]"


def classify_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The classifier prompt for one conversation."""
    categories = "\n".join(f"- {c}: {LABELS[c]}, {DESCRIPTIONS[c]}" for c in CATEGORIES)
    user = CLASSIFY_PROMPT.format(
        categories=categories, conversation=render_conversation(messages, max_chars=4000)
    )
    return [{"role": "system", "content": CLASSIFY_SYSTEM}, {"role": "user", "content": user}]


def generate_messages(
    messages: Sequence[dict[str, Any]], category: str, *, round_index: int
) -> list[dict[str, str]]:
    """The variation prompt for one conversation; later rounds ask for fresh settings."""
    steering = ""
    if round_index > 0:
        steering = (
            f"\n\nThis is round {round_index + 1}: choose industries and personas unlike the "
            "obvious first choices."
        )
    user = GENERATE_PROMPT.format(
        category=LABELS[category], conversation=render_conversation(messages), steering=steering
    )
    return [{"role": "system", "content": GENERATE_SYSTEM}, {"role": "user", "content": user}]


def judge_messages(messages: Sequence[dict[str, Any]], category: str) -> list[dict[str, str]]:
    """The judge prompt for one training example."""
    user = JUDGE_PROMPT.format(
        category=LABELS.get(category, category), conversation=render_conversation(messages)
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]
