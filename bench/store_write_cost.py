"""What storing one logged request costs the indexer as the store grows, and why.

Writes `--rows` records shaped like `bench/router_overhead.py`'s traffic
(`logwriter_cpu.record`: 256 threads, a new user turn and a reply per request, a 2-arm
experiment) through `BatchStore` in batches of `--batch-sizes`, into a fresh SQLite store, and
reports per fifth of the rows: CPU and wall milliseconds per row, and the bytes the process
wrote and read per row (/proc/self/io: WAL appends, checkpoints, pages read back). Engines:
`plain` (`make_engine`, as the router and the thread writer use it) and `bulk`
(`make_engine(bulk_writer=True)`, the indexer's: a larger page cache, rarer checkpoints).
Sources: `journal` (the default, the indexer's way: each batch is appended to a journal segment
as the router does, untimed, then read back as rows and stored with the cyclic garbage collector
paused) and `records` (`RequestRecord` objects through `BatchStore.write`, as the thread writer
does). Traffic: `branching` (the default, as above: each request of a thread resends the same 5
messages with a new last turn, so every thread gathers thousands of branches) and
`conversations` (`logwriter_cpu.conversation_record`: conversations of 8 turns, each request
resending the conversation so far). Message keys: `unique` (the store's schema: unique
(thread_id, id)) and `rowid` (measured only, never shipped: the scratch store's message table
rebuilt keyed by row id with a plain thread_id index, inserts without a conflict clause,
duplicates left to the indexer's caches). Run it on two checkouts to compare them:

    python bench/store_write_cost.py [--rows 150000] [--batch-sizes 1000,5000]
        [--engines plain,bulk] [--source journal] [--traffic branching]
        [--message-keys unique] [--out bench/results/store_write_cost.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from logwriter_cpu import conversation_record, record

import larrylab
from larrylab.db._engine import make_engine, upgrade
from larrylab.requestlog import _journal as journal
from larrylab.requestlog._indexer import collector_paused
from larrylab.requestlog._spill import Quarantine
from larrylab.requestlog._store import BatchStore

HEADER = journal.header()
TRAFFIC = {"branching": record, "conversations": conversation_record}
ROWID_MESSAGE_TABLE = """
DROP TABLE message;
CREATE TABLE message (
    id VARCHAR(64) NOT NULL, thread_id VARCHAR(256) NOT NULL, parent_id VARCHAR(64),
    depth INTEGER NOT NULL, role VARCHAR(20) NOT NULL, body TEXT NOT NULL,
    created_at DATETIME NOT NULL
);
CREATE INDEX ix_message_thread_id ON message (thread_id);
"""


def _io() -> dict[str, int]:
    lines = Path("/proc/self/io").read_text().splitlines()
    return {k: int(v) for k, v in (line.split(": ") for line in lines)}


def _rowid_keyed(url: str, store: BatchStore) -> None:
    """Rebuild the scratch store's message table keyed by row id (`--message-keys rowid`)."""
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    conn.executescript(ROWID_MESSAGE_TABLE)
    conn.close()
    sql = store._sql
    plain = sql.message.replace(" ON CONFLICT (thread_id, id) DO NOTHING", "")
    assert plain != sql.message
    store._sql = dataclasses.replace(sql, message=plain)


def measure(
    rows: int,
    batch_size: int,
    bulk: bool,
    source: str,
    traffic: str = "branching",
    message_key: str = "unique",
) -> list[dict[str, float]]:
    """Per fifth of `rows`: the rows stored before it, and its cost per row."""
    out = []
    make_record = TRAFFIC[traffic]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/store.db"
        upgrade(url)
        engine = make_engine(url, bulk_writer=True) if bulk else make_engine(url)
        store = BatchStore(engine, Quarantine(Path(tmp) / "quarantine"))
        if message_key == "rowid":
            _rowid_keyed(url, store)
        chunk = rows // 5
        for start in range(0, chunk * 5, chunk):
            cpu, wall, io, made = time.process_time(), time.perf_counter(), _io(), 0.0
            for b in range(start, start + chunk, batch_size):
                t = time.process_time()
                batch = [make_record(i) for i in range(b, min(b + batch_size, start + chunk))]
                if source == "journal":  # what the router does: append them to its journal
                    segment = Path(tmp) / f"{b:09d}.jsonl"
                    segment.write_bytes(HEADER + journal.encode(batch))
                made += time.process_time() - t  # making the records is not the store's cost
                if source == "records":
                    store.write(batch)
                    continue
                with collector_paused():  # what the indexer does: read and store the lines
                    lines, _ = journal.SegmentReader(segment).read_rows(0, batch_size)
                    store.write_rows(lines)
                    del lines
                segment.unlink()
            after = _io()
            out.append(
                {
                    "rows_before": start,
                    "cpu_ms_per_row": (time.process_time() - cpu - made) / chunk * 1000,
                    "wall_ms_per_row": (time.perf_counter() - wall - made) / chunk * 1000,
                    "kib_written_per_row": (after["wchar"] - io["wchar"]) / chunk / 1024,
                    "kib_read_per_row": (after["rchar"] - io["rchar"]) / chunk / 1024,
                }
            )
            print(f"  rows {start}-{start + chunk}: " + json.dumps(out[-1]), flush=True)
        out.append({"database_mb": Path(f"{tmp}/store.db").stat().st_size / 1e6})
        engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=150_000)
    ap.add_argument("--batch-sizes", default="1000,5000")
    ap.add_argument("--engines", default="plain,bulk")
    ap.add_argument(
        "--source",
        choices=("journal", "records"),
        default="journal",
        help="journal: the indexer's way (journal lines read back and stored as rows, the "
        "collector paused per batch); records: RequestRecord objects through BatchStore.write",
    )
    ap.add_argument("--traffic", default="branching", help="branching,conversations")
    ap.add_argument("--message-keys", default="unique", help="unique,rowid")
    ap.add_argument("--out", type=Path, default=Path("bench/results/store_write_cost.json"))
    args = ap.parse_args()
    if not set(args.traffic.split(",")) <= TRAFFIC.keys():
        ap.error(f"unknown traffic in {args.traffic!r}: use {', '.join(TRAFFIC)}")
    if not set(args.message_keys.split(",")) <= {"unique", "rowid"}:
        ap.error(f"unknown message key in {args.message_keys!r}: use unique, rowid")
    runs: dict[str, Any] = {}
    for traffic in args.traffic.split(","):
        for key in args.message_keys.split(","):
            for engine in args.engines.split(","):
                for size in (int(s) for s in args.batch_sizes.split(",")):
                    # The default traffic and key add nothing to the name.
                    name = f"{engine}/{size}"
                    name += "" if traffic == "branching" else f"/{traffic}"
                    name += "" if key == "unique" else f"/{key}"
                    print(name, flush=True)
                    runs[name] = measure(
                        args.rows, size, engine == "bulk", args.source, traffic, key
                    )
    root = Path(larrylab.__file__).resolve().parent
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root
    ).stdout.strip()
    summary = {
        "commit": commit,
        "checkout": str(root.parent),
        "python": platform.python_version(),
        "rows": args.rows,
        "source": args.source,
        "traffic": args.traffic,
        "message_keys": args.message_keys,
        "last_fifth_cpu_ms_per_row": {
            name: round(fifths[-2]["cpu_ms_per_row"], 4) for name, fifths in runs.items()
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["last_fifth_cpu_ms_per_row"], indent=2))


if __name__ == "__main__":
    main()
