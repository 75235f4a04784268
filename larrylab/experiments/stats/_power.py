"""Sample size planning for a two-arm test."""

from __future__ import annotations

import math

from scipy import stats as scipy_stats

from larrylab.experiments.stats._samples import SampleStats

# Guards ``ceil`` against values like 63.000000000001 produced by rounding.
_CEIL_SLACK = 1e-9


def sample_size_per_arm(
    control: SampleStats,
    *,
    mde: float,
    relative: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int:
    """Units per arm needed to detect an effect of size ``mde``.

    Uses the normal approximation to the two-sided Welch test with equal arms and
    both arms assumed to share the control's variance (the textbook formula)::

        n = 2 * variance * (z[1 - alpha/2] + z[power])**2 / delta**2

    where ``delta = mde * |control mean|`` if ``relative`` else ``mde``.

    Args:
        control: Historical or pilot statistics of the control arm.
        mde: Minimum detectable effect: a relative lift (0.05 for +5%) if
            ``relative``, else an absolute difference. Its sign is ignored.
        relative: Whether ``mde`` is relative to the control mean.
        alpha: Two-sided significance level.
        power: Probability of detecting an effect of size ``mde``.

    Returns:
        The number of units needed in each arm (at least 2).

    Raises:
        ValueError: If ``mde`` is 0 or not finite, ``alpha`` or ``power`` is not in
            (0, 1), the control has fewer than 2 units or zero variance, or
            ``relative`` and the control mean is 0.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    if mde == 0 or not math.isfinite(mde):
        raise ValueError(f"mde must be finite and non-zero, got {mde}")
    if control.n < 2 or control.variance <= 0:
        raise ValueError("control needs at least 2 units and positive variance")
    if relative and control.mean == 0:
        raise ValueError("a relative mde needs a non-zero control mean")
    delta = abs(mde) * abs(control.mean) if relative else abs(mde)
    z_total = float(scipy_stats.norm.ppf(1.0 - alpha / 2.0) + scipy_stats.norm.ppf(power))
    n = 2.0 * control.variance * (z_total / delta) ** 2
    return max(2, math.ceil(n - _CEIL_SLACK))
