"""The request log: each router's journal of finished requests (`RequestJournal`), the
indexer process that stores it, transcripts, per-arm rollups, the ratings kept while the
database is down, and the quarantine of rows it refused."""

from larrylab.requestlog._journal import Attribution, RequestJournal
from larrylab.requestlog._rollup import (
    ERRORS,
    FALLBACKS,
    HIGH,
    INELIGIBLE,
    LATENCY,
    RATED,
    REQUESTS,
    SCORE,
    THREADS,
    THUMBS_UP,
    TTFT,
    Rating,
    apply_totals,
    ineligible_metric,
    rating_totals,
    read_buckets,
    read_rollup,
)
from larrylab.requestlog._sketch import bucket_value, percentiles
from larrylab.requestlog._spill import Quarantine, SpillDir
from larrylab.requestlog._store import RequestRecord, is_data_error, reason
from larrylab.requestlog._transcripts import without_nul

__all__ = [
    "ERRORS",
    "FALLBACKS",
    "HIGH",
    "INELIGIBLE",
    "LATENCY",
    "RATED",
    "REQUESTS",
    "SCORE",
    "THREADS",
    "THUMBS_UP",
    "TTFT",
    "Attribution",
    "Quarantine",
    "Rating",
    "RequestJournal",
    "RequestRecord",
    "SpillDir",
    "apply_totals",
    "bucket_value",
    "ineligible_metric",
    "is_data_error",
    "percentiles",
    "rating_totals",
    "read_buckets",
    "read_rollup",
    "reason",
    "without_nul",
]
