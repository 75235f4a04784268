"""Tests for the sample-ratio-mismatch check."""

import pytest
from scipy import stats as scipy_stats

from larrylab.experiments.stats import srm_pvalue


@pytest.mark.parametrize(
    ("observed", "weights", "expected"),
    [
        # chi2 = 2 * 25**2 / 1025 = 1.2195 on 1 df; the same values come from gbstats's
        # check_srm (growthbook packages/stats/gbstats/utils.py) at commit 8f1db445.
        ([1000, 1050], [0.5, 0.5], 0.26945640516),
        ([300, 330, 370], [1, 1, 1], 0.02472352647),
        ([5000, 5200, 9800], [0.25, 0.25, 0.5], 0.00247875218),
        ([5000, 5000], [1, 1], 1.0),
    ],
)
def test_pinned_values(observed: list[int], weights: list[float], expected: float) -> None:
    assert srm_pvalue(observed, weights) == pytest.approx(expected, abs=1e-8)


def test_matches_scipy_chisquare_with_normalised_weights() -> None:
    observed = [480, 530, 1020]
    weights = [2.0, 2.0, 4.0]
    total = sum(observed)
    expected_counts = [w / sum(weights) * total for w in weights]
    reference = scipy_stats.chisquare(observed, expected_counts).pvalue
    assert srm_pvalue(observed, weights) == pytest.approx(reference, abs=1e-12)


def test_no_traffic_is_not_a_mismatch() -> None:
    assert srm_pvalue([0, 0], [0.5, 0.5]) == 1.0


def test_zero_weight_arm_is_left_out() -> None:
    assert srm_pvalue([1000, 1050, 0], [1, 1, 0]) == pytest.approx(0.26945640516, abs=1e-8)


def test_units_in_a_zero_weight_arm_are_a_mismatch() -> None:
    assert srm_pvalue([1000, 1050, 3], [1, 1, 0]) == 0.0


def test_only_one_weighted_arm_cannot_mismatch() -> None:
    assert srm_pvalue([1000, 0], [1, 0]) == 1.0


@pytest.mark.parametrize(
    ("observed", "weights"),
    [([10, 20], [1.0]), ([10], [1.0]), ([-1, 5], [1, 1]), ([5, 5], [1, -1]), ([5, 5], [0, 0])],
)
def test_rejects_invalid_input(observed: list[int], weights: list[float]) -> None:
    with pytest.raises(ValueError):
        srm_pvalue(observed, weights)
