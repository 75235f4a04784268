"""The request log: each router's journal of finished requests, the indexer that stores it,
transcripts, per-arm rollups, and the spill kept while the database is down."""

from larrylab.requestlog._indexer import ProcessLogWriter
from larrylab.requestlog._rollup import (
    ERRORS,
    FALLBACKS,
    HIGH,
    LATENCY,
    RATED,
    REQUESTS,
    SCORE,
    THREADS,
    TTFT,
    apply_totals,
    rating_totals,
    read_buckets,
    read_rollup,
)
from larrylab.requestlog._sketch import bucket_value, percentiles
from larrylab.requestlog._spill import Quarantine, SpillDir
from larrylab.requestlog._store import is_data_error, reason
from larrylab.requestlog._transcripts import without_nul
from larrylab.requestlog._writer import Attribution, LogWriter, RequestRecord, WriterBase

__all__ = [
    "ERRORS",
    "FALLBACKS",
    "HIGH",
    "LATENCY",
    "RATED",
    "REQUESTS",
    "SCORE",
    "THREADS",
    "TTFT",
    "Attribution",
    "LogWriter",
    "ProcessLogWriter",
    "Quarantine",
    "RequestRecord",
    "SpillDir",
    "WriterBase",
    "apply_totals",
    "bucket_value",
    "is_data_error",
    "percentiles",
    "rating_totals",
    "read_buckets",
    "read_rollup",
    "reason",
    "without_nul",
]
