"""Filter step 3, decontamination: drop anything sharing a 13-gram with the held-out eval set.

Texts are compared as lower-case word sequences over their user and assistant messages
(system prompts are left out on both sides: Larry's system prompt is in every conversation).
An eval item shorter than 13 words contaminates a text that contains it whole.
The eval set comes from a JSONL file (`messages` plus optional `id` and `category` per line)
or, by default, from the evals package's held-out set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from larrylab.pipeline.dedup import words
from larrylab.pipeline.records import json_sha256

DEFAULT_NGRAM = 13
MIN_PHRASE_WORDS = 6


class EvalSetError(ValueError):
    """An eval-set file that cannot be read; the message says which line and why."""


@dataclass(frozen=True)
class EvalItem:
    """One held-out eval example: its id, category and messages."""

    id: str
    messages: tuple[tuple[str, str], ...]
    category: str | None = None

    def text(self) -> str:
        """The user and assistant text of the item."""
        return "\n".join(content for role, content in self.messages if role != "system")


def _messages(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str):
        return (("user", value),)
    if not isinstance(value, list) or not value:
        raise EvalSetError(f"{where}: 'messages' must be a non-empty list of messages")
    out: list[tuple[str, str]] = []
    for i, message in enumerate(value):
        role, content = _field(message, "role"), _field(message, "content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise EvalSetError(f"{where}: message {i} needs a string 'role' and 'content'")
        out.append((role, content))
    return tuple(out)


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def eval_item(obj: Any, index: int, where: str) -> EvalItem:
    """An EvalItem from a JSON object, or an object with `messages` (or `input`) attributes."""
    raw = _field(obj, "messages") or _field(obj, "input")
    if raw is None:
        raise EvalSetError(f"{where}: the item has no 'messages'")
    messages = _messages(raw, where)
    target = _field(obj, "target")
    if isinstance(target, str) and target:
        messages = (*messages, ("assistant", target))
    item_id, category = _field(obj, "id"), _field(obj, "category")
    return EvalItem(
        id=str(item_id) if item_id is not None else f"item-{index}",
        messages=messages,
        category=str(category) if category is not None else None,
    )


def load_eval_file(path: Path) -> list[EvalItem]:
    """The items of a JSONL eval-set file."""
    if not path.is_file():
        raise EvalSetError(f"eval set {path} does not exist")
    items: list[EvalItem] = []
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise EvalSetError(f"{where}: not valid JSON") from None
            if not isinstance(data, dict):
                raise EvalSetError(f"{where}: each line must be a JSON object")
            items.append(eval_item(data, number, where))
    return items


def default_eval_items() -> tuple[list[EvalItem], str | None]:
    """The evals package's held-out set, or none with a warning when it is not available."""
    try:
        from larrylab.evals.evalset import load_eval_items
    except ImportError:
        return [], "the evals package is not available: no decontamination against a held-out set"
    try:
        raw = load_eval_items()
    except ValueError as exc:
        raise EvalSetError(f"the held-out eval set cannot be used: {exc}") from None
    return [eval_item(obj, i, f"held-out item {i}") for i, obj in enumerate(raw)], None


def eval_set_hash(items: Sequence[EvalItem]) -> str:
    """A hash of the eval items' content (it changes when the set changes)."""
    return json_sha256([[i.id, list(map(list, i.messages))] for i in items])


def ngrams(tokens: Sequence[str], n: int) -> Iterable[str]:
    """The word n-grams of `tokens` (none when there are fewer than `n` tokens)."""
    return (" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


class Decontaminator:
    """Knows the eval set's n-grams and tells which eval item a text overlaps.

    An item shorter than `n` words has no n-gram; it contaminates a text that contains all
    of its words in order, when it has at least `MIN_PHRASE_WORDS` of them (shorter items
    are counted in `short_items` and cannot be checked).
    """

    def __init__(self, items: Sequence[EvalItem], n: int = DEFAULT_NGRAM) -> None:
        if n < 1:
            raise ValueError(f"the n-gram length must be at least 1, got {n}")
        self.n = n
        self._owner: dict[str, str] = {}
        self._phrases: dict[int, dict[str, str]] = {}
        self.short_items = 0
        for item in items:
            tokens = words(item.text())
            if len(tokens) >= n:
                for gram in ngrams(tokens, n):
                    self._owner.setdefault(gram, item.id)
            elif len(tokens) >= MIN_PHRASE_WORDS:
                self._phrases.setdefault(len(tokens), {}).setdefault(" ".join(tokens), item.id)
            else:
                self.short_items += 1

    def check(self, text: str) -> str | None:
        """Why `text` is contaminated (the eval item it overlaps), or None."""
        if not self._owner and not self._phrases:
            return None
        tokens = words(text)
        for gram in ngrams(tokens, self.n):
            owner = self._owner.get(gram)
            if owner is not None:
                return f"shares a {self.n}-gram with eval item {owner}: {gram!r}"
        for length, phrases in self._phrases.items():
            for gram in ngrams(tokens, length):
                owner = phrases.get(gram)
                if owner is not None:
                    return f"contains all of eval item {owner}: {gram!r}"
        return None
