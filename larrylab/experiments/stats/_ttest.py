"""Fixed-horizon two-sided Welch t-test (gbstats ``TwoSidedTTest``)."""

from __future__ import annotations

from scipy import stats as scipy_stats

from larrylab.experiments.stats._effect import check_alpha, effect_moments, failed_result, welch_df
from larrylab.experiments.stats._result import TestResult
from larrylab.experiments.stats._samples import SampleStats


def ttest(
    control: SampleStats,
    treatment: SampleStats,
    *,
    relative: bool = True,
    alpha: float = 0.05,
) -> TestResult:
    """Two-sided Welch t-test of treatment against control.

    The statistic ``effect / se`` is referred to a Student t distribution with
    Welch-Satterthwaite degrees of freedom, both for the p-value and for the
    confidence interval, also when the effect is relative (delta-method ``se``).

    Args:
        control: Control arm statistics.
        treatment: Treatment arm statistics.
        relative: Test the relative lift ``(t - c) / |c|`` if True, else ``t - c``.
        alpha: Significance level; the interval has coverage ``1 - alpha``.

    Returns:
        The test result; ``error`` is set (and nothing raised) when an arm has fewer
        than 2 units or zero variance, or when ``relative`` and the control mean is 0.

    Raises:
        ValueError: If ``alpha`` is not in (0, 1).
    """
    check_alpha(alpha)
    moments = effect_moments(control, treatment, relative)
    if moments.error is not None:
        return failed_result(control, treatment, moments.error)
    df = welch_df(control, treatment)
    t_stat = moments.estimate / moments.se
    p_value = 2.0 * float(scipy_stats.t.sf(abs(t_stat), df))
    halfwidth = float(scipy_stats.t.ppf(1.0 - alpha / 2.0, df)) * moments.se
    return TestResult(
        effect=moments.estimate,
        ci_low=moments.estimate - halfwidth,
        ci_high=moments.estimate + halfwidth,
        se=moments.se,
        p_value=min(p_value, 1.0),
        df=df,
        control_mean=control.mean,
        treatment_mean=treatment.mean,
    )
