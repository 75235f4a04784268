"""Tests for SampleStats, the per-arm sufficient statistics."""

import math
import statistics
from decimal import Decimal

import numpy as np
import pytest

from larrylab.experiments.stats import SampleStats


def test_mean_variance_std_match_the_standard_library() -> None:
    values = [1.5, 2.0, 3.25, 7.0, 0.0, 4.5]
    stats = SampleStats.from_values(values)
    assert stats.n == 6
    assert stats.mean == pytest.approx(statistics.fmean(values), abs=1e-12)
    assert stats.variance == pytest.approx(statistics.variance(values), abs=1e-12)
    assert stats.std == pytest.approx(statistics.stdev(values), abs=1e-12)


def test_pinned_moments() -> None:
    stats = SampleStats(n=3407, sum=1396.87, sum_squares=52377.9767)
    assert stats.mean == pytest.approx(0.41, abs=1e-12)
    # (52377.9767 - 1396.87**2 / 3407) / 3406 = 51805.26 / 3406
    assert stats.variance == pytest.approx(15.21, abs=1e-9)


def test_conversions_are_sample_variance_of_zero_one_data() -> None:
    stats = SampleStats.from_conversions(28, 14)
    assert stats == SampleStats(n=28, sum=14.0, sum_squares=14.0)
    assert stats == SampleStats.from_values([1] * 14 + [0] * 14)
    assert stats.mean == 0.5
    assert stats.variance == pytest.approx(0.25 * 28 / 27, abs=1e-12)


@pytest.mark.parametrize("values", [[], [3.0]])
def test_too_few_units_have_zero_variance(values: list[float]) -> None:
    stats = SampleStats.from_values(values)
    assert stats.variance == 0.0
    assert stats.std == 0.0
    assert stats.mean == (values[0] if values else 0.0)


def test_constant_values_have_exactly_zero_variance() -> None:
    assert SampleStats.from_values([0.1] * 7).variance == 0.0
    assert SampleStats.from_values([1e6 + 0.3] * 5).variance == 0.0


def test_inconsistent_sums_give_zero_variance_rather_than_negative() -> None:
    # sum_squares < sum**2 / n is impossible for real data (gbstats's "missing variance" case).
    assert SampleStats(n=2, sum=1396.87, sum_squares=52377.9767).variance == 0.0


def test_adding_pools_units() -> None:
    day_1 = SampleStats.from_values([1.0, 2.0, 3.0])
    day_2 = SampleStats.from_values([4.0, 5.0])
    pooled = day_1 + day_2
    assert pooled.n == 5
    assert pooled.mean == pytest.approx(3.0)
    assert pooled.variance == pytest.approx(statistics.variance([1.0, 2.0, 3.0, 4.0, 5.0]))


def test_is_frozen() -> None:
    stats = SampleStats(n=2, sum=1.0, sum_squares=1.0)
    with pytest.raises(AttributeError):
        stats.n = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("n", "total", "squares"),
    [(-1, 0.0, 0.0), (3, 1.0, -1.0), (3, math.nan, 1.0), (3, 1.0, math.inf)],
)
def test_rejects_invalid_statistics(n: int, total: float, squares: float) -> None:
    with pytest.raises(ValueError):
        SampleStats(n=n, sum=total, sum_squares=squares)


def test_rejects_more_conversions_than_units() -> None:
    with pytest.raises(ValueError):
        SampleStats.from_conversions(10, 11)


def test_database_and_numpy_scalars_become_builtins() -> None:
    stats = SampleStats(n=np.int64(4), sum=Decimal("6.5"), sum_squares=Decimal("12.25"))  # type: ignore[arg-type]
    assert type(stats.n) is int
    assert type(stats.sum) is float
    assert type(stats.sum_squares) is float
    assert stats == SampleStats(n=4, sum=6.5, sum_squares=12.25)


def test_rejects_fractional_n() -> None:
    with pytest.raises(ValueError):
        SampleStats(n=2.5, sum=1.0, sum_squares=1.0)  # type: ignore[arg-type]
