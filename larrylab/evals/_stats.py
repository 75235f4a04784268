"""Means with standard errors and t-based 95% confidence intervals, plain and paired."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class Interval:
    """A mean, its standard error and a two-sided confidence interval.

    Attributes:
        n: Number of values.
        mean: Their mean (0 when there are none).
        stderr: Standard error of the mean (sample SD / sqrt(n)); 0 with fewer than 2 values.
        ci_low: Lower bound of the t interval (the lowest possible value with fewer than 2).
        ci_high: Upper bound of the t interval (the highest possible value with fewer than 2).
    """

    n: int
    mean: float
    stderr: float
    ci_low: float
    ci_high: float


def mean_interval(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Interval:
    """The mean of `values` with its standard error and a Student-t confidence interval.

    The interval is clipped to `bounds`, the range the values can take (scores lie in [0, 1]),
    since with few samples the t interval can reach past what any mean could be.
    """
    n = len(values)
    low, high = bounds
    if n == 0:
        return Interval(0, 0.0, 0.0, low, high)
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(n, mean, 0.0, low, high)  # one value says nothing about the spread
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    se = math.sqrt(var / n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    return Interval(n, mean, se, max(low, mean - half), min(high, mean + half))


def paired_interval(
    candidate: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE
) -> Interval:
    """The interval of the mean paired difference `candidate - baseline` (paired t).

    Both sides are scores in [0, 1], so the differences lie in [-1, 1].
    """
    if len(candidate) != len(baseline):
        raise ValueError("paired samples must have the same length")
    diffs = [c - b for c, b in zip(candidate, baseline, strict=True)]
    return mean_interval(diffs, confidence, bounds=(-1.0, 1.0))
