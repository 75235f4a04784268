"""Tests for the fixed-horizon Welch t-test.

Expected numbers marked "gbstats" are pinned in GrowthBook's own test suite,
growthbook/growthbook ``packages/stats/tests/frequentist/test_tests.py``
(``TestTwoSidedTTest`` and the one-sided classes), for the same sufficient statistics.
"""

import json
import math

import pytest
from scipy import stats as scipy_stats

from larrylab.experiments.stats import (
    ERROR_NOT_ENOUGH_DATA,
    ERROR_ZERO_BASELINE,
    ERROR_ZERO_VARIANCE,
    SampleStats,
    TestResult,
    ttest,
)

CONTROL = SampleStats(n=3407, sum=1396.87, sum_squares=52377.9767)
TREATMENT = SampleStats(n=3461, sum=2422.7, sum_squares=134698.29)
CONTROL_3000 = SampleStats(n=3000, sum=1396.87, sum_squares=52377.9767)


def bernoulli_equivalent(n: int, successes: int) -> SampleStats:
    """Statistics whose sample variance equals p(1 - p), gbstats's ProportionStatistic."""
    p = successes / n
    return SampleStats(n=n, sum=successes, sum_squares=successes**2 / n + (n - 1) * p * (1 - p))


def assert_result(
    result: TestResult, effect: float, ci: tuple[float, float], se: float, p: float
) -> None:
    assert result.error is None
    assert result.effect == pytest.approx(effect, abs=1e-5)
    assert result.ci_low == pytest.approx(ci[0], abs=1e-5)
    assert result.ci_high == pytest.approx(ci[1], abs=1e-5)
    assert result.se == pytest.approx(se, abs=1e-5)
    assert result.p_value == pytest.approx(p, abs=1e-5)


def test_relative_matches_gbstats() -> None:
    # gbstats: TestTwoSidedTTest.test_two_sided_ttest
    result = ttest(CONTROL, TREATMENT)
    assert_result(result, 0.70732, (-0.03526, 1.44989), 0.37879, 0.06191)
    assert result.control_mean == pytest.approx(0.41)
    assert result.treatment_mean == pytest.approx(0.7)


def test_absolute_matches_gbstats() -> None:
    # gbstats: TestTwoSidedTTest.test_two_sided_ttest_absolute
    result = ttest(CONTROL, TREATMENT, relative=False)
    assert_result(result, 0.29, (0.04538, 0.53462), 0.12478, 0.02016)


def test_proportions_match_gbstats() -> None:
    # gbstats: TestTwoSidedTTest.test_two_sided_ttest_binom (ProportionStatistic 14/28 vs
    # 16/30, whose variance is p(1 - p); see bernoulli_equivalent).
    result = ttest(bernoulli_equivalent(28, 14), bernoulli_equivalent(30, 16))
    assert_result(result, 0.06667, (-0.47767, 0.61101), 0.2717, 0.80707)


def test_conversions_use_sample_variance() -> None:
    # gbstats SampleMeanStatistic(sum=14, sum_squares=14, n=28) vs (16, 16, 30), computed
    # with gbstats at commit 8f1db445: the n - 1 variance widens the interval slightly.
    control = SampleStats.from_conversions(28, 14)
    treatment = SampleStats.from_conversions(30, 16)
    assert_result(ttest(control, treatment), 0.06667, (-0.48736, 0.62069), 0.27653, 0.81038)


@pytest.mark.parametrize(
    ("relative", "effect", "ci", "se", "p_one_sided_greater"),
    [
        # gbstats: TestOneSidedGreaterTTest / TestOneSidedLesserTTest; a two-sided 90%
        # interval is the intersection of the two one-sided 95% intervals.
        (True, 0.50336, (-0.045136675850396046, 1.0518588475628676), 0.33341, 0.06558262868),
        (False, 0.23437667, (0.020791480063255735, 0.44796185327007765), 0.12983, 0.03554272490),
    ],
)
def test_two_sided_at_alpha_10_matches_gbstats_one_sided_bounds(
    relative: bool, effect: float, ci: tuple[float, float], se: float, p_one_sided_greater: float
) -> None:
    result = ttest(CONTROL_3000, TREATMENT, relative=relative, alpha=0.1)
    assert_result(result, effect, ci, se, 2 * p_one_sided_greater)


