"""The instructions the router's own process executes per request, with logging on and off.

`router_overhead.py` times the router among the simulator, the load generator and the log
indexer on two shared cores, where one window moves by ±20 points against the next. Valgrind's
callgrind counts instructions instead, the same from run to run: this script starts the
simulator, then one router per setting of `LARRYLAB_LOG_REQUESTS` under
`valgrind --tool=callgrind` (its indexer, a child process, is not traced), sends
`--warm-up` requests, zeroes the counters (`callgrind_control -z`), sends `--requests` more one
at a time and dumps the counts (`callgrind_control -d`). The difference is the router's own
share of logging (building and encoding the journal line, the pending-row bookkeeping, the
appends and the indexer's acknowledgements), none of the indexer's work.

Requests go one at a time, so each one pays for an append of its own (one write and one timer
per 10 ms); a loaded router shares each append among dozens of requests. The figure is an upper
bound on the router's share under load. It does not see system calls' time or cache misses.

    python bench/router_instructions.py [--requests 1000] [--traffic branching]
        [--out bench/results/router_instructions.json]

About two minutes per setting for 1,000 requests. Needs Debian's `valgrind`.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from router_overhead import Conversations, body, git_state, record_run, router_config

from larrylab.localproc import free_port, start_sim

SIM_ARGS = ["--ttft-ms", "0", "--tokens-per-s", "0", "--latency-ms", "0"]


def _send(client: httpx.Client, url: str, talk: Conversations | None, i: int) -> None:
    """One JSON request of the benchmark's traffic to the route; raises unless it succeeds."""
    if talk is None:
        payload, sent = body("larry", False, i), None
    else:
        payload, sent = talk.request("larry", False, i)
    resp = client.post(
        f"{url}/v1/chat/completions",
        content=payload,
        headers={"content-type": "application/json"},
    )
    if resp.status_code != 200:
        raise RuntimeError(f"request {i}: HTTP {resp.status_code}: {resp.text[:200]}")
    if talk is not None and sent is not None:
        talk.replied(i, sent, resp.json()["choices"][0]["message"]["content"])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 300  # a router starts slowly under valgrind
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the router exited:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the router under valgrind did not become healthy within 300 s")


def _control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True)


def count(logging_on: bool, args: argparse.Namespace, config: Path, tmp: Path) -> int:
    """Instructions the router process executed for `args.requests` requests."""
    port = free_port()
    tag = "on" if logging_on else "off"
    out = tmp / f"callgrind.{tag}"
    log = tmp / f"router-{tag}.log"
    env = {**os.environ, "LARRYLAB_LOG_REQUESTS": str(logging_on).lower()}
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "larrylab",
        "serve",
        "--port",
        str(port),
        "--database-url",
        f"sqlite:///{tmp / tag}.db",
        "--config",
        str(config),
    ]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, proc, log)
        talk = Conversations() if args.traffic == "conversations" else None
        with httpx.Client(timeout=120) as client:
            for i in range(args.warm_up):
                _send(client, url, talk, i)
            time.sleep(1.0)  # the last append and acknowledgement
            _control("-z", proc.pid)  # zero the counts
            for i in range(args.warm_up, args.warm_up + args.requests):
                _send(client, url, talk, i)
            time.sleep(1.0)
            _control("-d", proc.pid)  # dump them
    finally:
        proc.terminate()
        proc.wait(120)
    dumps = sorted(tmp.glob(f"callgrind.{tag}.*"))  # the dump after the zeroing: <out>.<n>
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump for the router with logging {tag}")
    found = re.search(r"^summary: (\d+)", dumps[0].read_text(errors="replace"), re.M)
    if found is None:
        raise RuntimeError(f"no instruction count in {dumps[0].name}")
    return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--warm-up", type=int, default=300)
    ap.add_argument("--traffic", choices=("branching", "conversations"), default="branching")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            sys.exit(f"router_instructions: {tool} is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="larrylab-router-instr-") as tmp_s:
        tmp = Path(tmp_s)
        sim = start_sim(log_dir=tmp, label="bench-instant", extra=SIM_ARGS)
        try:
            config = tmp / "larrylab.yaml"
            config.write_text(yaml.safe_dump(router_config(sim.url)))
            on, off = (count(flag, args, config, tmp) for flag in (True, False))
        finally:
            sim.stop()
    result: dict[str, Any] = {
        "traffic": args.traffic,
        "requests": args.requests,
        "instructions_per_request": {
            "logging_on": round(on / args.requests),
            "logging_off": round(off / args.requests),
        },
        "logging_share": round(on / off - 1, 4),
        "git": git_state(),
        "python": sys.version.split()[0],
        "machine": platform.platform(),
    }
    record_run(result, args.out)


if __name__ == "__main__":
    main()
