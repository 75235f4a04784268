"""Generation: quota steering, variations on the simulator, and resuming after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from larrylab.db._engine import make_engine, upgrade
from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.export import ExportOptions, run_export
from larrylab.pipeline.generate import GenerateOptions, plan_jobs, run_generate
from larrylab.pipeline.llm import LLMOptions
from larrylab.pipeline.prompts import STRATEGIES
from larrylab.pipeline.records import read_records
from larrylab.sim import SimConfig
from tests.pipeline.factories import counting_sim, seed_store, sim_context, simple_threads

ZERO = dict.fromkeys(
    [
        "problem_clarification",
        "tta",
        "jtbd",
        "s_curve",
        "ackoff_dikw",
        "red_team",
        "error_recovery",
    ],
    0,
)


def _quotas(**values: int) -> dict[str, int]:
    return {**ZERO, **values}


def test_the_category_furthest_from_its_quota_goes_first() -> None:
    sources = [("p1", "problem_clarification"), ("p2", "problem_clarification"), ("t1", "tta")]
    jobs, skipped = plan_jobs(
        sources, GenerateOptions(quotas=_quotas(problem_clarification=12, tta=100))
    )
    assert [j.source for j in jobs] == ["t1", "p1", "p2"]
    assert skipped["tta"] == 0


def test_a_met_quota_gets_no_more_requests_unless_filling_past_it() -> None:
    sources = [("t1", "tta"), ("t2", "tta"), ("j1", "jtbd")]
    opts = GenerateOptions(quotas=_quotas(tta=10, jtbd=0), max_rounds=3)
    jobs, skipped = plan_jobs(sources, opts)
    # tta: 2 exported + 5 per request -> two requests reach 12 >= 10; jtbd's quota is met already.
    assert [(j.source, j.round) for j in jobs] == [("t1", 0), ("t2", 0)]
    assert skipped == {**ZERO, "tta": 4, "jtbd": 3}
    filled, none_skipped = plan_jobs(
        sources, GenerateOptions(quotas=_quotas(tta=10), max_rounds=3, stop_at_quota=False)
    )
    assert len(filled) == 9 and sum(none_skipped.values()) == 0


def test_a_request_limit_is_spent_on_unmet_quotas_first() -> None:
    sources = [(f"p{i}", "problem_clarification") for i in range(5)] + [("e1", "error_recovery")]
    opts = GenerateOptions(quotas=_quotas(problem_clarification=10, error_recovery=100), limit=2)
    jobs, skipped = plan_jobs(sources, opts)
    assert [j.source for j in jobs] == ["e1", "p0"]
    assert skipped["problem_clarification"] == 4


def _exported(tmp_path: Path, n: int) -> Path:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    seed_store(url, simple_threads(n))
    ctx = PipelineContext(out=tmp_path / "run", llm=LLMOptions(), progress=False)
    run_export(ctx, make_engine(url), ExportOptions(classifier="keywords"))
    return ctx.out


def test_five_variations_per_thread_on_the_simulator(tmp_path: Path) -> None:
    out = _exported(tmp_path, 3)
    with counting_sim(SimConfig(ttft_ms=1, tokens_per_s=0, seed=2)) as (url, counter):
        ctx = sim_context(out, url)
        result = run_generate(ctx, GenerateOptions())
    records = list(read_records(out / "generate/records.jsonl"))
    assert counter.requests == 3 and result.status == "done"
    assert len(records) == 15 and result.counts["variations"] == 15
    sources = {r.id: r for r in read_records(out / "export/records.jsonl")}
    for r in records:
        source = sources[r.meta["source_record"]]
        assert r.id == f"{source.id}:{r.strategy}:0" and r.strategy in STRATEGIES
        assert r.source_thread_id == source.source_thread_id and r.category == source.category
        assert r.messages[0] == source.messages[0]  # Larry's system prompt is kept
        roles = [m["role"] for m in r.messages[1:]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and len(roles) >= 4
    quotas = {row["category"]: row for row in result.tables["quotas"]}
    assert quotas["problem_clarification"]["exported"] == 3
    assert quotas["problem_clarification"]["generated"] == 15
    assert quotas["problem_clarification"]["progress"] == "4%"


CLI = "from larrylab.cli._pipeline import pipeline_app; pipeline_app()"


def test_killed_generation_resumes_and_pays_only_for_the_rest(tmp_path: Path) -> None:
    out = _exported(tmp_path, 24)
    cache = out / "cache"
    config = SimConfig(latency_ms=150, latency_sigma=0, ttft_ms=1, tokens_per_s=0, seed=4)
    with counting_sim(config) as (url, counter):
        args = [
            sys.executable, "-c", CLI, "generate", "--out", str(out), "--concurrency", "2",
            "--model", "openai/gemini-2.5-flash", "--api-base", f"{url}/v1",
            "--api-key-env", "SIM_KEY", "--database-url", f"sqlite:///{tmp_path / 'store.db'}",
        ]  # fmt: skip
        env = {**os.environ, "SIM_KEY": "simulated"}
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while len(list(cache.glob("*/*.json"))) < 6:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        paid_before = counter.requests
        cached = len(list(cache.glob("*/*.json")))
        assert 6 <= cached < 24 and not (out / "generate/records.jsonl").exists()
        ctx = sim_context(out, url, concurrency=8)
        result = run_generate(ctx, GenerateOptions())
    assert result.counts["generator_cache_hits"] == cached
    assert result.counts["generator_requests"] == 24 - cached == counter.requests - paid_before
    assert paid_before <= cached + 2  # at most the requests in flight at the kill were lost
    assert len(list(read_records(out / "generate/records.jsonl"))) == 24 * 5
