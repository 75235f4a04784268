"""The gate's decision, on pinned numbers."""

from __future__ import annotations

import pytest
from scipy import stats

from larrylab.evals._stats import mean_interval, paired_interval
from larrylab.evals.gate import GateConfig, decide_gate
from larrylab.release._evalstore import EvalTaskResult, GateDecisionIn

HASH = "ab" * 32


def _result(task: str, scores: list[float], log: str = "") -> EvalTaskResult:
    ids = {f"{task}-{i:02d}": s for i, s in enumerate(scores, 1)}
    iv = mean_interval(scores)
    return EvalTaskResult(
        task=task,
        category=task,
        n_samples=len(scores),
        mean=iv.mean,
        stderr=iv.stderr,
        ci_low=iv.ci_low,
        ci_high=iv.ci_high,
        sample_scores=ids,
        log_path=log or f"logs/{task}.eval",
    )


BASELINE = [
    _result("tta", [0.85, 0.8, 0.9, 0.9]),
    _result("jtbd", [0.7, 0.7, 0.75, 0.7]),
]


def _decide(candidate: list[EvalTaskResult], config: GateConfig | None = None) -> GateDecisionIn:
    return decide_gate(
        candidate="larry-v2",
        baseline="gemini-flash",
        eval_set_hash=HASH,
        candidate_results=candidate,
        baseline_results=BASELINE,
        config=config,
    )


def test_a_non_inferior_candidate_above_the_floors_passes() -> None:
    candidate = [
        _result("tta", [0.9, 0.8, 0.85, 0.95], "logs/c-tta.eval"),
        _result("jtbd", [0.7, 0.75, 0.8, 0.65]),
    ]
    decision = _decide(candidate)
    assert decision.passed
    ev = decision.evidence
    diff = ev["paired_difference"]
    assert (diff["n"], round(diff["mean"], 5)) == (8, 0.0125)
    assert round(diff["stderr"], 5) == 0.01567
    assert (round(diff["ci_low"], 5), round(diff["ci_high"], 5)) == (-0.02455, 0.04955)
    assert round(ev["overall"]["candidate"]["mean"], 5) == 0.8
    assert ev["categories"]["jtbd"] == pytest.approx(
        {"n": 4, "candidate": 0.725, "baseline": 0.7125}
    )
    assert ev["tasks"]["candidate"]["tta"]["log_path"] == "logs/c-tta.eval"
    assert decision.eval_set_hash == HASH
    assert decision.reasons[2] == (
        "non-inferior to gemini-flash: paired difference +0.013, 95% CI [-0.025, +0.050], "
        "lower bound above -0.05"
    )


def test_a_candidate_below_a_category_floor_is_refused() -> None:
    candidate = [
        _result("tta", [0.95, 0.95, 1.0, 1.0]),
        _result("jtbd", [0.45, 0.5, 0.4, 0.45]),
    ]
    decision = _decide(candidate)
    assert not decision.passed
    assert "category jtbd scores 0.450, below its floor 0.50" in decision.reasons
    # the floor alone refuses it, however generous the margin
    lenient = _decide(candidate, GateConfig(margin=1.0))
    assert (lenient.passed, lenient.reasons) == (
        False,
        ["category jtbd scores 0.450, below its floor 0.50"],
    )


def test_a_candidate_worse_than_the_baseline_is_refused_even_above_the_floors() -> None:
    candidate = [
        _result("tta", [0.7, 0.6, 0.65, 0.75]),
        _result("jtbd", [0.6, 0.65, 0.7, 0.55]),
    ]
    decision = _decide(candidate)
    assert not decision.passed
    assert decision.reasons == [
        "not shown non-inferior to gemini-flash: the paired difference -0.138 has a 95% "
        "lower bound -0.196, not above -0.05"
    ]
    # a wide enough margin accepts the same numbers
    assert _decide(candidate, GateConfig(margin=0.2)).passed


def test_overall_floor_and_mismatched_samples_are_reasons_too() -> None:
    candidate = [_result("tta", [0.5, 0.55, 0.6, 0.5]), _result("jtbd", [0.6, 0.6])]
    decision = _decide(candidate, GateConfig(category_floor=0.0, margin=1.0))
    assert not decision.passed
    assert decision.reasons == [
        "task jtbd: candidate and baseline were scored on different samples (2 vs 4, 2 not shared)",
        "overall score 0.537 is below the floor 0.60",
    ]


def test_missing_tasks_refuse() -> None:
    decision = _decide([BASELINE[0]])
    assert not decision.passed
    assert "task jtbd has no candidate result" in decision.reasons[0]


def test_paired_interval_matches_scipy_paired_t() -> None:
    c = [0.9, 0.8, 0.85, 0.95, 0.7, 0.75, 0.8, 0.65]
    b = [0.85, 0.8, 0.9, 0.9, 0.7, 0.7, 0.75, 0.7]
    ci = stats.ttest_rel(c, b).confidence_interval(0.95)
    iv = paired_interval(c, b)
    assert iv.ci_low == pytest.approx(ci.low) and iv.ci_high == pytest.approx(ci.high)


def test_thresholds_outside_the_score_scale_are_refused() -> None:
    with pytest.raises(ValueError, match="gate floor must be between 0 and 1"):
        GateConfig(floor=1.5)
