"""Tests for the always-valid sequential test.

Expected numbers marked "gbstats" are pinned in GrowthBook's own test suite,
growthbook/growthbook ``packages/stats/tests/frequentist/test_tests.py``
(``TestSequentialTTest``); those marked "gbstats 8f1db445" were computed with
gbstats's ``SequentialTwoSidedTTest`` at that commit for the same statistics.
"""

import pytest

from larrylab.experiments.stats import (
    ERROR_ZERO_BASELINE,
    ERROR_ZERO_VARIANCE,
    SampleStats,
    TestResult,
    sequential_ttest,
    ttest,
)

CONTROL = SampleStats(n=3000, sum=1396.87, sum_squares=52377.9767)
TREATMENT = SampleStats(n=3461, sum=2422.7, sum_squares=134698.29)


def bernoulli_equivalent(n: int, successes: int) -> SampleStats:
    """Statistics whose sample variance equals p(1 - p), gbstats's ProportionStatistic."""
    p = successes / n
    return SampleStats(n=n, sum=successes, sum_squares=successes**2 / n + (n - 1) * p * (1 - p))


def assert_result(
    result: TestResult, effect: float, ci: tuple[float, float], se: float, p: float
) -> None:
    assert result.error is None
    assert result.df is None
    assert result.effect == pytest.approx(effect, abs=1e-5)
    assert result.ci_low == pytest.approx(ci[0], abs=1e-5)
    assert result.ci_high == pytest.approx(ci[1], abs=1e-5)
    assert result.se == pytest.approx(se, abs=1e-5)
    assert result.p_value == pytest.approx(p, abs=1e-5)


def test_relative_matches_gbstats() -> None:
    # gbstats: TestSequentialTTest.test_sequential_test_runs
    result = sequential_ttest(CONTROL, TREATMENT, tuning=1000)
    assert_result(result, 0.50336, (-0.55844, 1.56516), 0.33341, 1.0)


def test_proportions_match_gbstats() -> None:
    # gbstats: TestSequentialTTest.test_sequential_test_runs_prop (default tuning 5000)
    result = sequential_ttest(bernoulli_equivalent(3000, 1396), bernoulli_equivalent(3461, 2422))
    assert_result(result, 0.50386, (0.40098, 0.60675), 0.03386, 0.0)


@pytest.mark.parametrize(
    ("control", "tuning", "ci", "p"),
    [
        # gbstats 8f1db445, absolute difference
        (CONTROL, 5000, (-0.16011653, 0.62886986), 0.76012501),
        (
            SampleStats(n=3407, sum=1396.87, sum_squares=52377.9767),
            5000,
            (-0.08941, 0.66941),
            0.29074,
        ),
        (CONTROL, 1000, (-0.17908918, 0.64784251), 1.0),
    ],
)
def test_absolute_matches_gbstats(
    control: SampleStats, tuning: float, ci: tuple[float, float], p: float
) -> None:
    result = sequential_ttest(control, TREATMENT, relative=False, tuning=tuning)
    effect = TREATMENT.mean - control.mean
    assert_result(result, effect, ci, ttest(control, TREATMENT, relative=False).se, p)


def test_relative_default_tuning_matches_gbstats() -> None:
    # gbstats 8f1db445
    result = sequential_ttest(CONTROL, TREATMENT)
    assert_result(result, 0.50336, (-0.50972, 1.51644), 0.33341, 1.0)


def test_tuning_near_sample_size_gives_tightest_interval() -> None:
    # Mirrors gbstats's test_sequential_test_tuning_as_expected (n = 6461 in total).
    def width(tuning: float) -> float:
        result = sequential_ttest(CONTROL, TREATMENT, tuning=tuning)
        return result.ci_high - result.ci_low

    assert width(6461) < width(10_000) < width(10)


def test_sequential_interval_is_wider_than_fixed_horizon() -> None:
    fixed = ttest(CONTROL, TREATMENT)
    sequential = sequential_ttest(CONTROL, TREATMENT)
    assert sequential.ci_low < fixed.ci_low
    assert sequential.ci_high > fixed.ci_high
    assert sequential.p_value >= fixed.p_value


@pytest.mark.parametrize("conversions", [1500, 1560, 1580, 1600, 1650])
def test_p_value_and_interval_agree_at_alpha(conversions: int) -> None:
    control = SampleStats.from_conversions(10_000, 1500)
    treatment = SampleStats.from_conversions(10_000, conversions)
    result = sequential_ttest(control, treatment, relative=False)
    excludes_zero = result.ci_low > 0 or result.ci_high < 0
    assert (result.p_value < 0.05) == excludes_zero


def test_huge_effect_gives_zero_p_value_without_overflow() -> None:
    control = SampleStats.from_conversions(1_000_000, 100_000)
    treatment = SampleStats.from_conversions(1_000_000, 200_000)
    assert sequential_ttest(control, treatment).p_value == 0.0


def test_errors_are_reported_not_raised() -> None:
    constant = SampleStats.from_values([1.0, 1.0, 1.0])
    assert sequential_ttest(constant, TREATMENT).error == ERROR_ZERO_VARIANCE
    centred = SampleStats.from_values([-1.0, 1.0])
    result = sequential_ttest(centred, TREATMENT)
    assert result.error == ERROR_ZERO_BASELINE
    assert (result.effect, result.p_value, result.df) == (0.0, 1.0, None)


@pytest.mark.parametrize(("alpha", "tuning"), [(0.0, 5000), (1.0, 5000), (0.05, 0), (0.05, -1)])
def test_rejects_invalid_settings(alpha: float, tuning: float) -> None:
    with pytest.raises(ValueError):
        sequential_ttest(CONTROL, TREATMENT, alpha=alpha, tuning=tuning)
