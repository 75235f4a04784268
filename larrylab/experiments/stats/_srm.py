"""Sample-ratio-mismatch check: does the observed split match the configured one?"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats as scipy_stats


def _validate(observed: Sequence[int], weights: Sequence[float]) -> None:
    if len(observed) != len(weights):
        raise ValueError(f"{len(observed)} observed counts but {len(weights)} weights")
    if len(observed) < 2:
        raise ValueError("an SRM check needs at least two arms")
    if any(o < 0 for o in observed):
        raise ValueError("observed counts must be non-negative")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError("weights must be finite and non-negative")
    if sum(weights) <= 0:
        raise ValueError("at least one weight must be positive")


def srm_pvalue(observed: Sequence[int], weights: Sequence[float]) -> float:
    """P-value of Pearson's chi-squared goodness-of-fit test of the traffic split.

    Weights need not sum to 1; they are normalised. A small p-value (conventionally
    below 0.001) signals a sample ratio mismatch, i.e. broken assignment or logging.
    Arms with weight 0 are left out of the test (as gbstats's ``check_srm`` does),
    and the degrees of freedom are the number of arms with positive weight minus 1.

    Args:
        observed: Units observed in each arm.
        weights: Configured traffic weight of each arm, in the same order.

    Returns:
        The p-value; 1.0 when no units were observed or only one arm has weight,
        and 0.0 when an arm with weight 0 received units.

    Raises:
        ValueError: If the lengths differ, there are fewer than two arms, or a count
            or weight is negative or all weights are 0.
    """
    _validate(observed, weights)
    total = sum(observed)
    if total == 0:
        return 1.0
    if any(o > 0 and w == 0 for o, w in zip(observed, weights, strict=True)):
        return 0.0
    # Scaled by the largest weight first, so weights near the float limit cannot overflow.
    largest = max(weights)
    shares = [w / largest for w in weights]
    total_share = math.fsum(shares)
    arms = [(o, s / total_share * total) for o, s in zip(observed, shares, strict=True) if s > 0]
    if len(arms) < 2:
        return 1.0
    statistic = math.fsum((o - e) ** 2 / e for o, e in arms)
    return float(scipy_stats.chi2.sf(statistic, len(arms) - 1))
