"""Dataset: split by source thread, Hugging Face dataset + JSONL + card; manifests and skipping."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import load_from_disk

from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.dataset import DatasetOptions, run_dataset, validation_threads
from larrylab.pipeline.llm import LLMOptions
from larrylab.pipeline.manifest import (
    StageClock,
    StagePlan,
    finish_stage,
    is_current,
)
from larrylab.pipeline.records import Record, write_records

REPLY = "What job is the learner hiring this product to do, and how would you check that?"


def _record(thread: str, n: int, category: str, origin: str = "generated") -> Record:
    return Record(
        id=f"{thread}:{n}",
        messages=[
            {"role": "system", "content": "You are Larry."},
            {"role": "user", "content": f"Thread {thread} question {n}"},
            {"role": "assistant", "content": REPLY},
        ],
        category=category,
        origin=origin,
        source_thread_id=thread,
        source_request_ids=[f"{thread}-req"],
        models=["gemini-flash"],
        strategy=None if origin == "export" else "objection",
        meta={}
        if origin == "export"
        else {
            "judge": {
                "mean": 4.5,
                "scores": {
                    "pws_accuracy": 5,
                    "pedagogical_value": 4,
                    "realistic_user": 4,
                    "larry_voice": 5,
                },
            }
        },
    )


def _filtered(out: Path, records: list[Record]) -> None:
    plan = StagePlan(stage="filter", directory=out / "filter", inputs={}, params={})
    write_records(plan.directory / "records.jsonl", records)
    finish_stage(plan, StageClock(), status="done", counts={}, outputs=["records.jsonl"])


def test_validation_threads_are_a_stable_share_and_never_everything() -> None:
    threads = [f"t{i}" for i in range(40)]
    held = validation_threads(threads, DatasetOptions(validation_share=0.1))
    assert len(held) == 4 and held == validation_threads(reversed(threads), DatasetOptions())
    assert validation_threads(["only"], DatasetOptions()) == set()
    assert len(validation_threads(["a", "b"], DatasetOptions(validation_share=0.9))) == 1
    assert validation_threads(threads, DatasetOptions(validation_share=0)) == set()


def test_dataset_keeps_each_thread_on_one_side_in_every_format(tmp_path: Path) -> None:
    records = [
        _record(f"t{t}", n, "jtbd" if t % 2 else "tta", "export" if n == 0 else "generated")
        for t in range(10)
        for n in range(6)
    ]
    _filtered(tmp_path, records)
    ctx = PipelineContext(out=tmp_path, llm=LLMOptions(), progress=False)
    result = run_dataset(ctx, DatasetOptions(validation_share=0.2))
    assert result.counts == {
        "train": 48,
        "validation": 12,
        "source_threads": 10,
        "validation_threads": 2,
    }

    data = load_from_disk(str(tmp_path / "dataset/hf"))
    assert set(data["train"]["source_thread_id"]).isdisjoint(data["validation"]["source_thread_id"])
    assert data["train"][0]["messages"][1]["role"] == "user"
    assert data["train"].features["judge_mean"].dtype == "float64"
    for split in ("train", "validation"):
        rows = [
            json.loads(line)
            for line in (tmp_path / f"dataset/{split}.jsonl").read_text().splitlines()
        ]
        assert [r["messages"] for r in rows] == list(data[split]["messages"])
    card = (tmp_path / "dataset/README.md").read_text()
    assert card.startswith("---\nlanguage:")
    (row,) = [line for line in card.splitlines() if line.startswith("| JTBD Discovery |")]
    train, validation, total = (int(v) for v in row.strip("| ").split(" | ")[1:])
    assert total == 30 == train + validation
    assert "| 4.5 | 50 |" in card  # judge mean distribution of the generated records
    assert '"serving_models": [\n    "gemini-flash"\n  ]' in card


def test_a_changed_or_missing_output_makes_a_stage_stale(tmp_path: Path) -> None:
    _filtered(tmp_path, [_record("t1", 1, "tta")])
    ctx = PipelineContext(out=tmp_path, llm=LLMOptions(), progress=False)
    run_dataset(ctx, DatasetOptions())
    from larrylab.pipeline.dataset import plan_dataset

    plan = plan_dataset(ctx, DatasetOptions())
    assert is_current(plan) is not None
    assert is_current(plan_dataset(ctx, DatasetOptions(validation_share=0.3))) is None
    (tmp_path / "dataset/train.jsonl").write_text("tampered\n")
    assert is_current(plan) is None


def _exported(out: Path, counts: dict[str, int], **extra: object) -> None:
    plan = StagePlan(stage="export", directory=out / "export", inputs={}, params={})
    write_records(plan.directory / "records.jsonl", [])
    finish_stage(
        plan, StageClock(), status="done", counts=counts, outputs=["records.jsonl"], extra=extra
    )


def _privacy(card: str) -> str:
    """The card's Privacy section, its lines joined (so sentences do not break at wraps)."""
    section = card[card.index("## Privacy\n") : card.index("## Lineage\n")]
    return " ".join(section.split())


