"""Latency buckets: each value's bucket stands for it within the sketch's relative accuracy, and
percentiles read from bucket counts are within it of the exact ones."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from larrylab.rollups import _sketch as sketch


def test_latency_buckets_bound_the_relative_error() -> None:
    rng = random.Random(3)
    values = [0.0, 1e-9, 0.004, 1.0, 999.9, 1e6] + [rng.lognormvariate(5, 2) for _ in range(2000)]
    for v in values:
        got = sketch.bucket_value(sketch.bucket(v))
        if v <= sketch.ZERO_LIMIT:
            assert got == 0.0
        else:
            assert abs(got - v) <= sketch.RELATIVE_ACCURACY * v, v
    counts = Counter(sketch.bucket(v) for v in values)
    got = sketch.percentiles(counts.items(), [0.0, 0.5, 0.95, 0.99, 1.0])
    assert got is not None
    exact = np.percentile(values, [0, 50, 95, 99, 100])
    assert got == pytest.approx(list(exact), rel=sketch.RELATIVE_ACCURACY)
    assert sketch.percentiles([], [0.5]) is None
    assert sketch.percentiles([(sketch.bucket(7.0), 1)], [0.5, 0.99]) == pytest.approx(
        [7.0] * 2, rel=0.01
    )
