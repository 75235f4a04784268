"""How often each deterministic check held on a model's replies, with Wilson intervals.

The pws scorer stores every check's outcome per sample in the score's metadata
(`checks: {name: {passed, detail}}`); `check_outcomes` reads them back from the inspect logs
of an eval run, and `compare_check_rates` sets two models' rates side by side (for example a
base model and its fine-tune on the same samples).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

from larrylab.release import EvalTaskResult

SCORER = "pws_scorer"


@dataclass(frozen=True, slots=True)
class Rate:
    """A pass rate: `passed` of `n`, with a two-sided Wilson score interval."""

    passed: int
    n: int
    ci_low: float
    ci_high: float

    @property
    def rate(self) -> float:
        """The share that passed (0 when there were none)."""
        return self.passed / self.n if self.n else 0.0


@dataclass(frozen=True, slots=True)
class CheckComparison:
    """One check's pass rate for two models."""

    check: str
    baseline: Rate
    candidate: Rate


def wilson_rate(passed: int, n: int, confidence: float = 0.95) -> Rate:
    """`passed` of `n` with its Wilson score interval (sound for small n and rates near 0 or 1)."""
    if not 0 <= passed <= n:
        raise ValueError("passed must be between 0 and n")
    if n == 0:
        return Rate(0, 0, 0.0, 1.0)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = passed / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Rate(passed, n, max(0.0, centre - half), min(1.0, centre + half))


def check_outcomes(results: Iterable[EvalTaskResult]) -> dict[str, list[bool]]:
    """Every check's outcomes over the samples of `results`, read from their inspect logs.

    A sample whose model call failed has no checks and adds nothing; a result without a log
    raises ValueError.
    """
    from inspect_ai.log import read_eval_log

    outcomes: dict[str, list[bool]] = {}
    for result in results:
        if not result.log_path:
            raise ValueError(f"eval result for task {result.task} has no inspect log")
        log = read_eval_log(result.log_path)
        for sample in log.samples or []:
            score = (sample.scores or {}).get(SCORER)
            checks = (score.metadata or {}).get("checks") if score is not None else None
            for name, outcome in (checks or {}).items():
                outcomes.setdefault(name, []).append(bool(outcome.get("passed")))
    return outcomes


def compare_check_rates(
    baseline: Mapping[str, Sequence[bool]],
    candidate: Mapping[str, Sequence[bool]],
    confidence: float = 0.95,
) -> list[CheckComparison]:
    """Both models' pass rate per check (every check either model ran), sorted by name."""
    rows = []
    for name in sorted(set(baseline) | set(candidate)):
        b, c = baseline.get(name, ()), candidate.get(name, ())
        rows.append(
            CheckComparison(
                check=name,
                baseline=wilson_rate(sum(b), len(b), confidence),
                candidate=wilson_rate(sum(c), len(c), confidence),
            )
        )
    return rows
