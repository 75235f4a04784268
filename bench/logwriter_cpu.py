"""The log writer's cost per request row, without HTTP around it.

Writes `--rows` records shaped like `bench/router_overhead.py`'s traffic (256 threads; a
6-message prompt whose last turn is new each time and a reply; a 2-arm experiment) through
`LogWriter` into a fresh SQLite store that already holds 2,000 rows, and reports the process CPU
and the wall time per row, for each batch size. Run it on two checkouts to compare them:

    python bench/logwriter_cpu.py [--rows 20000] [--batch-sizes 200,1000] [--repeats 3]
        [--out bench/results/logwriter_cpu.json]

In the router, the SQLite part of this CPU runs with the GIL released; the rest holds the GIL
the event loop needs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import larrylab
from larrylab.platform.db import make_engine, upgrade
from larrylab.platform.logwriter import LogWriter, RequestRecord

TURNS = (
    ("system", "You are Larry, a coach for the PWS method. Ask one question at a time."),
    ("user", "Our team ({thread}) wants to cut food waste in school cafeterias. Worth solving?"),
    ("assistant", "Maybe. Who feels this problem most, and how do you know? Describe one person."),
    ("user", "Cafeteria staff throw away a third of the lunches every day; it frustrates them."),
    ("assistant", "Good evidence. Is it pervasive, urgent, and would they pay to fix it?"),
    ("user", "It happens in every school we visited. Request {i}: what should we test next?"),
)
REPLY = "Test whether staff would change the order quantities if they saw yesterday's waste. " * 4


def new_id() -> str:
    """The router's request id (random ids on a checkout from before `platform.ids`)."""
    try:
        from larrylab.platform.ids import request_id
    except ImportError:
        import uuid

        return f"chatcmpl-{uuid.uuid4().hex}"
    return request_id()


def record(i: int) -> RequestRecord:
    """One logged request of thread i % 256."""
    thread = f"thread-{i % 256}"
    now = datetime.now(UTC)
    latency = 1.0 + (i * 7919 % 1000) / 1000
    return RequestRecord(
        id=new_id(),
        thread_id=thread,
        unit_source="user",
        route="larry",
        experiment="larry-ab",
        arm="a" if i % 2 else "b",
        model="sim-a" if i % 2 else "sim-b",
        upstream_model="sim",
        stream=False,
        status="ok",
        http_status=200,
        error_class=None,
        error_message=None,
        fallback_from=None,
        latency_ms=latency,
        ttft_ms=latency,
        upstream_ms=0.4,
        overhead_ms=latency - 0.4,
        prompt_tokens=120,
        completion_tokens=60,
        created_at=now,
        finished_at=now,
        prompt=[{"role": r, "content": c.format(thread=thread, i=i)} for r, c in TURNS],
        reply={"role": "assistant", "content": REPLY},
    )


async def _write(writer: LogWriter, records: list[RequestRecord]) -> None:
    await writer.start()
    for rec in records:
        writer.submit_nowait(rec)
    await writer.close()


def measure(rows: int, batch_size: int) -> dict[str, float]:
    """CPU and wall milliseconds per row for `rows` records after 2,000 warm-up rows."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/store.db"
        upgrade(url)
        engine = make_engine(url)
        warm = [record(i) for i in range(2000)]
        asyncio.run(_write(LogWriter(engine, batch_size=batch_size, spill_dir=Path(tmp)), warm))
        records = [record(i) for i in range(2000, 2000 + rows)]
        writer = LogWriter(engine, batch_size=batch_size, spill_dir=Path(tmp))
        c0, t0 = time.process_time(), time.perf_counter()
        asyncio.run(_write(writer, records))
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        engine.dispose()
    return {"cpu_ms_per_row": cpu / rows * 1000, "wall_ms_per_row": wall / rows * 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--batch-sizes", default="200,1000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("bench/results/logwriter_cpu.json"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    runs: dict[str, list[dict[str, float]]] = {str(s): [] for s in sizes}
    for rep in range(args.repeats):
        for size in sizes:
            runs[str(size)].append(measure(args.rows, size))
            got = runs[str(size)][-1]
            print(
                f"run {rep + 1}, batch {size}: {got['cpu_ms_per_row']:.4f} ms CPU, "
                f"{got['wall_ms_per_row']:.4f} ms wall per row"
            )
    root = Path(larrylab.__file__).resolve().parent
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root
    ).stdout.strip()
    summary: dict[str, Any] = {
        "commit": commit,
        "checkout": str(root.parent),
        "python": platform.python_version(),
        "rows": args.rows,
        "median_cpu_ms_per_row": {
            s: round(statistics.median(r["cpu_ms_per_row"] for r in v), 4) for s, v in runs.items()
        },
        "median_wall_ms_per_row": {
            s: round(statistics.median(r["wall_ms_per_row"] for r in v), 4) for s, v in runs.items()
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
