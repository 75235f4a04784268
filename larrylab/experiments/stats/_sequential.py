"""Always-valid two-sided test via asymptotic confidence sequences.

Follows Waudby-Smith et al., "Time-uniform central limit theory and asymptotic
confidence sequences" (arXiv:2103.06476), as gbstats's ``SequentialTwoSidedTTest``
applies it: the normal-mixture boundary of eq. 9 with the mixing parameter ``rho``
of eq. 161 tuned for ``tuning`` total units, and the p-value as the reciprocal of
the mixture e-value (eq. 155), capped at 1.
"""

from __future__ import annotations

import math

from larrylab.experiments.stats._effect import check_alpha, effect_moments, failed_result
from larrylab.experiments.stats._result import TestResult
from larrylab.experiments.stats._samples import SampleStats


def _rho(alpha: float, tuning: float) -> float:
    """Mixing parameter that makes the boundary tightest at ``tuning`` units (eq. 161)."""
    log_term = -2.0 * math.log(alpha)
    return math.sqrt((log_term + math.log(log_term + 1.0)) / tuning)


def _halfwidth(scaled_variance: float, n: int, rho: float, alpha: float) -> float:
    """Half-width of the two-sided asymptotic confidence sequence (eq. 9).

    Args:
        scaled_variance: Variance of the estimate times ``n`` (per-unit variance).
        n: Total units in both arms.
        rho: Mixing parameter.
        alpha: Significance level.
    """
    spread = n * rho**2 + 1.0
    radius = 2.0 * spread * math.log(math.sqrt(spread) / alpha) / (n * rho) ** 2
    return math.sqrt(scaled_variance * radius)


def _p_value(estimate: float, se: float, n: int, rho: float) -> float:
    """Always-valid p-value ``min(1, 1 / e-value)`` computed in log space (eq. 155)."""
    spread = n * rho**2 + 1.0
    z2 = (estimate / se) ** 2
    log_evalue = rho**2 * n * z2 / (2.0 * spread) - 0.5 * math.log(spread)
    return math.exp(-max(log_evalue, 0.0))


def sequential_ttest(
    control: SampleStats,
    treatment: SampleStats,
    *,
    relative: bool = True,
    alpha: float = 0.05,
    tuning: float = 5000,
) -> TestResult:
    """Two-sided always-valid test: safe to look at after every new unit.

    Args:
        control: Control arm statistics.
        treatment: Treatment arm statistics.
        relative: Test the relative lift ``(t - c) / |c|`` if True, else ``t - c``.
        alpha: Significance level, valid uniformly over all looks.
        tuning: Total units (both arms) at which the interval is tightest
            (gbstats's ``sequential_tuning_parameter``).

    Returns:
        The test result with ``df=None`` (the boundary is asymptotically normal);
        ``error`` is set under the same conditions as :func:`ttest`.

    Raises:
        ValueError: If ``alpha`` is not in (0, 1) or ``tuning`` is not positive.
    """
    check_alpha(alpha)
    if not tuning > 0:
        raise ValueError(f"tuning must be positive, got {tuning}")
    moments = effect_moments(control, treatment, relative)
    if moments.error is not None:
        return failed_result(control, treatment, moments.error)
    n = control.n + treatment.n
    rho = _rho(alpha, tuning)
    halfwidth = _halfwidth(moments.se**2 * n, n, rho, alpha)
    return TestResult(
        effect=moments.estimate,
        ci_low=moments.estimate - halfwidth,
        ci_high=moments.estimate + halfwidth,
        se=moments.se,
        p_value=_p_value(moments.estimate, moments.se, n, rho),
        df=None,
        control_mean=control.mean,
        treatment_mean=treatment.mean,
    )
