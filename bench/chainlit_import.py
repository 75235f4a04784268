"""How fast `larrylab import chainlit` brings Larry's Chainlit history into the store.

Creates a Chainlit database (`chainlit_bench_<random>`, Chainlit's documented schema) on the
PostgreSQL server `--postgres`, writes `--threads` threads of `--turns` turns into it by SQL (a
user message, a `run` step and an assistant message per turn, one thumb per thread, a bot per
thread from Larry's chat profiles) and one detailed rating record per thread into a JSON-lines
file, then imports it (`larrylab.importers.import_chainlit`, as the command does) into a fresh
store: SQLite, PostgreSQL (`larrylab_bench_<random>` on the same server), or both. Reports the
threads per second of the first import and the seconds of a rerun that finds nothing new, for
each thread count of `--threads` (a larger one shows whether the rate holds as the store grows).
Target: at least 500 threads/s.

    python bench/chainlit_import.py [--threads 2000,20000] [--turns 3]
        [--stores sqlite,postgresql]
        [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
        [--out bench/results/chainlit_import.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from larrylab.db import make_engine, normalize_url, upgrade
from larrylab.importers import ImportOptions, import_chainlit, open_source

T0 = datetime(2026, 10, 1, 8, 0)
BOTS = ("lawrence", "tta", "jtbd", "scurve", "redteam", "ackoff", "bono", "knowns", "domain")
TARGET_THREADS_PER_S = 500.0
SCHEMA = (
    'CREATE TABLE users ("id" UUID PRIMARY KEY, "identifier" TEXT NOT NULL UNIQUE, '
    '"metadata" JSONB NOT NULL, "createdAt" TEXT)',
    'CREATE TABLE threads ("id" UUID PRIMARY KEY, "createdAt" TEXT, "name" TEXT, "userId" UUID, '
    '"userIdentifier" TEXT, "tags" TEXT[], "metadata" JSONB, FOREIGN KEY ("userId") REFERENCES '
    'users("id") ON DELETE CASCADE)',
    'CREATE TABLE steps ("id" UUID PRIMARY KEY, "name" TEXT NOT NULL, "type" TEXT NOT NULL, '
    '"threadId" UUID NOT NULL, "parentId" UUID, "streaming" BOOLEAN NOT NULL, '
    '"waitForAnswer" BOOLEAN, "isError" BOOLEAN, "metadata" JSONB, "tags" TEXT[], '
    '"input" TEXT, "output" TEXT, "createdAt" TEXT, "command" TEXT, "start" TEXT, "end" TEXT, '
    '"generation" JSONB, "showInput" TEXT, "language" TEXT, "indent" INT, '
    '"defaultOpen" BOOLEAN, "modes" JSONB, FOREIGN KEY ("threadId") REFERENCES threads("id") '
    "ON DELETE CASCADE)",
    'CREATE TABLE elements ("id" UUID PRIMARY KEY, "threadId" UUID, "type" TEXT, "url" TEXT, '
    '"chainlitKey" TEXT, "name" TEXT NOT NULL, "display" TEXT, "objectKey" TEXT, "size" TEXT, '
    '"page" INT, "language" TEXT, "forId" UUID, "mime" TEXT, "props" JSONB, "autoPlay" BOOLEAN, '
    '"playerConfig" JSONB, FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE)',
    'CREATE TABLE feedbacks ("id" UUID PRIMARY KEY, "forId" UUID NOT NULL, '
    '"threadId" UUID NOT NULL, "value" INT NOT NULL, "comment" TEXT, FOREIGN KEY ("threadId") '
    'REFERENCES threads("id") ON DELETE CASCADE)',
)


def _stamp(at: datetime) -> str:
    return at.isoformat() + "Z"


def _database(server: str, prefix: str) -> str:
    """A new empty database on `server`; its URL."""
    url = make_url(normalize_url(server))
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def _drop(url: str) -> None:
    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def fill(url: str, threads: int, turns: int, ratings: Path) -> dict[str, int]:
    """Write Larry-like history by SQL; returns how many rows of each kind."""
    user = str(uuid.uuid4())
    thread_rows, step_rows, thumb_rows, records = [], [], [], []
    for i in range(threads):
        tid, bot = str(uuid.uuid4()), BOTS[i % len(BOTS)]
        start = T0 + timedelta(minutes=7 * i)
        thread_rows.append(
            (tid, _stamp(start), f"thread {i}", user, "learner", json.dumps({"chat_profile": bot}))
        )
        last = ""
        for k in range(turns):
            at = start + timedelta(minutes=2 * k)
            user_text = (
                f"Thread {i}, turn {k}: we interviewed {k + 3} people about problem {i * 31 + k} "
                "and most of them said the hardest part is knowing where to start."
            )
            reply = (
                f"Good work on problem {i * 31 + k}. Of those {k + 3} people, who struggled "
                "most, and what were they trying to get done when it happened?"
            )
            for kind, name, text, when in (
                ("user_message", "learner", user_text, at),
                ("run", "on_message", "", at + timedelta(seconds=1)),
                ("assistant_message", "Larry", reply, at + timedelta(seconds=25)),
            ):
                sid = str(uuid.uuid4())
                step_rows.append((sid, name, kind, tid, text, _stamp(when), _stamp(when)))
                last = sid if kind == "assistant_message" else last
        thumb_rows.append((str(uuid.uuid4()), last, tid, 1 if i % 5 else 0))
        records.append(
            {
                "message_id": last,
                "thread_id": tid,
                "score": 1 + i % 5,
                "feedback_type": "detailed",
                "categories": {"accuracy": True, "depth": i % 2 == 0},
                "comment": None,
                "bot_id": bot,
                "timestamp": (start + timedelta(hours=1)).isoformat(),
            }
        )
    with psycopg.connect(_plain(url)) as conn, conn.cursor() as cur:
        for statement in SCHEMA:
            cur.execute(statement)
        cur.execute(
            'INSERT INTO users ("id", "identifier", "metadata", "createdAt") '
            "VALUES (%s, %s, '{}', %s)",
            (user, "learner", _stamp(T0)),
        )
        cur.executemany(
            'INSERT INTO threads ("id", "createdAt", "name", "userId", "userIdentifier", '
            '"metadata") VALUES (%s, %s, %s, %s, %s, %s)',
            thread_rows,
        )
        cur.executemany(
            'INSERT INTO steps ("id", "name", "type", "threadId", "streaming", "output", '
            '"createdAt", "start", "metadata", "generation") '
            "VALUES (%s, %s, %s, %s, false, %s, %s, %s, '{}', '{}')",
            step_rows,
        )
        cur.executemany(
            'INSERT INTO feedbacks ("id", "forId", "threadId", "value") VALUES (%s, %s, %s, %s)',
            thumb_rows,
        )
    ratings.write_text("".join(json.dumps(r) + "\n" for r in records))
    return {
        "threads": len(thread_rows),
        "steps": len(step_rows),
        "messages": 2 * threads * turns,
        "thumbs": len(thumb_rows),
        "rating_records": len(records),
    }


def measure(source_url: str, store_url: str, ratings: Path) -> dict[str, Any]:
    """Import once (everything new), then again (nothing new); seconds and counts of each."""
    upgrade(store_url)
    out: dict[str, Any] = {}
    for run in ("first", "rerun"):
        source, engine = open_source(source_url), make_engine(store_url)
        start = time.perf_counter()
        summary = import_chainlit(source, engine, ImportOptions(ratings=ratings))
        seconds = time.perf_counter() - start
        source.dispose()
        engine.dispose()
        out[run] = {"seconds": round(seconds, 3), "summary": summary.as_dict()}
    return out


def _one_size(args: argparse.Namespace, threads: int, tmp: Path) -> dict[str, Any]:
    """Fill a Chainlit database with `threads` threads and import it into each store."""
    ratings = tmp / f"feedback-{threads}.jsonl"
    source = _database(args.postgres, "chainlit_bench")
    try:
        start = time.perf_counter()
        written = fill(source, threads, args.turns, ratings)
        fill_s = time.perf_counter() - start
        print(json.dumps({"written": written, "fill_s": round(fill_s, 2)}), flush=True)
        stores = []
        for store in args.stores.split(","):
            url = (
                f"sqlite:///{tmp / f'store-{threads}.db'}"
                if store == "sqlite"
                else _database(args.postgres, "larrylab_bench")
            )
            try:
                timing = measure(source, url, ratings)
            finally:
                if store != "sqlite":
                    _drop(url)
            rate = threads / timing["first"]["seconds"]
            stores.append({"store": store, "threads_per_s": round(rate, 1), **timing})
            print(json.dumps(stores[-1]), flush=True)
    finally:
        _drop(source)
    return {"threads": threads, "written": written, "fill_s": round(fill_s, 2), "stores": stores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", default="2000", help="thread counts, comma-separated (one run each)"
    )
    parser.add_argument("--turns", type=int, default=3, help="user/assistant pairs per thread")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "LARRYLAB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="PostgreSQL server to create the Chainlit database (and a store) on",
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "chainlit_import.json")
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="chainlit-import-"))
    sizes = [int(n) for n in args.threads.split(",")]
    try:
        runs = [_one_size(args, n, tmp) for n in sizes]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "benchmark": "chainlit_import",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "params": {"threads": sizes, "turns": args.turns, "stores": args.stores},
        "target_threads_per_s": TARGET_THREADS_PER_S,
        "runs": runs,
        "met": all(
            s["threads_per_s"] >= TARGET_THREADS_PER_S for run in runs for s in run["stores"]
        ),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