def test_absolute_matches_scipy_welch() -> None:
    control = [3.1, 2.4, 5.0, 4.2, 3.3, 2.9, 4.4]
    treatment = [4.0, 5.1, 3.9, 6.2, 5.5, 4.8, 5.0, 6.1, 4.4]
    result = ttest(
        SampleStats.from_values(control), SampleStats.from_values(treatment), relative=False
    )
    reference = scipy_stats.ttest_ind(treatment, control, equal_var=False)
    assert result.p_value == pytest.approx(reference.pvalue, abs=1e-10)
    assert result.effect / result.se == pytest.approx(reference.statistic, abs=1e-10)
    assert result.df == pytest.approx(reference.df, abs=1e-10)
    ci = reference.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-10)


def test_welch_satterthwaite_df_pinned() -> None:
    assert ttest(CONTROL, TREATMENT).df == pytest.approx(5841.742032, abs=1e-5)


def test_relative_lift_over_negative_baseline_keeps_direction() -> None:
    control = SampleStats.from_values([-2.0, -3.0, -1.0, -2.5])
    treatment = SampleStats.from_values([-1.0, -1.5, -0.5, -1.0])
    result = ttest(control, treatment)
    assert result.effect == pytest.approx((-1.0 - -2.125) / 2.125)
    assert result.effect > 0


def test_tiny_p_values_do_not_underflow_to_zero() -> None:
    control = SampleStats.from_conversions(100_000, 10_000)
    treatment = SampleStats.from_conversions(100_000, 12_000)
    p_value = ttest(control, treatment).p_value
    assert 0.0 < p_value < 1e-30


@pytest.mark.parametrize(
    ("control", "treatment", "relative", "error"),
    [
        (SampleStats(1, 1.0, 1.0), TREATMENT, True, ERROR_NOT_ENOUGH_DATA),
        (CONTROL, SampleStats(0, 0.0, 0.0), False, ERROR_NOT_ENOUGH_DATA),
        # gbstats: TestTwoSidedTTest.test_two_sided_ttest_missing_variance
        (SampleStats(2, 1396.87, 52377.9767), TREATMENT, True, ERROR_ZERO_VARIANCE),
        (SampleStats.from_conversions(50, 50), TREATMENT, False, ERROR_ZERO_VARIANCE),
        (CONTROL, SampleStats.from_values([2.0, 2.0, 2.0]), True, ERROR_ZERO_VARIANCE),
        (SampleStats.from_values([-1.0, 1.0, 0.0]), TREATMENT, True, ERROR_ZERO_BASELINE),
    ],
)
def test_errors_give_gbstats_default_output(
    control: SampleStats, treatment: SampleStats, relative: bool, error: str
) -> None:
    result = ttest(control, treatment, relative=relative)
    assert result.error == error
    assert (result.effect, result.ci_low, result.ci_high, result.se) == (0.0, 0.0, 0.0, 0.0)
    assert result.p_value == 1.0
    assert result.df is None
    assert result.control_mean == control.mean


def test_absolute_effect_allows_zero_control_mean() -> None:
    control = SampleStats.from_values([-1.0, 1.0, 0.0, 0.5, -0.5])
    treatment = SampleStats.from_values([1.0, 2.0, 0.5, 1.5, 1.0])
    result = ttest(control, treatment, relative=False)
    assert result.error is None
    assert result.effect == pytest.approx(1.2)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_rejects_invalid_alpha(alpha: float) -> None:
    with pytest.raises(ValueError):
        ttest(CONTROL, TREATMENT, alpha=alpha)


def test_to_dict_is_json_serialisable() -> None:
    payload = ttest(CONTROL, TREATMENT).to_dict()
    assert set(payload) == {
        "effect",
        "ci_low",
        "ci_high",
        "se",
        "p_value",
        "df",
        "control_mean",
        "treatment_mean",
        "error",
    }
    decoded = json.loads(json.dumps(payload, allow_nan=False))
    assert decoded["p_value"] == pytest.approx(0.06191, abs=1e-5)
    assert all(math.isfinite(v) for v in decoded.values() if isinstance(v, float))
