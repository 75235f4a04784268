"""Generation throughput: variations per second against a simulator with 500 ms latency.

Builds a store of N rated threads, exports them, starts a simulated upstream in its own
process (500 ms latency before each reply, fixed; decode instant unless told otherwise) and
times `generate` at the default concurrency with an empty request cache, then again with the
cache full (a resumed run). litellm is imported and warmed before the clock starts. Usage:

    python bench/pipeline_generation.py [--threads 200] [--concurrency 16,32]
        [--latency-ms 500] [--ttft-ms 0] [--tokens-per-s 0]

Appends a run to bench/results/pipeline_generation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_memory import build_store, start_sim

from larrylab.db._engine import make_engine
from larrylab.pipeline.context import PipelineContext
from larrylab.pipeline.export import ExportOptions, run_export
from larrylab.pipeline.generate import GenerateOptions, run_generate
from larrylab.pipeline.llm import DEFAULT_CONCURRENCY, LLMOptions

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline_generation.json"


def _warm(ctx: PipelineContext) -> None:
    client = ctx.client()
    asyncio.run(
        client.structured(
            name="warm",
            messages=[{"role": "user", "content": "warm up"}],
            schema={"type": "object", "properties": {"ok": {"type": "boolean"}}},
        )
    )


def _time_generate(ctx: PipelineContext) -> dict[str, Any]:
    t0, cpu0 = time.perf_counter(), time.process_time()
    result = run_generate(ctx, GenerateOptions(stop_at_quota=False))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    c = result.counts
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "requests": c.get("generator_requests", 0),
        "cache_hits": c.get("generator_cache_hits", 0),
        "variations": c.get("variations", 0),
        "variations_per_s": round(c.get("variations", 0) / seconds, 1),
        "cpu_ms_per_request": round(1000 * cpu / max(c.get("requests_planned", 1), 1), 2),
        "status": result.status,
    }


def bench(args: Any, concurrency: int, out: Path, sim_url: str) -> dict[str, Any]:
    """One measurement at `concurrency`: a cold run, then a resumed run on a full cache."""
    os.environ.setdefault("SIM_KEY", "simulated")
    llm = LLMOptions(
        model="openai/gemini-2.5-flash",
        api_base=f"{sim_url}/v1",
        api_key_env="SIM_KEY",
        concurrency=concurrency,
    )
    ctx = PipelineContext(out=out, llm=llm, progress=False)
    shutil.rmtree(out / "cache", ignore_errors=True)
    _warm(ctx)
    cold = _time_generate(ctx)
    cached = _time_generate(ctx)
    return {"concurrency": concurrency, "cold": cold, "resumed_from_cache": cached}


def main() -> None:
    """Measure and append the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--concurrency", default=str(DEFAULT_CONCURRENCY))
    parser.add_argument("--latency-ms", type=float, default=500)
    parser.add_argument("--ttft-ms", type=float, default=0)
    parser.add_argument("--tokens-per-s", type=float, default=0)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pipeline-generation-") as tmp:
        store = f"sqlite:///{tmp}/store.db"
        build_store(store, args.threads)
        out = Path(tmp) / "run"
        export_ctx = PipelineContext(out=out, llm=LLMOptions(), progress=False)
        exported = run_export(export_ctx, make_engine(store), ExportOptions(classifier="keywords"))
        sim, sim_url = start_sim(
            latency_ms=args.latency_ms,
            ttft_ms=args.ttft_ms,
            tokens_per_s=args.tokens_per_s,
            bias=0.0,
        )
        try:
            runs = [bench(args, int(c), out, sim_url) for c in str(args.concurrency).split(",")]
        finally:
            sim.terminate()
            sim.wait(30)
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
        },
        "simulator": {
            "process": "separate",
            "latency_ms": args.latency_ms,
            "latency_sigma": 0,
            "ttft_ms": args.ttft_ms,
            "tokens_per_s": args.tokens_per_s,
        },
        "exported_threads": exported.counts.get("records", 0),
        "runs": runs,
    }
    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps([*history, record], indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
