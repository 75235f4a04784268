"""An experiment's report: per-arm rows, tests of each candidate against the control, verdicts.

Metrics (unit of observation in brackets):

- decision metrics, Holm-corrected across metrics and candidate arms:
  `latency_ms` (successful requests, lower is better), `mean_score` and `high_rating_share`
  (ratings with a score, higher is better), `thumbs_up_rate` (ratings with a thumb, higher is
  better);
- guardrails, reported apart: `error_rate`, `fallback_rate` (requests, lower is better);
- informational: `ttft_ms` (successful requests), `feedback_rate` (requests rated at least once).

Requests a candidate could not serve as sent (`ineligible`) are left out of the request
metrics; the per-arm rows count them apart.

Verdict per candidate, from always-valid sequential tests by default (safe to look daily):

- `invalid`: sample-ratio mismatch (SRM p < 0.001 on threads per arm against the weights);
- `stop`: a guardrail is significantly worse, or a decision metric is significantly worse;
- `ship`: a decision metric is significantly better, and no quality metric with data (at least
  one has data) has an interval that allows a relative drop larger than the non-inferiority
  margin;
- `keep_running`: otherwise, with the ratings still needed per arm to detect the minimum
  detectable effect on the quality metrics at 80% power.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from sqlalchemy import Connection, Engine

from larrylab.experiments._arm_report import ArmReport, arm_reports_on
from larrylab.experiments.stats import (
    ERROR_ZERO_VARIANCE,
    SampleStats,
    TestResult,
    holm_adjust,
    sample_size_per_arm,
    sequential_ttest,
    srm_pvalue,
    ttest,
)
from larrylab.rollups import (
    ERRORS,
    FALLBACKS,
    HIGH,
    LATENCY,
    RATED,
    REQUESTS,
    SCORE,
    THREADS,
    THUMBS_UP,
    TTFT,
    read_rollup,
)

SRM_THRESHOLD = 0.001
Direction = Literal["lower", "higher"]


@dataclass(frozen=True)
class MetricSpec:
    """A metric: its name, which way is better, and its role in the verdict."""

    name: str
    better: Direction
    role: Literal["decision", "guardrail", "info"]
    binary: bool = False
    quality: bool = False
    relative: bool = True


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("latency_ms", "lower", "decision"),
    MetricSpec("mean_score", "higher", "decision", quality=True),
    MetricSpec("high_rating_share", "higher", "decision", binary=True, quality=True),
    MetricSpec("thumbs_up_rate", "higher", "decision", binary=True, quality=True),
    MetricSpec("error_rate", "lower", "guardrail", binary=True, relative=False),
    MetricSpec("fallback_rate", "lower", "guardrail", binary=True, relative=False),
    MetricSpec("ttft_ms", "lower", "info"),
    MetricSpec("feedback_rate", "higher", "info", binary=True),
)


@dataclass(frozen=True)
class ReportOptions:
    """Knobs of the report's tests (defaults: GrowthBook's, and a 5% quality margin)."""

    alpha: float = 0.05
    sequential: bool = True
    tuning: float = 5000.0
    mde: float = 0.05
    non_inferiority_margin: float = 0.05
    power: float = 0.8


@dataclass
class MetricResult:
    """One metric of one candidate against the control."""

    metric: str
    role: str
    better: str
    relative: bool
    control: dict[str, float]
    treatment: dict[str, float]
    test: dict[str, Any]
    adjusted_p_value: float | None = None
    significant: bool = False
    outcome: Literal["better", "worse", "flat", "no_data"] = "flat"


@dataclass
class CandidateResult:
    """A candidate arm's comparison with the control and its verdict."""

    arm: str
    verdict: Literal["ship", "keep_running", "stop", "invalid"]
    reasons: list[str]
    metrics: list[MetricResult]
    ratings_needed_per_arm: int | None = None


@dataclass
class ExperimentReport:
    """The report of one experiment: its per-arm rows and each candidate against the control."""

    experiment: str
    control: str
    method: str
    alpha: float
    srm_p_value: float
    srm: bool
    threads: dict[str, int]
    arms: list[ArmReport] = field(default_factory=list)
    candidates: list[CandidateResult] = field(default_factory=list)
    weights_problem: str | None = None
    """Why the configured weights cannot be used (the SRM check is then skipped)."""


