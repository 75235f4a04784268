"""Deterministic, sticky assignment of threads to arms (GrowthBook hashing version 2).

`bucket(seed, unit)` is `fnv32a(str(fnv32a(seed + unit))) % 10000 / 10000`; arms take
consecutive ranges of cumulative weight, so analysts can reproduce any assignment elsewhere and
a weight change moves as few threads as possible.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv32a(text: str) -> int:
    """32-bit FNV-1a hash of `text`'s UTF-8 bytes."""
    h = _FNV_OFFSET
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def bucket(seed: str, unit: str) -> float:
    """GrowthBook hash v2 of `unit` under `seed`: a number in [0, 1) with 4 decimals."""
    return (fnv32a(str(fnv32a(seed + unit))) % 10000) / 10000


@dataclass(frozen=True, slots=True)
class ArmRanges:
    """Arms laid out as consecutive ranges of cumulative (normalised) weight."""

    names: tuple[str, ...]
    upper: tuple[float, ...]

    @classmethod
    def from_weights(cls, names: Sequence[str], weights: Sequence[float]) -> ArmRanges:
        """Build ranges from arm names and non-negative weights (any positive total)."""
        total = float(sum(weights))
        if total <= 0:
            raise ValueError("arm weights must add up to more than 0")
        upper: list[float] = []
        acc = 0.0
        for w in weights:
            acc += w / total
            upper.append(acc)
        upper[-1] = 1.0
        return cls(tuple(names), tuple(upper))

    def choose(self, n: float) -> str:
        """The arm whose range holds the bucket value `n` in [0, 1)."""
        i = bisect_right(self.upper, n)
        # bisect_right skips zero-weight arms: they share their upper bound with the arm before.
        return self.names[min(i, len(self.names) - 1)]


def assign(seed: str, unit: str, ranges: ArmRanges) -> str:
    """The arm for `unit` in an experiment with `seed` and arm `ranges`."""
    return ranges.choose(bucket(seed, unit))
