"""Sufficient statistics for one arm of an experiment."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

# Below this fraction of ``sum_squares`` the centred sum of squares is floating-point
# rounding noise (catastrophic cancellation in ``sum_squares - sum**2 / n``), not spread.
_CANCELLATION_TOLERANCE = 1e-12


@dataclass(frozen=True)
class SampleStats:
    """Sufficient statistics of one arm: unit count, sum and sum of squares.

    Conversion (0/1) metrics need no special type: for 0/1 data ``sum == sum_squares``,
    so ``SampleStats(n, k, k)`` describes ``k`` conversions out of ``n`` units.

    Attributes:
        n: Number of units (users, conversations, ...) in the arm.
        sum: Sum of the metric over the units.
        sum_squares: Sum of the squared metric over the units.
    """

    n: int
    sum: float
    sum_squares: float

    def __post_init__(self) -> None:
        # Coerce database and numpy scalars (Decimal sums, numpy.int64 counts) to builtins.
        if int(self.n) != self.n:
            raise ValueError(f"n must be a whole number, got {self.n}")
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "sum", float(self.sum))
        object.__setattr__(self, "sum_squares", float(self.sum_squares))
        if self.n < 0:
            raise ValueError(f"n must be non-negative, got {self.n}")
        if self.sum_squares < 0:
            raise ValueError(f"sum_squares must be non-negative, got {self.sum_squares}")
        if not (math.isfinite(self.sum) and math.isfinite(self.sum_squares)):
            raise ValueError("sum and sum_squares must be finite")

    @classmethod
    def from_values(cls, values: Iterable[float]) -> SampleStats:
        """Build the statistics from raw per-unit values.

        Args:
            values: One metric value per unit.

        Returns:
            The sufficient statistics of ``values``.
        """
        items = [float(v) for v in values]
        return cls(
            n=len(items),
            sum=math.fsum(items),
            sum_squares=math.fsum(v * v for v in items),
        )

    @classmethod
    def from_conversions(cls, n: int, conversions: int) -> SampleStats:
        """Build the statistics of a 0/1 metric from a conversion count.

        Args:
            n: Number of units.
            conversions: Number of units with value 1.

        Returns:
            The sufficient statistics, with ``sum == sum_squares == conversions``.
        """
        if not 0 <= conversions <= n:
            raise ValueError(f"conversions must be in [0, n], got {conversions} of {n}")
        return cls(n=n, sum=float(conversions), sum_squares=float(conversions))

    @property
    def mean(self) -> float:
        """Sample mean; 0.0 for an empty arm."""
        return self.sum / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        """Unbiased sample variance (``n - 1`` denominator); 0.0 when ``n < 2``."""
        if self.n < 2:
            return 0.0
        centred = self.sum_squares - self.sum * self.sum / self.n
        if centred <= _CANCELLATION_TOLERANCE * self.sum_squares:
            return 0.0
        return centred / (self.n - 1)

    @property
    def std(self) -> float:
        """Sample standard deviation."""
        return math.sqrt(self.variance)

    def __add__(self, other: SampleStats) -> SampleStats:
        """Pool two disjoint sets of units (for example two days of the same arm)."""
        if not isinstance(other, SampleStats):
            return NotImplemented
        return SampleStats(
            n=self.n + other.n,
            sum=self.sum + other.sum,
            sum_squares=self.sum_squares + other.sum_squares,
        )
