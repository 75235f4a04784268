"""The dataset card's Privacy section: what the export scrubbed, how, and what it left as written.

Everything here is read from the export stage's manifest: its counts (`scrubbed_emails`,
`scrubbed_phones`, `scrubbed_urls`, `scrubbed_names` or `names_not_scrubbed_<why>`), its
`scrubbing` entry (the placeholders and what scrubbed names, see
`larrylab.pipeline.scrub.scrubbing_report`) and its `pseudonyms` entry (how thread and user ids
were pseudonymised), so the card states what was done to this data, not what this installation
would do today.
"""

from __future__ import annotations

from typing import Any

from larrylab.pipeline.names import PUBLIC_NAMES, SCRUBBED_NAMES
from larrylab.pipeline.scrub import PLACEHOLDERS

_NOT_SCRUBBED_PREFIX = "names_not_scrubbed_"
_WHY_NOT = {
    "presidio_not_installed": "presidio not installed",
    "no_spacy_model": "presidio installed, but no spaCy model",
    "presidio_failed": "presidio could not load its spaCy model",
}

NEVER_SCRUBBED = (
    "names of companies, organisations, products and places, and postal addresses written "
    "out in words",
    "dates (birthdays included), ages, job titles, employers, health and other facts people "
    "wrote about themselves or others",
    "numbers that do not look like phone numbers: runs of digits without separators (order, "
    "account or ID numbers), and payment card numbers as such (written in groups, part of one "
    "can match the phone pattern)",
    "secrets that are not in a URL (an API key or password pasted as text), user handles "
    "(`@name`), and URLs without credentials or secret-named parameters (kept on purpose: they "
    "are often teaching material)",
    "the generated variations are written by a model from the scrubbed threads and are not "
    "scrubbed again: a name or contact detail the generator invents stays",
)


def _count(counts: dict[str, Any], name: str) -> int:
    value = counts.get(name, 0)
    return int(value) if isinstance(value, int | float) else 0


def identifiers_line(pseudonyms: Any) -> str:
    """What the card says about thread and request ids, from the manifest's `pseudonyms`."""
    requests = (
        "Request ids (`id`, `source_request_ids`) are as stored: they link a record to the "
        "store's request log and are not pseudonymised. User ids are not in the dataset."
    )
    if not isinstance(pseudonyms, dict) or not pseudonyms.get("method"):
        return (
            "- **Identifiers**: thread ids are as stored in the larrylab store (the "
            "`source_thread_id` column; a thread id can be the `user` field the client sent, "
            f"or its `X-Thread-Id`): they are not pseudonymised. {requests}"
        )
    key = str(pseudonyms.get("key") or "not recorded")
    if key == "settings":
        key = "the `LARRYLAB_PSEUDONYM_KEY` setting"
    fields = pseudonyms.get("fields")
    which = "thread ids (`source_thread_id`)"
    if isinstance(fields, list) and fields:
        which = ", ".join(f"`{f}`" for f in fields)
        if "source_request_ids" in fields:
            requests = "User ids are not in the dataset."
    return (
        f"- **Identifiers**: {which} are replaced by keyed {pseudonyms['method']} pseudonyms "
        f"(key: {key}): the same id gets the same pseudonym under one key, and without the key "
        f"a pseudonym cannot be traced back to its id. {requests}"
    )


def names_line(export: dict[str, Any]) -> str:
    """What the card says about person names: scrubbed by what, or NOT scrubbed and why."""
    counts = export.get("counts") or {}
    scrubbing = export.get("scrubbing") or {}
    placeholders = scrubbing.get("placeholders") or {}
    described = scrubbing.get("names")
    scrubbed = "names" in placeholders or (described is None and SCRUBBED_NAMES in counts)
    if scrubbed:
        by = described or "Presidio (which spaCy model is not recorded in the export manifest)"
        kept = ", ".join(PUBLIC_NAMES)
        return (
            f"- **Person names**: replaced by `{PLACEHOLDERS['names']}` where {by} finds a "
            f"PERSON ({_count(counts, SCRUBBED_NAMES)} replaced). The model is statistical: "
            "names it does not recognise (unusual or lower-case names, names in a language "
            f"other than English) stay as written. Kept on purpose: {kept} (the coach and the "
            "authors the PWS tools are named after)."
        )
    why = described
    if why is None:
        reasons = [
            _WHY_NOT.get(k.removeprefix(_NOT_SCRUBBED_PREFIX), k)
            for k in sorted(counts)
            if k.startswith(_NOT_SCRUBBED_PREFIX)
        ]
        why = f"({reasons[0]})" if reasons else "(the export predates name scrubbing)"
    why = str(why).removeprefix("not scrubbed ")
    return (
        f"- **Person names**: **NOT scrubbed** {why}. The names people wrote (their own, their "
        "colleagues', their customers') are in the text as they wrote them."
    )


def privacy_section(export: dict[str, Any] | None) -> str:
    """The card's "Privacy" section for data whose export stage wrote manifest `export`."""
    head = "## Privacy\n"
    if export is None:
        return (
            f"{head}\nThe export stage's manifest was not found next to this dataset, so what was "
            "scrubbed cannot be stated: treat the conversations as not scrubbed and the ids as "
            "stored.\n"
        )
    counts = export.get("counts") or {}
    lines = [
        identifiers_line(export.get("pseudonyms")),
        f"- **E-mail addresses**: replaced by `{PLACEHOLDERS['emails']}` "
        f"({_count(counts, 'scrubbed_emails')} replaced).",
        f"- **Phone numbers**: replaced by `{PLACEHOLDERS['phones']}`: 7 to 15 digits written "
        "with spaces, dots or dashes, or starting with `+` or `(`; dates and decimals are kept "
        f"({_count(counts, 'scrubbed_phones')} replaced).",
        f"- **URLs that carry secrets**: replaced by `{PLACEHOLDERS['urls']}`: a user name or "
        "password in the URL, a query parameter or fragment named like a token, key, signature, "
        "auth, secret, password, session or code, or a path segment of 24 or more random-looking "
        f"letters and digits ({_count(counts, 'scrubbed_urls')} replaced). Other URLs are kept.",
        names_line(export),
    ]
    never = "\n".join(f"- {item}" for item in NEVER_SCRUBBED)
    return (
        f"{head}\nPersonal data was scrubbed when the rated threads were exported, in every "
        "message (system, user and assistant); the counts are the export's.\n\n"
        + "\n".join(lines)
        + f"\n\nNever scrubbed:\n\n{never}\n"
    )