def weights_problem(weights: list[float]) -> str | None:
    """Why `weights` cannot describe a traffic split, or None when they can.

    Rows stored before weights were validated may hold NaN, infinities or finite weights
    whose sum overflows; the router cannot split traffic by them, so neither can the SRM check.
    """
    if any(not math.isfinite(w) or w < 0 for w in weights):
        return "arm weights are not all finite, non-negative numbers"
    if not math.isfinite(sum(weights)):
        return "arm weights add up to more than a floating-point number can hold"
    return None


def sufficient_stats(
    conn: Connection, experiment: str
) -> tuple[dict[str, dict[str, SampleStats]], dict[str, int]]:
    """Per arm, per metric `SampleStats` and threads per arm, read from the running totals."""
    stats: dict[str, dict[str, SampleStats]] = {}
    threads: dict[str, int] = {}
    for arm, totals in read_rollup(conn, experiment).items():
        arm_stats = {
            name: SampleStats(*totals[name])
            for name in (LATENCY, TTFT, ERRORS, FALLBACKS, SCORE, HIGH, THUMBS_UP)
            if name in totals
        }
        # Requests rated at least once: a 0/1 metric over requests (sum = sum of squares).
        rated = totals.get(RATED, (0, 0.0, 0.0))[1]
        arm_stats["feedback_rate"] = SampleStats(
            totals.get(REQUESTS, (0, 0.0, 0.0))[0], rated, rated
        )
        stats[arm] = arm_stats
        threads[arm] = totals.get(THREADS, (0, 0.0, 0.0))[0]
    return stats, threads


def _smoothed(s: SampleStats) -> SampleStats:
    """Agresti-Caffo: one success and one failure more, for rates stuck at 0 or 1."""
    return SampleStats(s.n + 2, s.sum + 1, s.sum_squares + 1)


def _compare(
    spec: MetricSpec, control: SampleStats, treatment: SampleStats, opts: ReportOptions
) -> TestResult:
    def run(c: SampleStats, t: SampleStats) -> TestResult:
        if opts.sequential:
            return sequential_ttest(
                c, t, relative=spec.relative, alpha=opts.alpha, tuning=opts.tuning
            )
        return ttest(c, t, relative=spec.relative, alpha=opts.alpha)

    result = run(control, treatment)
    if result.error == ERROR_ZERO_VARIANCE and spec.binary and control.mean != treatment.mean:
        # A rate stuck at 0 or 1 in one arm: still comparable after smoothing.
        result = run(_smoothed(control), _smoothed(treatment))
    return result


def _describe(s: SampleStats) -> dict[str, float]:
    return {"n": s.n, "mean": s.mean, "std": s.std}


def _metric_results(
    stats: dict[str, dict[str, SampleStats]], control: str, arm: str, opts: ReportOptions
) -> list[MetricResult]:
    out = []
    empty = SampleStats(0, 0.0, 0.0)
    for spec in METRICS:
        c = stats.get(control, {}).get(spec.name, empty)
        t = stats.get(arm, {}).get(spec.name, empty)
        test = _compare(spec, c, t, opts)
        res = MetricResult(
            spec.name,
            spec.role,
            spec.better,
            spec.relative,
            _describe(c),
            _describe(t),
            test.to_dict(),
        )
        constant_and_equal = test.error == ERROR_ZERO_VARIANCE and c.mean == t.mean
        res.outcome = "no_data" if test.error and not constant_and_equal else "flat"
        out.append(res)
    return out


def _classify(results: list[MetricResult], alpha: float) -> None:
    decisions = [r for r in results if r.role == "decision" and r.outcome != "no_data"]
    adjusted = holm_adjust([float(r.test["p_value"]) for r in decisions])
    for r, p in zip(decisions, adjusted, strict=True):
        r.adjusted_p_value = p
    for r in results:
        if r.outcome == "no_data":
            continue
        p = r.adjusted_p_value if r.adjusted_p_value is not None else float(r.test["p_value"])
        r.significant = p < alpha
        if r.significant:
            improved = (r.test["effect"] < 0) == (r.better == "lower")
            r.outcome = "better" if improved else "worse"


