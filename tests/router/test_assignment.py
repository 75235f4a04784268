"""Assignment: GrowthBook hashing v2, weights as consecutive ranges, sticky and reproducible."""

from __future__ import annotations

from collections import Counter

import pytest

from larrylab.router._assignment import ArmRanges, assign, bucket, fnv32a

# GrowthBook's SDK test cases (packages/sdk-js/test/cases.json, "hash", version 2).
GROWTHBOOK_V2 = [
    ("seed", "a", 0.0505),
    ("seed", "b", 0.2696),
    ("foo", "ab", 0.2575),
    ("foo", "def", 0.2019),
    ("89123klj", "8952klfjas09ujkasdf", 0.124),
    ("90850943850283058242805", "123", 0.7516),
    ("()**(%$##$%#$#", '___)((*":&', 0.0128),
]


@pytest.mark.parametrize(("seed", "unit", "expected"), GROWTHBOOK_V2)
def test_bucket_matches_growthbook_v2(seed: str, unit: str, expected: float) -> None:
    assert bucket(seed, unit) == pytest.approx(expected, abs=1e-9)


def test_fnv32a_known_values() -> None:
    assert fnv32a("") == 0x811C9DC5
    assert fnv32a("a") == 0xE40C292C
    assert fnv32a("foobar") == 0xBF9CF968


def test_ranges_follow_cumulative_weights() -> None:
    ranges = ArmRanges.from_weights(["c", "t"], [90, 10])
    assert ranges.choose(0.0) == "c"
    assert ranges.choose(0.8999) == "c"
    assert ranges.choose(0.9) == "t"
    assert ranges.choose(0.9999) == "t"


def test_zero_weight_arm_gets_nothing() -> None:
    ranges = ArmRanges.from_weights(["a", "zero", "b"], [50, 0, 50])
    seen = Counter(ranges.choose(i / 10000) for i in range(10000))
    assert seen["zero"] == 0
    assert seen["a"] == seen["b"] == 5000


def test_split_matches_weights_and_is_sticky() -> None:
    ranges = ArmRanges.from_weights(["gemini", "larry"], [80, 20])
    units = [f"thread-{i}" for i in range(20000)]
    first = [assign("exp", u, ranges) for u in units]
    assert first == [assign("exp", u, ranges) for u in units]
    share = first.count("larry") / len(units)
    assert share == pytest.approx(0.20, abs=0.01)


def test_weight_change_moves_few_threads() -> None:
    units = [f"t{i}" for i in range(10000)]
    before = [assign("s", u, ArmRanges.from_weights(["c", "t"], [90, 10])) for u in units]
    after = [assign("s", u, ArmRanges.from_weights(["c", "t"], [75, 25])) for u in units]
    moved = sum(b != a for b, a in zip(before, after, strict=True))
    # Only threads in the 0.75-0.90 band move (from control to treatment): about 15%.
    assert moved / len(units) == pytest.approx(0.15, abs=0.015)
    assert all(a == "t" for b, a in zip(before, after, strict=True) if b == "t")


def test_weights_must_be_positive() -> None:
    with pytest.raises(ValueError, match="more than 0"):
        ArmRanges.from_weights(["a"], [0])
