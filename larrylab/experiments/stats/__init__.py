"""Statistics engine for A/B tests: Welch and sequential t-tests, SRM, Holm, power.

Arms are summarised by sufficient statistics (:class:`SampleStats`); tests return a
:class:`TestResult` carrying an error message instead of raising when an experiment
cannot be analysed. Formulas follow GrowthBook's gbstats frequentist engine.
"""

from larrylab.experiments.stats._multiple import holm_adjust
from larrylab.experiments.stats._power import sample_size_per_arm
from larrylab.experiments.stats._result import (
    ERROR_NOT_ENOUGH_DATA,
    ERROR_ZERO_BASELINE,
    ERROR_ZERO_VARIANCE,
    TestResult,
)
from larrylab.experiments.stats._samples import SampleStats
from larrylab.experiments.stats._sequential import sequential_ttest
from larrylab.experiments.stats._srm import srm_pvalue
from larrylab.experiments.stats._ttest import ttest

__all__ = [
    "ERROR_NOT_ENOUGH_DATA",
    "ERROR_ZERO_BASELINE",
    "ERROR_ZERO_VARIANCE",
    "SampleStats",
    "TestResult",
    "holm_adjust",
    "sample_size_per_arm",
    "sequential_ttest",
    "srm_pvalue",
    "ttest",
]
