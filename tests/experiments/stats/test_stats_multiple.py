"""Tests for Holm-Bonferroni adjustment (expected values worked out by hand)."""

import math

import pytest

from larrylab.experiments.stats import holm_adjust


@pytest.mark.parametrize(
    ("p_values", "expected"),
    [
        # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> raised to 0.06
        ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
        # 0.01*3=0.03, 0.02*2=0.04, 0.025*1=0.025 -> raised to 0.04
        ([0.01, 0.02, 0.025], [0.03, 0.04, 0.04]),
        # 0.5*2=1.0 (cap), 0.6*1=0.6 -> raised to 1.0
        ([0.6, 0.5], [1.0, 1.0]),
        # ties: 0.02*2=0.04, 0.02*1=0.02 -> raised to 0.04
        ([0.02, 0.02], [0.04, 0.04]),
        ([0.2, 0.0, 1.0], [0.4, 0.0, 1.0]),
        ([0.037], [0.037]),
        ([], []),
    ],
)
def test_hand_worked_examples(p_values: list[float], expected: list[float]) -> None:
    assert holm_adjust(p_values) == pytest.approx(expected, abs=1e-12)


def test_adjusted_values_are_monotone_in_raw_order_and_bounded() -> None:
    raw = [0.001, 0.3, 0.04, 0.012, 0.9, 0.0499, 0.2]
    adjusted = holm_adjust(raw)
    by_raw = [a for _, a in sorted(zip(raw, adjusted, strict=True))]
    assert by_raw == sorted(by_raw)
    assert all(r <= a <= 1.0 for r, a in zip(raw, adjusted, strict=True))


def test_does_not_mutate_input() -> None:
    raw = [0.03, 0.01]
    holm_adjust(raw)
    assert raw == [0.03, 0.01]


@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan])
def test_rejects_invalid_p_values(bad: float) -> None:
    with pytest.raises(ValueError):
        holm_adjust([0.5, bad])