def _card(tmp_path: Path) -> str:
    _filtered(tmp_path, [_record("t1", 1, "tta"), _record("t2", 1, "jtbd")])
    ctx = PipelineContext(out=tmp_path, llm=LLMOptions(), progress=False)
    run_dataset(ctx, DatasetOptions())
    return _privacy((tmp_path / "dataset/README.md").read_text())


def test_card_states_pseudonyms_placeholders_counts_and_the_presidio_model(
    tmp_path: Path,
) -> None:
    counts = {"scrubbed_emails": 4, "scrubbed_phones": 2, "scrubbed_urls": 1, "scrubbed_names": 9}
    names = "Presidio 2.2.366 with the spaCy model en_core_web_lg 3.8.0"
    _exported(
        tmp_path,
        counts,
        pseudonyms={"method": "HMAC-SHA256", "key": "settings"},
        scrubbing={"placeholders": {"emails": "[EMAIL]", "names": "[NAME]"}, "names": names},
    )
    privacy = _card(tmp_path)
    assert (
        "thread ids (`source_thread_id`) are replaced by keyed HMAC-SHA256 pseudonyms "
        "(key: the `LARRYLAB_PSEUDONYM_KEY` setting)" in privacy
    )
    assert "Request ids (`id`, `source_request_ids`) are as stored" in privacy
    assert "replaced by `[EMAIL]` (4 replaced)" in privacy
    assert "replaced by `[PHONE]`" in privacy and "(2 replaced)" in privacy
    assert "replaced by `[URL]`" in privacy and "(1 replaced). Other URLs are kept." in privacy
    assert f"**Person names**: replaced by `[NAME]` where {names} finds a PERSON (9 replaced)" in (
        privacy
    )
    assert "NOT scrubbed" not in privacy
    assert "Never scrubbed: - names of companies, organisations, products and places" in privacy
    assert "a name or contact detail the generator invents stays" in privacy


def test_card_says_names_were_not_scrubbed_and_ids_are_as_stored(tmp_path: Path) -> None:
    why = "not scrubbed (presidio not installed: pip install 'larrylab[privacy]' ...)"
    _exported(
        tmp_path,
        {"scrubbed_emails": 1, "names_not_scrubbed_presidio_not_installed": 12},
        pseudonyms={"method": "HMAC-SHA256", "key": "generated in runs/x/.pseudonym-key"},
        scrubbing={"placeholders": {"emails": "[EMAIL]"}, "names": why},
    )
    privacy = _card(tmp_path)
    assert "(key: generated in runs/x/.pseudonym-key)" in privacy
    reason = "(presidio not installed: pip install 'larrylab[privacy]' ...)"
    assert f"**Person names**: **NOT scrubbed** {reason}." in privacy
    assert "[NAME]" not in privacy
    assert "replaced by `[PHONE]`" in privacy and "(0 replaced)" in privacy


def test_card_reads_the_tally_of_an_export_without_a_scrubbing_entry(tmp_path: Path) -> None:
    _exported(tmp_path, {"names_not_scrubbed_no_spacy_model": 3})
    privacy = _card(tmp_path)
    assert "thread ids are as stored in the larrylab store" in privacy
    assert "they are not pseudonymised" in privacy
    assert "**NOT scrubbed** (presidio installed, but no spaCy model)." in privacy


def test_card_without_an_export_manifest_claims_nothing(tmp_path: Path) -> None:
    privacy = _card(tmp_path)
    assert "what was scrubbed cannot be stated" in privacy
    assert "treat the conversations as not scrubbed and the ids as stored" in privacy
    assert "replaced by" not in privacy
