"""Latency percentiles from log-spaced bucket counts, with a bounded relative error.

A value v > 0 falls in bucket i = ceil(log(v) / log(gamma)), gamma = (1 + a) / (1 - a): every
value of bucket i lies in (gamma^(i-1), gamma^i], and the bucket's value 2 gamma^i / (gamma + 1)
is within a relative error `a` of each of them (the logarithmic mapping of DDSketch, Masson et
al., VLDB 2019). The store keeps counts per (experiment, arm, metric, bucket) as rows arrive
(`rollup`), so p50/p95/p99 and latency histograms read a few hundred counts at a thousand
requests and at a million, and logging a request updates no index ordered by latency.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate

RELATIVE_ACCURACY = 0.01
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
# Values at or under this (milliseconds; 0 included) share one bucket, whose value is 0.
ZERO_LIMIT = 1e-6
ZERO_BUCKET = math.floor(math.log(ZERO_LIMIT) / _LOG_GAMMA) - 1

Counts = Sequence[tuple[int, int]]
"""(bucket, count) pairs in bucket order."""


def bucket(value: float) -> int:
    """The bucket of one value."""
    if value <= ZERO_LIMIT:
        return ZERO_BUCKET
    return math.ceil(math.log(value) / _LOG_GAMMA)


def bucket_value(index: int) -> float:
    """The value a bucket stands for: within `RELATIVE_ACCURACY` of every value in it."""
    if index <= ZERO_BUCKET:
        return 0.0
    return 2 * _GAMMA**index / (_GAMMA + 1)


def percentiles(counts: Iterable[tuple[int, int]], ps: Sequence[float]) -> list[float] | None:
    """Percentiles `ps` (0-1) of the values counted in (bucket, n) pairs, interpolated between
    order statistics as PostgreSQL's `percentile_cont` does; None when nothing is counted."""
    ordered = sorted((b, n) for b, n in counts if n > 0)
    cumulative = list(accumulate(n for _, n in ordered))
    if not cumulative:
        return None
    total = cumulative[-1]

    def order_statistic(k: int) -> float:
        """The k-th smallest value (0-based): the value of the first bucket counting past k."""
        return bucket_value(ordered[bisect_right(cumulative, k)][0])

    out = []
    for p in ps:
        pos = p * (total - 1)
        k = math.floor(pos)
        low, high = order_statistic(k), order_statistic(min(k + 1, total - 1))
        out.append(low + (high - low) * (pos - k))
    return out
