"""Tests for sample size planning."""

import pytest

from larrylab.experiments.stats import SampleStats, sample_size_per_arm

Z_975 = 1.959963984540054
Z_80 = 0.8416212335729143


def stats_with(mean: float, variance: float, n: int = 1001) -> SampleStats:
    return SampleStats(n=n, sum=n * mean, sum_squares=(n - 1) * variance + n * mean**2)


def test_textbook_value_for_half_a_standard_deviation() -> None:
    # n = 2 * (1.96 + 0.8416)**2 / 0.5**2 = 62.79 -> 63 per arm (two-sided z-test).
    assert sample_size_per_arm(stats_with(10.0, 1.0), mde=0.5, relative=False) == 63


def test_relative_mde_scales_by_the_control_mean() -> None:
    control = stats_with(10.0, 1.0)
    assert sample_size_per_arm(control, mde=0.05) == 63
    assert sample_size_per_arm(control, mde=-0.05) == 63


def test_conversion_rate_example() -> None:
    # p = 10%, +10% relative lift: n = 2 * var * (z_975 + z_80)**2 / 0.01**2
    control = SampleStats.from_conversions(100_000, 10_000)
    expected = 2 * control.variance * (Z_975 + Z_80) ** 2 / 0.01**2
    assert expected == pytest.approx(14128.12, abs=0.01)
    assert sample_size_per_arm(control, mde=0.1) == 14129


def test_pinned_other_alpha_and_power() -> None:
    # n = 2 * (2.5758 + 1.2816)**2 / 0.5**2 = 119.03 -> 120
    control = stats_with(10.0, 1.0)
    assert sample_size_per_arm(control, mde=0.5, relative=False, alpha=0.01, power=0.9) == 120


def test_sample_size_grows_with_variance_power_and_smaller_effects() -> None:
    base = sample_size_per_arm(stats_with(10.0, 4.0), mde=0.05)
    assert sample_size_per_arm(stats_with(10.0, 16.0), mde=0.05) > base
    assert sample_size_per_arm(stats_with(10.0, 4.0), mde=0.025) > base
    assert sample_size_per_arm(stats_with(10.0, 4.0), mde=0.05, power=0.95) > base
    assert sample_size_per_arm(stats_with(10.0, 4.0), mde=0.05, alpha=0.01) > base


def test_halving_the_effect_roughly_quadruples_the_sample() -> None:
    control = stats_with(5.0, 9.0)
    ratio = sample_size_per_arm(control, mde=0.01) / sample_size_per_arm(control, mde=0.02)
    assert ratio == pytest.approx(4.0, abs=0.01)


def test_never_below_two() -> None:
    assert sample_size_per_arm(stats_with(10.0, 1.0), mde=100.0, relative=False) == 2


@pytest.mark.parametrize(
    ("control", "mde", "alpha", "power"),
    [
        (stats_with(10.0, 1.0), 0.0, 0.05, 0.8),
        (stats_with(10.0, 1.0), float("inf"), 0.05, 0.8),
        (stats_with(10.0, 1.0), 0.1, 0.0, 0.8),
        (stats_with(10.0, 1.0), 0.1, 0.05, 1.0),
        (SampleStats.from_values([3.0, 3.0, 3.0]), 0.1, 0.05, 0.8),
        (SampleStats.from_values([3.0]), 0.1, 0.05, 0.8),
        (stats_with(0.0, 1.0), 0.1, 0.05, 0.8),
    ],
)
def test_rejects_unplannable_inputs(
    control: SampleStats, mde: float, alpha: float, power: float
) -> None:
    with pytest.raises(ValueError):
        sample_size_per_arm(control, mde=mde, alpha=alpha, power=power)
