"""Pass rates of the deterministic checks, read back from real inspect logs."""

from __future__ import annotations

from pathlib import Path

import pytest
from inspect_ai import Task, eval
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import Score, Target, scorer
from inspect_ai.solver import TaskState

from larrylab.evals.check_rates import (
    SCORER,
    check_outcomes,
    compare_check_rates,
    wilson_rate,
)
from larrylab.evals.runner import result_from_log


def test_wilson_interval_matches_the_textbook_values() -> None:
    half = wilson_rate(5, 10)
    assert half.rate == 0.5
    assert half.ci_low == pytest.approx(0.2366, abs=1e-4)
    assert half.ci_high == pytest.approx(0.7634, abs=1e-4)
    none = wilson_rate(0, 2)
    assert none.ci_low == 0.0 and none.ci_high == pytest.approx(0.6576, abs=1e-4)
    every = wilson_rate(2, 2)
    assert every.ci_high == 1.0 and every.ci_low == pytest.approx(0.3424, abs=1e-4)
    empty = wilson_rate(0, 0)
    assert (empty.rate, empty.ci_low, empty.ci_high) == (0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="between 0 and n"):
        wilson_rate(3, 2)


def test_comparison_covers_every_check_either_model_ran() -> None:
    base = {"asks_question": [False, False, True], "no_refusal": [True, True, True]}
    tuned = {"asks_question": [True, True, True], "length_bounds": [True, False]}
    rows = compare_check_rates(base, tuned)
    assert [r.check for r in rows] == ["asks_question", "length_bounds", "no_refusal"]
    asks = rows[0]
    assert (asks.baseline.passed, asks.baseline.n) == (1, 3)
    assert (asks.candidate.passed, asks.candidate.n) == (3, 3)
    assert rows[1].baseline.n == 0 and rows[2].candidate.n == 0


@scorer(metrics=[], name=SCORER)
def _checks_scorer():  # type: ignore[no-untyped-def]
    """Scores like the pws scorer: one outcome per check in the score's metadata."""

    async def score(state: TaskState, target: Target) -> Score:
        outcomes = dict(state.metadata["outcomes"])
        return Score(
            value={"score": 1.0, "judge": 1.0, "checks": 1.0},
            metadata={"checks": {k: {"passed": v, "detail": ""} for k, v in outcomes.items()}},
        )

    return score


def test_outcomes_are_read_from_the_inspect_logs(tmp_path: Path) -> None:
    samples = [
        Sample(id="a", input="hi", metadata={"outcomes": {"asks_question": True}}),
        Sample(
            id="b",
            input="hi",
            metadata={"outcomes": {"asks_question": False, "no_refusal": True}},
        ),
    ]
    # no solver: the scorer reads each sample's outcomes, no model is called
    task = Task(dataset=MemoryDataset(samples), solver=[], scorer=_checks_scorer(), name="tta")
    [log] = eval(task, model="mockllm/model", log_dir=str(tmp_path), display="none")
    result = result_from_log(log)
    outcomes = check_outcomes([result])
    assert {k: sorted(v) for k, v in outcomes.items()} == {
        "asks_question": [False, True],
        "no_refusal": [True],
    }
    with pytest.raises(ValueError, match="no inspect log"):
        check_outcomes([result.model_copy(update={"log_path": None})])
