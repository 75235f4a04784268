"""The held-out PWS eval set: hand-written workshop moments with the rubric a reply must meet.

The set lives in `data/pws_eval_v1.jsonl`, one item per line. It is frozen: its content hash is
pinned in `EVAL_SET_SHA256`, and `load_eval_items()` refuses a file whose hash differs, so a
changed file must come with a new `EVAL_SET_VERSION` and a new pinned hash. The hash is taken
over the parsed items (not the bytes), so reformatting the file does not change it.

The data pipeline reads the same items to keep them out of training data (decontamination).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from larrylab.evals._checks import CHECK_NAMES
from larrylab.pws import CATEGORIES

EVAL_SET_VERSION = "pws_eval_v1"
EVAL_SET_SHA256 = "14b4f762b5ee5b003c6b827efce506534c148aeaf6bb56f26c1846c3cb7eb431"
MIN_ITEMS_PER_CATEGORY = 15
_DATA_FILE = "pws_eval_v1.jsonl"
_ROLES = frozenset({"system", "user", "assistant"})


class EvalSetError(ValueError):
    """An eval set file that cannot be used; the message names the line and the problem."""


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One workshop moment: the conversation so far and what the ideal reply must meet.

    Attributes:
        id: Stable identifier, unique in the set (e.g. `pc-01`).
        category: One of `CATEGORIES`; each category is one inspect task.
        messages: The conversation as `{role, content}` dicts, ending with the learner's
            latest (user) message; it may start with a system message.
        rubric: Criteria the judge scores from 1 to 5.
        checks: Names of the deterministic checks that hold for an ideal reply.
    """

    id: str
    category: str
    messages: list[dict[str, str]]
    rubric: list[str]
    checks: list[str]

    def as_dict(self) -> dict[str, Any]:
        """The item as it is stored, one JSON object."""
        return {
            "id": self.id,
            "category": self.category,
            "messages": [dict(m) for m in self.messages],
            "rubric": list(self.rubric),
            "checks": list(self.checks),
        }


def default_path() -> Path:
    """The eval set file shipped with larrylab."""
    return Path(str(resources.files("larrylab.evals") / "data" / _DATA_FILE))


def _strings(value: Any, where: str, field: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise EvalSetError(f"{where}: {field!r} must be a non-empty list of strings")
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise EvalSetError(f"{where}: {field!r} must contain only non-empty strings")
    return list(value)


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise EvalSetError(f"{where}: 'messages' must be a non-empty list")
    out: list[dict[str, str]] = []
    for i, m in enumerate(value):
        if (
            not isinstance(m, dict)
            or set(m) != {"role", "content"}
            or m["role"] not in _ROLES
            or not isinstance(m["content"], str)
            or not m["content"].strip()
        ):
            raise EvalSetError(
                f"{where}: messages[{i}] must be {{role, content}} with role system, user "
                "or assistant and non-empty text"
            )
        if m["role"] == "system" and i != 0:
            raise EvalSetError(f"{where}: only the first message may be a system message")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user":
        raise EvalSetError(f"{where}: the last message must be the learner's (role user)")
    return out


def parse_item(record: Any, where: str) -> EvalItem:
    """Validate one decoded JSON line; raise EvalSetError naming `where` if it is invalid."""
    if not isinstance(record, dict):
        raise EvalSetError(f"{where}: each line must be a JSON object")
    expected = {"id", "category", "messages", "rubric", "checks"}
    if set(record) != expected:
        raise EvalSetError(f"{where}: fields must be exactly {sorted(expected)}")
    item_id, category = record["id"], record["category"]
    if not isinstance(item_id, str) or not item_id.strip():
        raise EvalSetError(f"{where}: 'id' must be a non-empty string")
    if category not in CATEGORIES:
        raise EvalSetError(f"{where}: unknown category {category!r}; use one of {CATEGORIES}")
    checks = record["checks"]
    if not isinstance(checks, list) or any(c not in CHECK_NAMES for c in checks):
        raise EvalSetError(f"{where}: 'checks' must list names from {sorted(CHECK_NAMES)}")
    return EvalItem(
        id=item_id,
        category=category,
        messages=_messages(record["messages"], where),
        rubric=_strings(record["rubric"], where, "rubric"),
        checks=list(checks),
    )


def read_items(path: Path) -> list[EvalItem]:
    """Read and validate an eval set file (any version; the hash is not checked)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise EvalSetError(f"{path}: cannot read eval set: {exc.strerror or exc}") from exc
    items: list[EvalItem] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{where}: not valid JSON: {exc.msg}") from None
        item = parse_item(record, where)
        if item.id in seen:
            raise EvalSetError(f"{where}: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    counts = Counter(i.category for i in items)
    short = [c for c in CATEGORIES if counts[c] < MIN_ITEMS_PER_CATEGORY]
    if short:
        raise EvalSetError(
            f"{path.name}: categories {short} have fewer than {MIN_ITEMS_PER_CATEGORY} items"
        )
    return items


def items_hash(items: list[EvalItem]) -> str:
    """sha256 of the items' canonical JSON (sorted keys, no whitespace, in file order)."""
    canonical = json.dumps(
        [i.as_dict() for i in items], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def load_eval_items() -> list[EvalItem]:
    """The frozen eval set, validated; EvalSetError if the file no longer matches its hash."""
    items = read_items(default_path())
    digest = items_hash(items)
    if digest != EVAL_SET_SHA256:
        raise EvalSetError(
            f"eval set {EVAL_SET_VERSION} changed (sha256 {digest}, pinned {EVAL_SET_SHA256}): "
            "a changed eval set needs a new EVAL_SET_VERSION and pinned hash"
        )
    return items


def eval_set_hash() -> str:
    """The content hash of the frozen eval set (what results and gate decisions record)."""
    return items_hash(load_eval_items())


def items_by_category(items: list[EvalItem]) -> dict[str, list[EvalItem]]:
    """The items grouped by category, in `CATEGORIES` order and file order within each."""
    return {c: [i for i in items if i.category == c] for c in CATEGORIES}
