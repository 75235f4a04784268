"""Generation: quota steering, variations on the simulator, resuming after a kill, and
decontamination before anything is paid for."""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

import pytest

from larrylab.db._engine import make_engine, upgrade
from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.export import ExportOptions, run_export
from larrylab.pipeline.generate import GenerateOptions, plan_jobs, run_generate
from larrylab.pipeline.llm import LLMOptions
from larrylab.pipeline.prompts import STRATEGIES
from larrylab.pipeline.records import read_records
from larrylab.sim import SimConfig
from tests.pipeline.factories import (
    ScriptedCompleter,
    ThreadSpec,
    counting_sim,
    seed_store,
    sim_context,
    simple_threads,
)

# Eval item pc-01 of the built-in held-out set, reworded (no 13-gram in common with it).
LEAKED = (
    "Hello Larry. Our team would like to build an app that lets nurses swap their shifts. "
    "Could you help us plan the features?"
)

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


def _exported(tmp_path: Path, n: int, extra: list[ThreadSpec] | None = None) -> Path:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    seed_store(url, simple_threads(n) + (extra or []))
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


def test_a_contaminated_exported_thread_gets_no_request_and_no_variations(tmp_path: Path) -> None:
    leak = ThreadSpec(
        id="leak",
        users=[LEAKED],
        replies=["Before any features: who exactly struggles with shift swaps today, and how?"],
    )
    out = _exported(tmp_path, 2, [leak])
    exported = list(read_records(out / "export/records.jsonl"))
    leaked = next(r.id for r in exported if "nurses swap" in r.text())
    with counting_sim(SimConfig(ttft_ms=1, tokens_per_s=0, seed=2)) as (url, counter):
        result = run_generate(sim_context(out, url), GenerateOptions())
    assert counter.requests == 2 and result.status == "done"  # nothing asked for the leak
    c = result.counts
    assert (c["exported"], c["requests_planned"], c["variations"]) == (3, 2, 10)
    assert c["dropped_contaminated"] == c["contaminated_export"] == 1
    records = list(read_records(out / "generate/records.jsonl"))
    assert len(records) == 10 and all(r.meta["source_record"] != leaked for r in records)
    rows = [json.loads(line) for line in (out / "generate/dropped.jsonl").read_text().splitlines()]
    assert [(r["step"], r["record"]["id"]) for r in rows] == [("contaminated", leaked)]
    assert rows[0]["reason"].startswith("contaminated: near-duplicate of eval item pc-01 (jaccard")
    manifest = json.loads((out / "generate/manifest.json").read_text())
    assert manifest["contaminated"] == [
        {"record": leaked, "origin": "export", "reason": rows[0]["reason"]}
    ]
    assert manifest["inputs"]["eval_set"]["items"] > 100
    quotas = {row["category"]: row for row in result.tables["quotas"]}
    assert sum(row["exported"] for row in quotas.values()) == 2


def _variation(user: str) -> dict[str, object]:
    reply = "What did the people you interviewed say when you asked them about it last week?"
    return {
        "setting": "a hospital ward, a head nurse",
        "turns": [
            {"user": user, "assistant": reply},
            {"user": "We have not asked anyone yet, to be honest.", "assistant": reply},
        ],
    }


def test_a_variation_that_repeats_an_eval_item_is_dropped(tmp_path: Path) -> None:
    out = _exported(tmp_path, 1)
    answer = {
        s: _variation(f"A fresh {s} question about farming cooperatives?") for s in STRATEGIES
    }
    answer["objection"] = _variation(LEAKED)
    completer = ScriptedCompleter([json.dumps(answer)])
    ctx = PipelineContext(
        out=out, llm=LLMOptions(model="openai/scripted"), completer=completer, progress=False
    )
    result = run_generate(ctx, GenerateOptions())
    assert len(completer.calls) == 1
    assert result.counts["variations"] == 4
    assert result.counts["dropped_contaminated"] == result.counts["contaminated_generated"] == 1
    kept = [r.strategy for r in read_records(out / "generate/records.jsonl")]
    assert "objection" not in kept and len(kept) == 4
    (row,) = [json.loads(x) for x in (out / "generate/dropped.jsonl").read_text().splitlines()]
    assert row["record"]["strategy"] == "objection" and "eval item pc-01" in row["reason"]


class SlowImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports module `name` as a stand-in that takes `delay` seconds to import and forwards
    every attribute to the real module."""

    def __init__(self, name: str, real: ModuleType, delay: float) -> None:
        self.name, self.real, self.delay = name, real, delay
        self.imports = 0

    def find_spec(self, fullname: str, path: object, target: object = None) -> ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname == self.name else None

    def create_module(self, spec: ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        self.imports += 1
        time.sleep(self.delay)
        module.__dict__["__getattr__"] = lambda attr: getattr(self.real, attr)


def test_stage_seconds_leave_out_library_import_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import litellm

    out = _exported(tmp_path, 2)
    slow = SlowImport("litellm", litellm, delay=2.0)
    monkeypatch.delitem(sys.modules, "litellm")
    monkeypatch.setattr(sys, "meta_path", [slow, *sys.meta_path])
    with counting_sim(SimConfig(ttft_ms=1, tokens_per_s=0, seed=2)) as (url, counter):
        t0 = time.perf_counter()
        result = run_generate(sim_context(out, url), GenerateOptions())
        wall = time.perf_counter() - t0
    assert slow.imports == 1 and counter.requests == 2 and wall >= 2.0
    timings = result.manifest["timings"]
    assert timings["seconds"] < 1.0  # the stage's own work: two requests on a fast simulator
    assert timings["import_seconds"] >= 2.0
    assert "import" in timings["covers"]
    assert result.manifest["variations_per_s"] > 10 / 1.0
