"""Multiple-comparison correction across metrics or treatment arms."""

from __future__ import annotations

import math
from collections.abc import Sequence


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (controls the family-wise error rate).

    The ``i``-th smallest of ``m`` p-values is multiplied by ``m - i`` (``i`` from 0),
    adjusted values are made non-decreasing in that order and capped at 1. Rejecting
    every hypothesis whose adjusted p-value is at most ``alpha`` is Holm's procedure.

    Args:
        p_values: Raw p-values, each in [0, 1].

    Returns:
        Adjusted p-values in the same order as ``p_values``.

    Raises:
        ValueError: If a p-value is NaN or outside [0, 1].
    """
    if any(math.isnan(p) or not 0.0 <= p <= 1.0 for p in p_values):
        raise ValueError("p-values must be in [0, 1]")
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running_max = 0.0
    for rank, index in enumerate(order):
        running_max = max(running_max, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running_max
    return adjusted
