"""Pseudonyms for the thread and user ids the pipeline writes: a keyed hash (HMAC-SHA256).

The same id gets the same pseudonym under the same key, so a dataset's split by source thread
and its lineage work across runs, while the store's ids never reach the run folder. The key is
the `pseudonym_key` setting (`LARRYLAB_PSEUDONYM_KEY`); without one, a random key is created
once in the run folder (`<out>/.pseudonym-key`, readable by its owner only) and reused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METHOD = "HMAC-SHA256"
PREFIX = "t-"
KEY_FILE = ".pseudonym-key"


class PseudonymKeyError(ValueError):
    """The run folder's pseudonym key cannot be read or created."""


@dataclass(frozen=True)
class Pseudonymizer:
    """Turns identifiers into pseudonyms under one key.

    Attributes:
        key: The HMAC key (never written to a manifest).
        origin: Where the key comes from: "settings", or "generated in <path>".
    """

    key: bytes
    origin: str

    def __call__(self, identifier: str) -> str:
        """The pseudonym of `identifier`: `t-` and the hex HMAC-SHA256 of its UTF-8 bytes."""
        digest = hmac.new(self.key, identifier.encode("utf-8"), hashlib.sha256).hexdigest()
        return PREFIX + digest

    @property
    def key_id(self) -> str:
        """A short name of the key (a hash of it), so that a stage reruns when its key
        changes; it reveals nothing of the key."""
        return hmac.new(self.key, b"larrylab pseudonym key id", hashlib.sha256).hexdigest()[:16]

    def manifest(self) -> dict[str, Any]:
        """How the pseudonyms were made, as a manifest says it (never the key)."""
        return {"method": METHOD, "key": self.origin}


def _read_or_create(path: Path) -> str:
    """The key text in `path`, created (random, mode 0600) if the file does not exist."""
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    text = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text + "\n")
    return text


def pseudonymizer(out: Path, configured: str = "") -> Pseudonymizer:
    """The pseudonymizer of a run folder: the `configured` key (the setting) if given, else the
    key kept in `out/.pseudonym-key` (created on first use). Raises PseudonymKeyError if that
    file cannot be read or created, or holds no key."""
    if configured:
        return Pseudonymizer(configured.encode("utf-8"), "settings")
    path = out / KEY_FILE
    try:
        text = _read_or_create(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise PseudonymKeyError(f"cannot read or create the pseudonym key {path}: {exc}") from exc
    if not text:
        raise PseudonymKeyError(
            f"the pseudonym key file {path} is empty: delete it to have a new key made, or set "
            "LARRYLAB_PSEUDONYM_KEY"
        )
    return Pseudonymizer(text.encode("utf-8"), f"generated in {path}")
