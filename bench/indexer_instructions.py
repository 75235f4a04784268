"""The instructions the log indexer executes per stored request row: a count that repeats.

The indexer's CPU per row, timed live or in `store_write_cost.py`, moves by a tenth or more
between runs on these shared VMs, as much as most changes to it save. Valgrind's callgrind
counts the instructions a process executes instead: the same code on the same input gives
nearly the same count whatever else the machine is doing. (It does not see the kernel's side:
system calls such as the WAL's page writes, nor cache misses.)

This script writes `--rows` records shaped like `bench/router_overhead.py`'s traffic
(`logwriter_cpu.record`, or `conversation_record` with `--traffic conversations`) to a journal
segment as the router does, then stores them as the indexer does (`SegmentReader.read_rows`,
`BatchStore.write_rows` in batches of `--batch-size`, the cyclic collector paused per batch) in
a fresh SQLite store through the indexer's engine (`make_engine(bulk_writer=True)`). The first
batch warms up (statements prepared, caches filled); the others run inside one
`functools.reduce` call, which callgrind is told to count alone. Run it on two checkouts to
compare them:

    python bench/indexer_instructions.py [--rows 15000] [--traffic branching]
        [--out bench/results/indexer_instructions.json]

It re-runs itself under `valgrind --tool=callgrind` (Debian's `valgrind`), about 60 s for
15,000 rows, and reports instructions per stored row, with the CPU seconds per row of a plain
run beside them for scale.
"""

from __future__ import annotations

import argparse
import functools
import gc
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from logwriter_cpu import conversation_record, record
from router_overhead import git_state, record_run

from larrylab.db._engine import make_engine, upgrade
from larrylab.requestlog import _journal as journal
from larrylab.requestlog._indexer import collector_paused
from larrylab.requestlog._journal import SegmentReader
from larrylab.requestlog._spill import Quarantine
from larrylab.requestlog._store import BatchStore

TRAFFIC = {"branching": record, "conversations": conversation_record}
MARKER = "functools_reduce"  # the C function the measured batches run inside


def store(rows: int, batch_size: int, traffic: str) -> tuple[int, float]:
    """Journal `rows` records and store them as the indexer does; returns the rows measured
    (all but the first batch) and their process CPU seconds."""
    make = TRAFFIC[traffic]
    with tempfile.TemporaryDirectory(prefix="larrylab-instr-") as tmp_s:
        tmp = Path(tmp_s)
        segment = tmp / "00000001.jsonl"
        segment.write_bytes(journal.header() + journal.encode([make(i) for i in range(rows)]))
        url = f"sqlite:///{tmp / 'larrylab.db'}"
        upgrade(url)
        engine = make_engine(url, pool_size=1, bulk_writer=True)
        batch_store = BatchStore(engine, Quarantine(tmp / "spill" / "quarantine"))
        reader = SegmentReader(segment)
        first, offset = reader.read_rows(0, batch_size)
        batch_store.write_rows(first)
        at = [offset]

        def one_batch(_: Any, __: int) -> None:
            with collector_paused():  # as the indexer stores a batch
                batch, at[0] = reader.read_rows(at[0], batch_size)
                batch_store.write_rows(batch)
                del batch

        batches = (rows - len(first)) // batch_size
        gc.collect()
        cpu0 = time.process_time()
        functools.reduce(one_batch, range(batches), None)
        cpu = time.process_time() - cpu0
        engine.dispose()
    return batches * batch_size, cpu


def under_callgrind(args: argparse.Namespace) -> int:
    """Instructions callgrind counted inside the measured batches."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        sys.exit("indexer_instructions: valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="larrylab-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            valgrind,
            "--tool=callgrind",
            "--collect-atstart=no",
            f"--toggle-collect={MARKER}",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--inner",
            f"--rows={args.rows}",
            f"--batch-size={args.batch_size}",
            f"--traffic={args.traffic}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = done.stderr[-2000:]
            sys.exit(f"indexer_instructions: the run under callgrind failed:\n{tail}")
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            sys.exit("indexer_instructions: callgrind reported no instruction count")
        return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=15_000)
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--traffic", choices=sorted(TRAFFIC), default="branching")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rows < 2 * args.batch_size:
        ap.error("--rows must hold at least two batches (the first one warms up)")
    if args.inner:
        store(args.rows, args.batch_size, args.traffic)
        return
    measured, cpu = store(args.rows, args.batch_size, args.traffic)
    instructions = under_callgrind(args)
    result = {
        "traffic": args.traffic,
        "rows_measured": measured,
        "batch_size": args.batch_size,
        "instructions_per_row": round(instructions / measured),
        "cpu_us_per_row_plain_run": round(cpu / measured * 1e6, 2),
        "git": git_state(),
        "python": sys.version.split()[0],
        "sqlite": __import__("sqlite3").sqlite_version,
        "machine": platform.platform(),
    }
    record_run(result, args.out)


if __name__ == "__main__":
    main()
