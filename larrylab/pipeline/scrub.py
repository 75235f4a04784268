"""Personal data scrubbing: e-mail addresses, phone numbers, URLs that carry secrets, names.

Scrubbed values are replaced by placeholders (`[EMAIL]`, `[PHONE]`, `[URL]`, `[NAME]`) so a
conversation keeps its shape. Plain URLs without credentials are kept: they are often teaching
material. Person names are scrubbed only where Presidio and a spaCy model are installed
(`larrylab.pipeline.names`); otherwise the tally says that names were not scrubbed, and why.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from larrylab.pipeline.manifest import Tally
from larrylab.pipeline.names import NAME_PLACEHOLDER, NameScrubbing, name_scrubbing

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_URL = re.compile(r"\bhttps?://[^\s<>\"')\]]+", re.IGNORECASE)
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d[\d\s.-]{5,16}\d(?!\w)"
)
_SECRET_KEYS = re.compile(
    r"token|key|sig|signature|auth|secret|password|passwd|pwd|session|sid|code|credential",
    re.IGNORECASE,
)
_SECRET_SEGMENT = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_-]{24,}$")
_DATE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")
_DECIMAL = re.compile(r"^\d+\.\d+$")
_MIN_PHONE_DIGITS = 7
_MAX_PHONE_DIGITS = 15
PLACEHOLDERS = {
    "emails": "[EMAIL]",
    "phones": "[PHONE]",
    "urls": "[URL]",
    "names": NAME_PLACEHOLDER,
}


def _url_has_secret(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return True
    if parts.username or parts.password:
        return True
    for key, _ in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_KEYS.search(key):
            return True
    if parts.fragment and _SECRET_KEYS.search(parts.fragment):
        return True
    return any(_SECRET_SEGMENT.match(seg) for seg in parts.path.split("/"))


def _looks_like_phone(text: str) -> bool:
    digits = sum(ch.isdigit() for ch in text)
    if not _MIN_PHONE_DIGITS <= digits <= _MAX_PHONE_DIGITS:
        return False
    if text.startswith(("+", "(")):
        return True
    if _DATE.match(text) or _DECIMAL.match(text):
        return False
    # A bare run of digits is more often an amount or an id than a phone number.
    return any(ch in text for ch in " .-")


def _merged(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        elif start < stop:
            out.append((start, stop))
    return out


def _replace_names(text: str, names: NameScrubbing, tally: Tally | None) -> str:
    if names.detector is None:
        if tally is not None:
            tally.add(names.counter)
        return text
    if tally is not None:
        tally.add(names.counter, 0)
    for start, stop in reversed(_merged(names.detector(text))):
        if text[start:stop] in PLACEHOLDERS.values():
            continue
        text = text[:start] + NAME_PLACEHOLDER + text[stop:]
        if tally is not None:
            tally.add(names.counter)
    return text


def scrub_text(text: str, tally: Tally | None = None, names: NameScrubbing | None = None) -> str:
    """`text` with personal data replaced by placeholders; counts go to `tally`.

    `names` decides how person names are found (default: this installation's Presidio, see
    `larrylab.pipeline.names.name_scrubbing`).
    """

    def url(match: re.Match[str]) -> str:
        if _url_has_secret(match.group(0)):
            if tally is not None:
                tally.add("scrubbed_urls")
            return PLACEHOLDERS["urls"]
        return match.group(0)

    def email(match: re.Match[str]) -> str:
        if tally is not None:
            tally.add("scrubbed_emails")
        return PLACEHOLDERS["emails"]

    def phone(match: re.Match[str]) -> str:
        value = match.group(0)
        if not _looks_like_phone(value):
            return value
        if tally is not None:
            tally.add("scrubbed_phones")
        return PLACEHOLDERS["phones"]

    text = _URL.sub(url, text)
    text = _EMAIL.sub(email, text)
    text = _PHONE.sub(phone, text)
    return _replace_names(text, names or name_scrubbing(), tally)


def scrub_messages(
    messages: Sequence[dict[str, Any]],
    tally: Tally | None = None,
    names: NameScrubbing | None = None,
) -> list[dict[str, Any]]:
    """Copies of `messages` with their text content scrubbed (see `scrub_text`)."""
    names = names or name_scrubbing()
    out: list[dict[str, Any]] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            message = {**message, "content": scrub_text(content, tally, names)}
        elif isinstance(content, list):
            parts = [
                {**p, "text": scrub_text(p["text"], tally, names)}
                if isinstance(p, dict) and isinstance(p.get("text"), str)
                else p
                for p in content
            ]
            message = {**message, "content": parts}
        out.append(message)
    return out


def scrubbing_report(names: NameScrubbing | None = None) -> dict[str, Any]:
    """What `scrub_messages` replaces, with which placeholders, and what finds names.

    For a stage's manifest (`scrubbing`): the dataset card reads it back.
    """
    names = names or name_scrubbing()
    kinds = ("emails", "phones", "urls", "names") if names.active else ("emails", "phones", "urls")
    return {"placeholders": {k: PLACEHOLDERS[k] for k in kinds}, "names": names.description}
