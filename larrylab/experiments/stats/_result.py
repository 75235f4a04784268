"""The result type shared by the frequentist tests, and its error messages."""

from __future__ import annotations

from dataclasses import asdict, dataclass

ERROR_NOT_ENOUGH_DATA = "NOT_ENOUGH_DATA: each arm needs at least 2 units"
ERROR_ZERO_VARIANCE = "ZERO_VARIANCE: an arm has zero variance"
ERROR_ZERO_BASELINE = "ZERO_BASELINE: control mean is 0, so the relative lift is undefined"


@dataclass(frozen=True)
class TestResult:
    """Outcome of comparing a treatment arm with the control arm.

    When the comparison cannot be computed, ``error`` holds a message and, as in
    gbstats's default output, ``effect``, ``ci_low``, ``ci_high`` and ``se`` are 0.0,
    ``p_value`` is 1.0 and ``df`` is None; the arm means are still reported.

    Attributes:
        effect: Relative lift ``(t - c) / |c|`` or absolute difference ``t - c``.
        ci_low: Lower bound of the two-sided confidence interval for ``effect``.
        ci_high: Upper bound of the two-sided confidence interval for ``effect``.
        se: Standard error of ``effect`` (delta method when relative).
        p_value: Two-sided p-value for ``effect == 0``.
        df: Welch-Satterthwaite degrees of freedom; None for sequential tests and errors.
        control_mean: Mean of the control arm.
        treatment_mean: Mean of the treatment arm.
        error: Why the test could not be computed, or None.
    """

    __test__ = False  # a result type, not a pytest test class

    effect: float
    ci_low: float
    ci_high: float
    se: float
    p_value: float
    df: float | None
    control_mean: float
    treatment_mean: float
    error: str | None = None

    def to_dict(self) -> dict[str, float | str | None]:
        """Return the result as a JSON-serialisable dictionary."""
        return asdict(self)
