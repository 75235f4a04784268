"""`run`: stages whose inputs did not change are skipped; changed inputs cost only what is new."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from larrylab.db._engine import make_engine, upgrade
from larrylab.pipeline.export import ExportOptions
from larrylab.pipeline.filter import FilterOptions
from larrylab.pipeline.run import RunOptions, run_pipeline
from larrylab.sim import SimConfig
from tests.pipeline.factories import (
    ThreadSpec,
    counting_sim,
    seed_store,
    sim_context,
    simple_threads,
)


def test_rerun_skips_unchanged_stages_and_pays_only_for_new_threads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    threads = simple_threads(4)
    seed_store(url, threads[:3])
    engine = make_engine(url)
    empty_evals = tmp_path / "evals.jsonl"
    empty_evals.write_text("")
    options = RunOptions(
        export=ExportOptions(classifier="keywords"), filter=FilterOptions(eval_set=empty_evals)
    )
    with counting_sim(SimConfig(ttft_ms=1, tokens_per_s=0, seed=9, structured_bias=0.9)) as (
        sim_url,
        counter,
    ):
        ctx = sim_context(tmp_path / "run", sim_url)
        first = run_pipeline(ctx, engine, options)
        assert [r.status for r in first] == ["done"] * 4
        assert counter.requests == 3 + 15  # 3 generation requests, 15 judged variations

        # A new low rating changes the store but not the export: later stages are skipped.
        seed_store(
            url,
            [ThreadSpec(id="meh", users=["Hi"], replies=["Hello there, learner."], scores=(2,))],
        )
        second = run_pipeline(ctx, engine, options)
        assert [r.status for r in second] == ["done", "skipped", "skipped", "skipped"]
        assert counter.requests == 18

        # A new rated thread: only its generation and its variations' judging are paid for.
        seed_store(url, threads[3:])
        third = run_pipeline(ctx, engine, options)
        assert [r.status for r in third] == ["done"] * 4
        assert counter.requests == 18 + 1 + 5
        assert third[1].counts["generator_cache_hits"] == 3
        judged_before = first[2].counts["kept_generated"] + first[2].counts["dropped_judge"]
        assert third[2].counts["judge_cache_hits"] == judged_before == 15


def test_a_changed_endpoint_reruns_the_model_stages_and_reuses_no_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIM_KEY", "sk-never-written-9f3a")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    seed_store(url, simple_threads(3))
    engine = make_engine(url)
    empty_evals = tmp_path / "evals.jsonl"
    empty_evals.write_text("")
    options = RunOptions(
        export=ExportOptions(classifier="keywords"), filter=FilterOptions(eval_set=empty_evals)
    )
    out = tmp_path / "run"
    config = SimConfig(ttft_ms=1, tokens_per_s=0, seed=9, structured_bias=0.9)
    with counting_sim(config) as (first_url, first):
        before = run_pipeline(sim_context(out, first_url), engine, options)
        again = run_pipeline(sim_context(out, first_url), engine, options)
    assert [r.status for r in before] == ["done"] * 4 and first.requests == 3 + 15
    assert [r.status for r in again] == ["skipped"] * 4
    with counting_sim(config) as (second_url, second):
        assert second_url != first_url
        after = run_pipeline(sim_context(out, second_url), engine, options)
    assert [r.status for r in after[:3]] == ["skipped", "done", "done"]
    generated, filtered = after[1].counts, after[2].counts
    assert generated["generator_cache_hits"] == 0 and generated["generator_requests"] == 3
    assert filtered["judge_cache_hits"] == 0 and filtered["judge_requests"] == 15
    assert second.requests == 3 + 15  # every answer asked again, of the new endpoint
    for stage in ("generate", "filter"):
        text = (out / stage / "manifest.json").read_text()
        assert json.loads(text)["llm"]["api_base"] == f"{second_url}/v1"
        assert "sk-never-written" not in text
    cached = [p.read_text() for p in (out / "cache").glob("*/*.json")]
    assert len(cached) == 2 * (3 + 15)
    assert not any("sk-never-written" in entry for entry in cached)
