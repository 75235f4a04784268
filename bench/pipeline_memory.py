"""Peak memory of the data pipeline on a store of 10,000 rated threads.

Builds a SQLite store of N simulated workshop threads (3 turns each, one rating per thread,
most of them 4-5 stars), starts a simulated upstream (no latency, instant decode, a judge that
mostly approves) in its own process, then runs each stage (export, generate, filter, dataset)
in a fresh Python process that reports its peak RSS: after imports (the baseline) and at the
end of the stage. Usage:

    python bench/pipeline_memory.py [--threads 10000] [--concurrency 16] [--tracemalloc]

Writes bench/results/pipeline_memory.json (or --output) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from larrylab.db._engine import make_engine, upgrade
from larrylab.db._schema import Feedback
from larrylab.demo.learners import FOLLOW_UPS, OPENERS
from larrylab.localproc import free_port
from larrylab.pipeline.llm import DEFAULT_CONCURRENCY
from larrylab.requestlog import RequestJournal, RequestRecord
from larrylab.sim.corpus import PWS_REPLIES

RESULTS = Path(__file__).resolve().parent / "results"
SYSTEM = (
    "You are Larry, a Socratic coach teaching the Problems Worth Solving methodology. "
    "Ask before you tell; never jump to solutions."
)
COMPANIES = ("a clinic", "a bakery", "a logistics firm", "a school", "a bank", "a farm co-op")


def _thread(i: int, rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    category = list(OPENERS)[i % len(OPENERS)]
    context = f" I work at {rng.choice(COMPANIES)} number {i} with {rng.randint(3, 900)} staff."
    users = [rng.choice(OPENERS[category]) + context]
    users += [rng.choice(FOLLOW_UPS) + f" (case {i}, step {k})" for k in range(1, 3)]
    replies = [rng.choice(PWS_REPLIES[category]) for _ in users]
    return f"bench-{category}-{i:06d}", list(zip(users, replies, strict=True))


def build_store(url: str, threads: int, *, seed: int = 1) -> float:
    """Fill a fresh store with `threads` rated threads; returns the seconds it took."""
    t0 = time.perf_counter()
    upgrade(url)
    engine = make_engine(url)
    rng = random.Random(seed)
    start = datetime(2025, 6, 1, tzinfo=UTC)
    ratings: list[dict[str, Any]] = []

    async def write() -> None:
        home = Path(tempfile.mkdtemp())
        writer = RequestJournal(
            url, journal_dir=home / "journal", spill_dir=home, batch_size=500, flush_interval_s=0.05
        )
        await writer.start()
        for i in range(threads):
            thread_id, turns = _thread(i, rng)
            messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
            for k, (user, reply) in enumerate(turns):
                messages.append({"role": "user", "content": user})
                at = start + timedelta(seconds=i * 10 + k)
                rid = f"{thread_id}-{k}"
                await writer.submit(_record(rid, thread_id, list(messages), reply, at))
                messages.append({"role": "assistant", "content": reply})
            score = rng.choices((1, 2, 3, 4, 5), weights=(2, 3, 10, 35, 50))[0]
            ratings.append(_rating(f"{thread_id}-2", thread_id, score, start))
        await writer.close()

    asyncio.run(write())
    with engine.begin() as conn:
        conn.execute(insert(Feedback.__table__), ratings)  # type: ignore[attr-defined]
    return time.perf_counter() - t0


def _record(rid: str, thread: str, prompt: list[dict[str, Any]], reply: str, at: datetime) -> Any:
    return RequestRecord(
        id=rid, thread_id=thread, unit_source="user", route="larry", experiment=None, arm=None,
        model="gemini-flash", upstream_model="gemini-2.5-flash", stream=True, status="ok",
        http_status=200, error_class=None, error_message=None, fallback_from=None,
        latency_ms=900.0, ttft_ms=300.0, upstream_ms=None, overhead_ms=None, prompt_tokens=50,
        completion_tokens=60, protocol="openai", ineligible=None,
        stripped=False, created_at=at, finished_at=at, prompt=prompt,
        reply={"role": "assistant", "content": reply},
    )  # fmt: skip


def _rating(rid: str, thread: str, score: int, at: datetime) -> dict[str, Any]:
    return {
        "target": f"request:{rid}", "request_id": rid, "thread_id": thread, "experiment": None,
        "arm": None, "score": score, "comment": None, "source": "bench", "created_at": at,
        "updated_at": at,
    }  # fmt: skip


def start_sim(*, latency_ms: float, ttft_ms: float, tokens_per_s: float, bias: float) -> Any:
    """A simulated upstream in its own process; returns (process, base URL)."""
    port = free_port()
    code = (
        "from larrylab.sim import SimConfig, serve; "
        f"serve(SimConfig(latency_ms={latency_ms}, latency_sigma=0, ttft_ms={ttft_ms}, "
        f"tokens_per_s={tokens_per_s}, seed=1, structured_bias={bias}, label='bench'), "
        f"port={port})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the simulator did not start")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(stage: str, out: Path, store: str, sim_url: str, concurrency: int, trace: bool) -> None:
    """Run one stage in this process and print its memory and time as JSON."""
    import datasets  # noqa: F401  (libraries are imported before the baseline is read)
    import litellm  # noqa: F401

    from larrylab.pipeline.context import PipelineContext
    from larrylab.pipeline.dataset import DatasetOptions, run_dataset
    from larrylab.pipeline.export import ExportOptions, run_export
    from larrylab.pipeline.filter import FilterOptions, run_filter
    from larrylab.pipeline.generate import GenerateOptions, run_generate
    from larrylab.pipeline.llm import LLMOptions

    os.environ.setdefault("SIM_KEY", "simulated")
    llm = LLMOptions(
        model="openai/gemini-2.5-flash",
        api_base=f"{sim_url}/v1",
        api_key_env="SIM_KEY",
        concurrency=concurrency,
    )
    ctx = PipelineContext(out=out, llm=llm, progress=False)
    baseline = _rss_mb()
    if trace:
        tracemalloc.start()
    t0, cpu0 = time.perf_counter(), time.process_time()
    if stage == "export":
        result = run_export(ctx, make_engine(store), ExportOptions(classifier="llm"))
    elif stage == "generate":
        # Quotas of the seed are met long before 10,000 threads: fill past them to load all.
        result = run_generate(ctx, GenerateOptions(stop_at_quota=False))
    elif stage == "filter":
        result = run_filter(ctx, FilterOptions())
    else:
        result = run_dataset(ctx, DatasetOptions())
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    report = {
        "stage": stage,
        "status": result.status,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        "tracemalloc_peak_mb": round(traced, 1) if traced is not None else None,
        "counts": result.counts,
    }
    print("RESULT " + json.dumps(report), flush=True)


def main() -> None:
    """Build the store, start the simulator, run every stage in its own process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS / "pipeline_memory.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--sim-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.out, args.store, args.sim_url, args.concurrency, args.tracemalloc)
        return
    with tempfile.TemporaryDirectory(prefix="pipeline-memory-") as tmp:
        store = f"sqlite:///{tmp}/store.db"
        build_s = build_store(store, args.threads)
        print(f"store with {args.threads} threads built in {build_s:.1f} s", flush=True)
        sim, sim_url = start_sim(latency_ms=0, ttft_ms=0, tokens_per_s=0, bias=0.8)
        stages = []
        try:
            for stage in ("export", "generate", "filter", "dataset"):
                stages.append(_run_worker(stage, Path(tmp) / "run", store, sim_url, args))
                print(json.dumps(stages[-1]), flush=True)
        finally:
            sim.terminate()
            sim.wait(30)
    _write(args, build_s, stages)


