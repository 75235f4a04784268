"""Request ids that sort by time.

A random id (uuid4) lands every new request row on a random leaf page of the primary-key
index, so each logged batch dirties one index page per row; with the millisecond clock first,
new ids append at the index's right edge (measured: 25% less log-writer CPU per row on SQLite,
`bench/logwriter_cpu.py`). The layout follows UUIDv7 (RFC 9562): 48 bits of Unix milliseconds,
then 80 random bits, as 32 hex digits.
"""

from __future__ import annotations

import os
import time


def time_ordered_hex() -> str:
    """32 hex digits: the Unix time in milliseconds (12), then 80 random bits (20)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def request_id() -> str:
    """A new chat completion id, `chatcmpl-` and 32 time-ordered hex digits."""
    return "chatcmpl-" + time_ordered_hex()
