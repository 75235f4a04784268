"""Larry's bots (Chainlit chat profiles) and the PWS category each one coaches.

A thread imported from a bot with a category is exported with that category; a bot without one
(a general or unknown bot) leaves the category to the export's classifier. Bot names are
compared loosely: case, spaces, hyphens and underscores do not matter (`S-Curve` is `scurve`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from larrylab.pws import CATEGORIES

DEFAULT_BOT_CATEGORIES: Mapping[str, str] = MappingProxyType(
    {
        "lawrence": "problem_clarification",
        "larry": "problem_clarification",
        "larry_playground": "problem_clarification",
        "tta": "tta",
        "jtbd": "jtbd",
        "scurve": "s_curve",
        "ackoff": "ackoff_dikw",
        "redteam": "red_team",
    }
)
"""Bot -> PWS category. Larry's other bots (bono, knowns, domain, investment, scenario,
validation, beautiful_question) have none: the classifier decides."""

_SEPARATORS = re.compile(r"[\s_\-]+")


class BotMapError(ValueError):
    """A bot map file that cannot be read or names an unknown category."""


def bot_key(bot: str) -> str:
    """The form a bot name is looked up by: lower case, without spaces, hyphens or
    underscores."""
    return _SEPARATORS.sub("", bot.strip().lower())


@dataclass(frozen=True)
class BotMap:
    """Which PWS category each bot's threads belong to (None: the classifier decides).

    Attributes:
        categories: Bot key (`bot_key`) -> category, or None for a bot without one.
    """

    categories: Mapping[str, str | None] = field(
        default_factory=lambda: {bot_key(b): c for b, c in DEFAULT_BOT_CATEGORIES.items()}
    )

    def category(self, bot: str | None) -> str | None:
        """The category of `bot`'s threads; None for no bot, an unknown bot or one without."""
        if not bot:
            return None
        return self.categories.get(bot_key(bot))


def _check(mapping: Any, path: Path) -> dict[str, str | None]:
    if not isinstance(mapping, dict):
        raise BotMapError(f"bot map {path}: expected a mapping of bot name to PWS category")
    out: dict[str, str | None] = {}
    known = ", ".join(CATEGORIES)
    for bot, category in mapping.items():
        if not isinstance(bot, str) or not bot_key(bot):
            raise BotMapError(f"bot map {path}: {bot!r} is not a bot name")
        if category is not None and category not in CATEGORIES:
            raise BotMapError(
                f"bot map {path}: bot {bot!r} maps to {category!r}, which is not a PWS "
                f"category (use one of {known}, or null for none)"
            )
        out[bot_key(bot)] = category
    return out


def load_bot_map(path: Path | None) -> BotMap:
    """The default bot map, overridden and extended by the YAML or JSON mapping in `path`
    (bot -> category, null for none). Raises BotMapError for an unreadable file or an unknown
    category."""
    base = BotMap()
    if path is None:
        return base
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise BotMapError(f"cannot read the bot map {path}: {reason}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BotMapError(f"bot map {path} is not valid YAML or JSON: {first}") from exc
    return BotMap({**base.categories, **_check(data, path)})