def _run_worker(stage: str, out: Path, store: str, sim_url: str, args: Any) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--worker", stage, "--out", str(out), "--store", store,
        "--sim-url", sim_url, "--concurrency", str(args.concurrency),
        *(["--tracemalloc"] if args.tracemalloc else []),
    ]  # fmt: skip
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    raise RuntimeError(f"stage {stage} failed:\n{done.stderr[-3000:]}")


def _write(args: Any, build_s: float, stages: list[dict[str, Any]]) -> None:
    RESULTS.mkdir(exist_ok=True)
    data = {
        "benchmark": "pipeline_memory",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "threads": args.threads,
        "concurrency": args.concurrency,
        "store_build_seconds": round(build_s, 1),
        "simulator": "separate process, latency 0, instant decode, structured_bias 0.8",
        "stages": stages,
    }
    args.output.write_text(json.dumps(data, indent=2) + "\n")
    for s in stages:
        print(
            f"{s['stage']:9} {s['seconds']:8.1f} s  cpu {s['cpu_seconds']:8.1f} s  "
            f"baseline {s['baseline_rss_mb']:7.1f} MB  peak {s['peak_rss_mb']:7.1f} MB  "
            f"tracemalloc {s['tracemalloc_peak_mb']}"
        )


if __name__ == "__main__":
    main()
