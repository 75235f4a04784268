"""A/A simulation: peeking every 100 observations inflates the fixed-horizon test's false
positives, while the sequential (always-valid) test stays at or under alpha."""

from __future__ import annotations

import numpy as np

from larrylab.experiments.stats import SampleStats, sequential_ttest, ttest

EXPERIMENTS = 2000
PEEK_EVERY = 100
PEEKS = 10
ALPHA = 0.05


def _false_positive_rates() -> tuple[float, float]:
    rng = np.random.default_rng(20261124)
    n = PEEK_EVERY * PEEKS
    # Two identical arms per experiment (A/A): a 1-5-star-like score, mean 4, sd 1.
    data = rng.normal(4.0, 1.0, size=(2, EXPERIMENTS, n))
    sums = np.cumsum(data, axis=2)[:, :, PEEK_EVERY - 1 :: PEEK_EVERY]
    squares = np.cumsum(data**2, axis=2)[:, :, PEEK_EVERY - 1 :: PEEK_EVERY]
    fixed_hits = seq_hits = 0
    for e in range(EXPERIMENTS):
        fixed = seq = False
        for k in range(PEEKS):
            count = PEEK_EVERY * (k + 1)
            c = SampleStats(count, float(sums[0, e, k]), float(squares[0, e, k]))
            t = SampleStats(count, float(sums[1, e, k]), float(squares[1, e, k]))
            fixed = fixed or ttest(c, t, alpha=ALPHA).p_value < ALPHA
            seq = seq or sequential_ttest(c, t, alpha=ALPHA).p_value < ALPHA
        fixed_hits += fixed
        seq_hits += seq
    return fixed_hits / EXPERIMENTS, seq_hits / EXPERIMENTS


def test_sequential_test_keeps_false_positives_under_alpha_when_peeking() -> None:
    fixed_rate, sequential_rate = _false_positive_rates()
    assert sequential_rate <= ALPHA
    # Ten looks at a fixed-horizon test: well above alpha (about 0.19 in theory).
    assert fixed_rate > 2 * ALPHA
