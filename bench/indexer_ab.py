"""Two logging routers served at the same time: which one's indexer costs less CPU per row.

`router_overhead.py --sustained-variant` measures throughput, window after window; on these
shared 2-core VMs a 25 s window moves by ±20 points against the next, more than most changes
to the indexer are worth. Here both routers (two settings, or two checkouts) run at the same
time, on one simulator, each under `--concurrency` JSON clients of the branching traffic, so
whatever the machine is doing, each window treats them alike. After each window both store
what they left (told to store now); then the CPU each one's indexer spent per row it stored,
each router process's own CPU per request, and the bytes each indexer wrote per row (its WAL
pages and checkpoints, `/proc/<pid>/io`), are compared round by round.

    python bench/indexer_ab.py --a default: --b big:LARRYLAB_LOG_BATCH_SIZE=20000,...
        [--b old:PYTHONPATH=<checkout>] [--seconds 20] [--rounds 5] [--concurrency 10]
        [--out bench/results/indexer_ab.json]

Each side is NAME:KEY=VALUE[,KEY=VALUE] (the environment of its router and indexer; a
`PYTHONPATH` runs another checkout's code). It says nothing on throughput: the two routers
share the machine, so an indexer that costs more slows both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import yaml
from router_overhead import (
    Way,
    git_state,
    process_cpu_seconds,
    router_config,
    store_now_s,
    window,
    written,
)

from larrylab.localproc import start_router, start_sim


async def load(ways: list[Way], seconds: float, conc: int) -> list[Any]:
    """Both routers under `conc` clients each for `seconds`, at the same time."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        return await asyncio.gather(
            *(window(session, w, False, conc, seconds, (k + 1) * 10**9) for k, w in enumerate(ways))
        )


def indexer_pid(router_pid: int) -> int:
    """The router's log indexer (its child process)."""
    children = Path(f"/proc/{router_pid}/task/{router_pid}/children").read_text().split()
    if not children:
        raise RuntimeError(f"router {router_pid} has no indexer process (is logging on?)")
    return int(children[0])


def write_bytes(pid: int) -> int:
    """Bytes a process has caused to be written to storage (/proc/<pid>/io)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start the simulator and both routers, run the rounds, stop them."""
    sides = [args.a, args.b]
    with tempfile.TemporaryDirectory(prefix="larrylab-indexer-ab-") as tmp_s:
        tmp = Path(tmp_s)
        instant = ["--ttft-ms", "0", "--tokens-per-s", "0", "--latency-ms", "0"]
        sim = start_sim(log_dir=tmp, label="indexer-ab", extra=instant)
        procs = [sim]
        try:
            cfg = tmp / "larrylab.yaml"
            cfg.write_text(yaml.safe_dump(router_config(sim.url)))
            ways = []
            for k, (name, env) in enumerate(sides):
                home = tmp / f"side{k}"
                home.mkdir()
                router = start_router(
                    log_dir=home,
                    database_url=f"sqlite:///{home / 'larrylab.db'}",
                    config=cfg,
                    env={
                        "LARRYLAB_SPILL_DIR": str(home / "spill"),
                        "LARRYLAB_JOURNAL_DIR": str(home / "spill" / "journal"),
                        **env,
                    },
                    cwd=home,  # so that a PYTHONPATH side runs its own checkout's code
                )
                procs.append(router)
                ways.append(Way(name, f"{router.url}/v1", "larry", router.proc.pid, logs=True))
            asyncio.run(load(ways, 3.0, args.concurrency))  # warm-up
            for w in ways:
                store_now_s(w)
            indexers = [indexer_pid(w.pid) for w in ways]
            rounds = []
            for _ in range(args.rounds):
                cpu0 = [process_cpu_seconds(i) for i in indexers]
                rows0 = [written(w)[0] for w in ways]
                bytes0 = [write_bytes(i) for i in indexers]
                cells = asyncio.run(load(ways, args.seconds, args.concurrency))
                for w in ways:
                    store_now_s(w)
                one = {}
                for k, w in enumerate(ways):
                    rows = written(w)[0] - rows0[k]
                    requests = len(cells[k].lat)
                    one[w.name] = {
                        "requests": requests,
                        "rows_stored": rows,
                        "req_per_s": round(requests / cells[k].elapsed, 1),
                        "indexer_cpu_s": round(process_cpu_seconds(indexers[k]) - cpu0[k], 3),
                        "router_cpu_s": round(cells[k].router_cpu_s, 3),
                        "indexer_kib_written": round((write_bytes(indexers[k]) - bytes0[k]) / 1024),
                        "errors": cells[k].errors,
                    }
                rounds.append(one)
                print(json.dumps(one), flush=True)
        finally:
            for p in reversed(procs):
                p.stop()
    return summarize(rounds, [name for name, _ in sides])