def _ratings_needed(
    stats: dict[str, dict[str, SampleStats]], control: str, arm: str, opts: ReportOptions
) -> int | None:
    needed = []
    for name in ("mean_score", "high_rating_share", "thumbs_up_rate"):
        c = stats.get(control, {}).get(name)
        if c is None or c.n < 2 or c.mean == 0 or c.variance == 0:
            continue
        total = sample_size_per_arm(
            c, mde=opts.mde, relative=True, alpha=opts.alpha, power=opts.power
        )
        have = min(c.n, stats.get(arm, {}).get(name, SampleStats(0, 0, 0)).n)
        needed.append(max(0, total - have))
    return max(needed) if needed else None


def _verdict(cand: CandidateResult, srm: bool, opts: ReportOptions) -> None:
    by_name = {m.metric: m for m in cand.metrics}
    worse = [
        m.metric
        for m in cand.metrics
        if m.role in ("decision", "guardrail") and m.outcome == "worse"
    ]
    better = [m.metric for m in cand.metrics if m.role == "decision" and m.outcome == "better"]
    # Ratings may come as scores, thumbs or both: quality is judged on the metrics rated in
    # both arms (at least one), each of which must be testable and within the margin.
    quality = [
        m
        for m in (by_name[s.name] for s in METRICS if s.quality)
        if m.control["n"] > 0 and m.treatment["n"] > 0
    ]
    quality_ok = bool(quality) and all(
        m.outcome != "no_data" and m.test["ci_low"] > -opts.non_inferiority_margin for m in quality
    )
    if srm:
        cand.verdict, cand.reasons = (
            "invalid",
            ["sample ratio mismatch: threads per arm do not match the weights"],
        )
    elif worse:
        cand.verdict, cand.reasons = "stop", [f"{name} is significantly worse" for name in worse]
    elif better and quality_ok:
        cand.verdict = "ship"
        cand.reasons = [f"{name} is significantly better" for name in better] + [
            f"quality not worse by more than {opts.non_inferiority_margin:.0%}"
        ]
    else:
        cand.verdict = "keep_running"
        cand.reasons = [
            "no significant improvement yet"
            if not better
            else f"quality could still be more than {opts.non_inferiority_margin:.0%} worse"
        ]


def _srm_p_value(observed: list[int], weights: list[float]) -> float:
    """The SRM p-value; NaN when the weights cannot describe a split, 1.0 when all are 0."""
    if weights_problem(weights):
        return math.nan
    return srm_pvalue(observed, weights) if sum(weights) > 0 else 1.0


def experiment_report(
    engine: Engine,
    experiment: str,
    arms: list[tuple[str, bool, float]],
    opts: ReportOptions | None = None,
) -> ExperimentReport:
    """The report of `experiment`; `arms` lists (model, control, weight) as configured."""
    opts = opts or ReportOptions()
    control = next(name for name, is_control, _ in arms if is_control)
    with engine.connect() as conn:
        stats, threads = sufficient_stats(conn, experiment)
        rows = arm_reports_on(conn, experiment, arms)
    observed = [threads.get(name, 0) for name, _, _ in arms]
    weights = [w for _, _, w in arms]
    problem = weights_problem(weights)
    srm_p = _srm_p_value(observed, weights)
    out = ExperimentReport(
        experiment,
        control,
        "sequential" if opts.sequential else "fixed_horizon",
        opts.alpha,
        srm_p,
        srm_p < SRM_THRESHOLD,
        {name: threads.get(name, 0) for name, _, _ in arms},
        arms=rows,
        weights_problem=problem,
    )
    candidates = [name for name, is_control, _ in arms if not is_control]
    all_results = {arm: _metric_results(stats, control, arm, opts) for arm in candidates}
    # Holm across every decision metric of every candidate.
    flat = [r for arm in candidates for r in all_results[arm]]
    _classify(flat, opts.alpha)
    for arm in candidates:
        cand = CandidateResult(
            arm, "keep_running", [], all_results[arm], _ratings_needed(stats, control, arm, opts)
        )
        _verdict(cand, out.srm, opts)
        if problem:
            cand.verdict, cand.reasons = "invalid", [f"{problem}, so traffic could not follow them"]
        out.candidates.append(cand)
    return out


def report_dict(report: ExperimentReport) -> dict[str, Any]:
    """The report as JSON-safe data."""
    result: dict[str, Any] = finite(asdict(replace(report, arms=[])))
    result["arms"] = [finite(a.model_dump(mode="json")) for a in report.arms]
    return result


def finite(value: Any) -> Any:
    """JSON-safe numbers (NaN and infinities become None)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
