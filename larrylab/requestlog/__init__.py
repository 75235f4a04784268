"""The request log: each router's journal of finished requests (`RequestJournal`), the
indexer process that stores it, transcripts, the ratings kept while the database is down, and
the quarantine of rows it refused; how it works is in docs/resilience.md. The per-arm counters
it adds to are in `larrylab.rollups`."""

from larrylab.requestlog._journal import Attribution, RequestJournal
from larrylab.requestlog._spill import Quarantine, SpillDir
from larrylab.requestlog._store import RequestRecord, is_data_error, reason
from larrylab.requestlog._transcripts import MESSAGE_COLUMNS, chain, without_nul

__all__ = [
    "MESSAGE_COLUMNS",
    "Attribution",
    "Quarantine",
    "RequestJournal",
    "RequestRecord",
    "SpillDir",
    "chain",
    "is_data_error",
    "reason",
    "without_nul",
]