def summarize(rounds: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Per side: indexer CPU ms per stored row and router CPU ms per request, overall and per
    round; and B's over A's, per round."""

    def ms(r: dict[str, Any], cpu: str, per: str) -> float:
        return 1000 * r[cpu] / max(r[per], 1)

    out: dict[str, Any] = {"sides": {}, "rounds": rounds}
    for name in names:
        mine = [r[name] for r in rounds]
        total = {k: sum(m[k] for m in mine) for k in mine[0]}
        out["sides"][name] = {
            "indexer_ms_per_row": round(ms(total, "indexer_cpu_s", "rows_stored"), 4),
            "router_ms_per_request": round(ms(total, "router_cpu_s", "requests"), 4),
            "indexer_ms_per_row_per_round": [
                round(ms(m, "indexer_cpu_s", "rows_stored"), 4) for m in mine
            ],
            "indexer_kib_written_per_row": round(
                total["indexer_kib_written"] / max(total["rows_stored"], 1), 2
            ),
            "indexer_kib_written_per_row_per_round": [
                round(m["indexer_kib_written"] / max(m["rows_stored"], 1), 2) for m in mine
            ],
            "requests": total["requests"],
            "errors": total["errors"],
        }
    a, b = (out["sides"][n] for n in names)
    out["b_over_a"] = {
        "indexer_ms_per_row": round(b["indexer_ms_per_row"] / a["indexer_ms_per_row"], 3),
        "router_ms_per_request": round(b["router_ms_per_request"] / a["router_ms_per_request"], 3),
        "indexer_per_round": [
            round(y / x, 3)
            for x, y in zip(
                a["indexer_ms_per_row_per_round"], b["indexer_ms_per_row_per_round"], strict=True
            )
        ],
    }
    return out


def side(spec: str) -> tuple[str, dict[str, str]]:
    """`NAME:[KEY=VALUE[,KEY=VALUE]]` as (name, environment)."""
    name, sep, settings = spec.partition(":")
    pairs = [p.partition("=") for p in settings.split(",") if p]
    if not name or not sep or any(not k or not eq for k, eq, _ in pairs):
        raise argparse.ArgumentTypeError(f"{spec!r}: expected NAME:[KEY=VALUE[,KEY=VALUE]]")
    return name, {k: v for k, _, v in pairs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", type=side, required=True, metavar="NAME:[KEY=VALUE,...]")
    ap.add_argument("--b", type=side, required=True, metavar="NAME:[KEY=VALUE,...]")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=10, help="clients per router")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.a[0] == args.b[0]:
        ap.error("--a and --b need different names")
    res = measure(args)
    res["meta"] = {
        "seconds": args.seconds,
        "rounds": args.rounds,
        "concurrency_per_router": args.concurrency,
        "a": {"name": args.a[0], "env": args.a[1]},
        "b": {"name": args.b[0], "env": args.b[1]},
        "traffic": "branching JSON (router_overhead.body)",
        "git": git_state(),
    }
    print(json.dumps({k: res[k] for k in ("sides", "b_over_a")}, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
