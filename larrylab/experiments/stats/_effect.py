"""Point estimate and standard error of a treatment effect (shared by the tests)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from larrylab.experiments.stats._result import (
    ERROR_NOT_ENOUGH_DATA,
    ERROR_ZERO_BASELINE,
    ERROR_ZERO_VARIANCE,
    TestResult,
)
from larrylab.experiments.stats._samples import SampleStats


@dataclass(frozen=True)
class EffectMoments:
    """Estimate of the effect and its standard error, or why there is none.

    Attributes:
        estimate: Relative lift or absolute difference.
        se: Standard error of ``estimate``.
        error: Why the effect cannot be estimated, or None.
    """

    estimate: float
    se: float
    error: str | None = None


def check_alpha(alpha: float) -> None:
    """Raise ValueError unless ``0 < alpha < 1``."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def effect_moments(control: SampleStats, treatment: SampleStats, relative: bool) -> EffectMoments:
    """Estimate the effect of treatment over control and its standard error.

    The relative variance is the delta-method variance of ``mean_t / mean_c``
    (independent arms), as in gbstats's ``frequentist_variance``.

    Args:
        control: Control arm statistics.
        treatment: Treatment arm statistics.
        relative: Relative lift if True, absolute difference otherwise.

    Returns:
        The moments, or moments with ``error`` set when they are undefined.
    """
    if control.n < 2 or treatment.n < 2:
        return EffectMoments(0.0, 0.0, ERROR_NOT_ENOUGH_DATA)
    if control.variance <= 0 or treatment.variance <= 0:
        return EffectMoments(0.0, 0.0, ERROR_ZERO_VARIANCE)
    mean_c, mean_t = control.mean, treatment.mean
    var_mean_c = control.variance / control.n
    var_mean_t = treatment.variance / treatment.n
    if not relative:
        return EffectMoments(mean_t - mean_c, math.sqrt(var_mean_t + var_mean_c))
    if mean_c == 0:
        return EffectMoments(0.0, 0.0, ERROR_ZERO_BASELINE)
    variance = var_mean_t / mean_c**2 + var_mean_c * mean_t**2 / mean_c**4
    return EffectMoments((mean_t - mean_c) / abs(mean_c), math.sqrt(variance))


def welch_df(control: SampleStats, treatment: SampleStats) -> float:
    """Welch-Satterthwaite degrees of freedom (both arms need ``n >= 2``)."""
    v_c = control.variance / control.n
    v_t = treatment.variance / treatment.n
    return (v_c + v_t) ** 2 / (v_c**2 / (control.n - 1) + v_t**2 / (treatment.n - 1))


def failed_result(control: SampleStats, treatment: SampleStats, error: str) -> TestResult:
    """The uninformative result returned instead of raising (gbstats's default output)."""
    return TestResult(
        effect=0.0,
        ci_low=0.0,
        ci_high=0.0,
        se=0.0,
        p_value=1.0,
        df=None,
        control_mean=control.mean,
        treatment_mean=treatment.mean,
        error=error,
    )
