"""The log writer's cost per request row, without HTTP around it.

Writes `--rows` records shaped like `bench/router_overhead.py`'s traffic (256 threads; a
6-message prompt whose last turn is new each time and a reply; a 2-arm experiment) through
a log writer into a fresh SQLite store that already holds 2,000 rows, and reports the CPU and
the wall time per row, for each batch size: `process` (`RequestJournal`, whose indexer's CPU,
read from /proc, is added; the CPU left in the router's own process is reported apart; the
thread writer, `thread`, was removed). Run it on two checkouts to
compare them:

    python bench/logwriter_cpu.py [--rows 20000] [--batch-sizes 200,1000] [--repeats 3]
        [--writers process] [--out bench/results/logwriter_cpu.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import larrylab
from larrylab.db._engine import make_engine, upgrade
from larrylab.requestlog import RequestJournal, RequestRecord

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
        from larrylab.router._ids import request_id
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
        protocol="openai",
        ineligible=None,
        stripped=False,
        created_at=now,
        finished_at=now,
        prompt=[{"role": r, "content": c.format(thread=thread, i=i)} for r, c in TURNS],
        reply={"role": "assistant", "content": REPLY},
    )


CONVERSATION_TURNS = 8


def conversation_record(i: int) -> RequestRecord:
    """One logged request of a coaching conversation: thread i % 256 holds conversations of
    `CONVERSATION_TURNS` turns one after another, each request resending the conversation so
    far (the replies as they were logged) with a new user turn, as chat clients do."""
    k, n = i % 256, i // 256
    number, turn = divmod(n, CONVERSATION_TURNS)
    thread = f"thread-{k:03d}-{number}"
    user = TURNS[3][1]
    prompt = [{"role": "system", "content": TURNS[0][1]}]
    for t in range(turn):
        prompt.append({"role": "user", "content": f"Turn {t} of {thread}: {user}"})
        prompt.append({"role": "assistant", "content": f"Reply {t}. {REPLY}"})
    prompt.append({"role": "user", "content": f"Turn {turn} of {thread}: {user}"})
    reply = {"role": "assistant", "content": f"Reply {turn}. {REPLY}"}
    return replace(record(i), thread_id=thread, prompt=prompt, reply=reply)


def _cpu_of(pid: int | None) -> float:
    """User+system CPU seconds of a live process (0 for None), from /proc."""
    if pid is None:
        return 0.0
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


async def _write(writer: Any, warm: list[RequestRecord], records: list[RequestRecord]) -> Any:
    """Write `warm`, then `records`; the CPU (own, writer process) and wall seconds of the
    second part only (a writer process has started and warmed up by then)."""
    await writer.start()
    for rec in warm:
        writer.submit_nowait(rec)
    await writer.flush()
    child = getattr(writer, "pid", None)
    c0, k0, t0 = time.process_time(), _cpu_of(child), time.perf_counter()
    for rec in records:
        writer.submit_nowait(rec)
    await writer.flush()
    own, kids, wall = time.process_time() - c0, _cpu_of(child) - k0, time.perf_counter() - t0
    await writer.close()
    return own, kids, wall


def _writer(kind: str, url: str, engine: Any, batch_size: int, spill: Path) -> Any:
    if kind != "process":
        raise SystemExit(f"writer {kind!r}: only `process` remains")
    return RequestJournal(
        url, batch_size=batch_size, journal_dir=spill / "journal", spill_dir=spill
    )


def measure(rows: int, batch_size: int, kind: str = "process") -> dict[str, float]:
    """CPU and wall milliseconds per row for `rows` records after 2,000 warm-up rows: in the
    router's process (`router_cpu_ms_per_row`) and in all (`cpu_ms_per_row`, which adds the
    writer process when `kind` is "process")."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/store.db"
        upgrade(url)
        engine = make_engine(url)
        warm = [record(i) for i in range(2000)]
        records = [record(i) for i in range(2000, 2000 + rows)]
        writer = _writer(kind, url, engine, batch_size, Path(tmp))
        own, kids, wall = asyncio.run(_write(writer, warm, records))
        engine.dispose()
    return {
        "cpu_ms_per_row": (own + kids) / rows * 1000,
        "router_cpu_ms_per_row": own / rows * 1000,
        "wall_ms_per_row": wall / rows * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--batch-sizes", default="200,1000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--writers", default="process", help="process (the only writer left)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/logwriter_cpu.json"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    kinds = [k.strip() for k in args.writers.split(",")]
    cells = [(k, s) for k in kinds for s in sizes]
    name = {
        cell: (str(cell[1]) if kinds == ["thread"] else f"{cell[0]}/{cell[1]}") for cell in cells
    }
    runs: dict[str, list[dict[str, float]]] = {name[c]: [] for c in cells}
    for rep in range(args.repeats):
        for cell in cells:
            runs[name[cell]].append(measure(args.rows, cell[1], cell[0]))
            got = runs[name[cell]][-1]
            print(
                f"run {rep + 1}, {name[cell]}: {got['cpu_ms_per_row']:.4f} ms CPU "
                f"({got['router_cpu_ms_per_row']:.4f} in the router's process), "
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
        "median_router_cpu_ms_per_row": {
            s: round(statistics.median(r["router_cpu_ms_per_row"] for r in v), 4)
            for s, v in runs.items()
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
