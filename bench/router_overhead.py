"""What the router adds on top of an instant upstream: larrylab vs. direct vs. LiteLLM's proxy.

One simulated upstream (`larrylab sim`, zero latency, instant replies) is called three ways in one
run: directly; through `larrylab serve` (by model name, and by a route running a 2-arm experiment,
each from its own router logging to SQLite; a third router with LARRYLAB_LOG_REQUESTS=false prices
the logging, and a fourth lets at most 1000 rows wait for its indexer, which gives
the sustained throughput with logging); and through LiteLLM's proxy (one worker, own venv, made by
`--setup-litellm`). Before each concurrent window every router has stored all it logged; after
it, the rows still waiting and the time and CPU to store them are recorded, with the log
writer's mean batch (from /metrics) and the machine's CPU; `logging_cost` reports the cost in
the windows, with at most 1000 rows waiting, and CPU-accounted (all logging CPU, the rows stored
after the window included, over the machine's CPU per request with logging off).
Sequential requests are interleaved request by request across ways; concurrent windows are
interleaved in rounds. `--traffic conversations` sends 8-turn coaching conversations instead of
`body`'s branching threads (the client then parses each reply, on every way alike). The
`sustained` phase (`--phases sustained`, alone or after `standard`) measures the logging cost
directly under sustained load: the route with its default log writer and without logging, in
long windows (`--sustained-s`) alternating for `--sustained-rounds` rounds; each logging window
is also charged the time its router took afterwards to store the rows still waiting
(`rps_on_incl_storing`); `--sustained-variant NAME:KEY=VALUE,...` adds a logging router with
other settings to the same rounds, priced against the same windows without logging.

`--protocol` (default `both`) adds Gemini's native API to the standard phase, in the same
interleaved requests and rotated rounds: `POST /v1beta/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse` with `x-goog-api-key`, the same conversations as
`contents`/`systemInstruction`, sent to the simulator's own endpoints (`direct`), to two more
logging routers serving `api: gemini` models (`larrylab-model` and `larrylab-route`, the
route's experiment) and to a second LiteLLM proxy's own Google-GenAI endpoints; every Gemini
reply's text is read and checked. Its figures, added latency against its own `direct` and
targets, go under `gemini` in the JSON; the OpenAI figures stay at the top level. Every way
is tried once before measuring: one that cannot answer stops the run with its status and body.
Usage:

    python bench/router_overhead.py [--setup-litellm] [--protocol openai|gemini|both]
        [--requests 500] [--concurrency 20]
        [--window-s 4] [--rounds 3] [--phases standard[,sustained]] [--sustained-s 30]
        [--sustained-rounds 4] [--sustained-variant NAME:KEY=VALUE[,KEY=VALUE]]...
        [--traffic branching] [--out bench/results/router_overhead.json]

To measure a fixed commit while the working tree changes, run it from a clean checkout with
`PYTHONPATH=<checkout>` and that checkout as the working directory.

"Added latency" compares percentiles of each distribution (p50 through X minus p50 direct),
not paired per-request differences. Server CPU per request is read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import yaml

import larrylab
from larrylab.localproc import LocalProcess, free_port, start_router, start_sim

LITELLM_VERSION = "1.108.7"
LITELLM_VENV = Path(__file__).resolve().parent / ".litellm-venv"
# Known-good pins from constraints.txt, used only if the plain install fails.
LITELLM_PINS = ("boto3==1.43.117", "botocore==1.43.117", "aiobotocore==3.10.0")
LOG_OFF_ENV = "LARRYLAB_LOG_REQUESTS"  # =false on the second router; checked via its row count
# Each larrylab way gets its own router, so that every router sees the same traffic pattern
# (in trials, a router serving two interleaved ways stayed warmer and answered ~0.7 ms faster).
LARRYLAB_WAYS = (
    ("larrylab-model", "sim-a"),
    ("larrylab-route", "larry"),
    ("larrylab-nolog", "larry"),
    ("larrylab-bounded", "larry"),
)
# `larrylab-bounded`: the default writer, but at most 1000 rows may wait for the indexer, so
# past the first ~1000 requests of a window the router serves only as fast as the store takes
# rows: the sustained throughput with logging, no work deferred past the window.
WRITER_ENV = {
    "larrylab-bounded": {"LARRYLAB_LOG_JOURNAL_MAX_ROWS": "1000"},
}
MODES = ("json", "stream")
PCTS = (50, 95, 99)
PROTOCOLS = ("openai", "gemini")
# Gemini's native API (`--protocol gemini`): the simulator's own endpoints, two routers serving
# `api: gemini` models (by model and by the route's experiment), and LiteLLM's proxy's
# Google-GenAI endpoints, each way named `gemini/<way>` while measured.
GEMINI_MODEL = "gemini-2.5-flash"  # what the simulator is asked for, directly and upstream
GEMINI_LARRYLAB_WAYS = (("larrylab-model", "gem-a"), ("larrylab-route", "larry"))
GEMINI_PREFIX = "gemini/"
GEMINI_CONFIG = {"temperature": 0.7}
TURNS = (
    "You are Larry, a coach for the PWS method. Ask one question at a time, keep answers short.",
    "Our team ({thread}) wants to cut food waste in school cafeterias. Is it worth solving?",
    "Maybe. Who feels this problem most, and how do you know? Describe one person and moment.",
    "Cafeteria staff throw away a third of the lunches every day; it frustrates them.",
    "Good evidence. Is it pervasive, urgent, and would they pay (time or money) to fix it?",
    "It happens in every school we visited. Request {i}: what should we test next?",
)


class Conversations:
    """`--traffic conversations`: 256 threads, each holding coaching conversations of `turns`
    turns one after another; each request resends the conversation so far, with the replies
    this way gave, and a new user turn (as chat clients call). One per way."""

    def __init__(self, turns: int = 8) -> None:
        self.turns = turns
        # thread slot -> (thread id, messages so far, turns taken, conversations begun)
        self.threads: dict[int, tuple[str, list[dict[str, str]], int, int]] = {}

    def request(
        self, model: str, stream: bool, i: int, protocol: str = "openai"
    ) -> tuple[bytes, list[dict[str, str]]]:
        """The body of request `i` (in `protocol`'s shape), and the messages it sends."""
        slot = i % 256
        thread, messages, turn, number = self.threads.get(slot, ("", [], self.turns, -1))
        if turn >= self.turns:  # a new conversation in this slot
            number += 1
            thread, turn = f"bench-thread-{slot:03d}-{number}", 0
            messages = [{"role": "system", "content": TURNS[0]}]
            self.threads[slot] = (thread, messages, turn, number)
        user = f"Turn {turn} of {thread}: {TURNS[3]}"
        sent = [*messages, {"role": "user", "content": user}]
        if protocol == "gemini":
            return gemini_body(sent), sent
        body = {"model": model, "stream": stream, "user": thread, "messages": sent}
        return orjson.dumps(body), sent

    def replied(self, i: int, sent: list[dict[str, str]], content: str) -> None:
        """Record the reply to request `i` (which sent `sent`): the conversation goes on."""
        thread, _, turn, number = self.threads[i % 256]
        history = [*sent, {"role": "assistant", "content": content}]
        self.threads[i % 256] = (thread, history, turn + 1, number)


def reply_content(data: bytes, stream: bool, protocol: str = "openai") -> str:
    """The assistant's text in a chat completion response, or in its SSE stream; for
    `protocol="gemini"`, in a `generateContent` response or a `streamGenerateContent?alt=sse`
    stream, where it must end with a `finishReason` (else ValueError)."""
    if protocol == "gemini":
        return gemini_content(data, stream)
    if not stream:
        return str(orjson.loads(data)["choices"][0]["message"]["content"])
    parts = []
    for line in data.split(b"\n"):
        if line.startswith(b"data: {"):
            choices = orjson.loads(line[6:]).get("choices") or [{}]
            parts.append(choices[0].get("delta", {}).get("content") or "")
    return "".join(parts)


def gemini_content(data: bytes, stream: bool) -> str:
    """The model's text in a Gemini response (or its SSE events, joined); ValueError unless
    the last response carries a `finishReason` (an error or a cut stream has none)."""
    events = (
        [orjson.loads(line[6:]) for line in data.split(b"\n") if line.startswith(b"data: {")]
        if stream
        else [orjson.loads(data)]
    )
    parts, finished = [], False
    for event in events:
        candidate = (event.get("candidates") or [{}])[0]
        parts += [p.get("text") or "" for p in candidate.get("content", {}).get("parts") or []]
        finished = bool(candidate.get("finishReason"))
    if not finished:
        raise ValueError("no finishReason in the last response")
    return "".join(parts)


def gemini_body(messages: Sequence[dict[str, str]]) -> bytes:
    """A `generateContent` body for chat messages: system messages as `systemInstruction`,
    user and assistant turns as `contents` (roles user and model), and a temperature."""
    system = [{"text": m["content"]} for m in messages if m["role"] == "system"]
    contents = [
        {"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
        for m in messages
        if m["role"] != "system"
    ]
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    return orjson.dumps({**out, "generationConfig": GEMINI_CONFIG})


@dataclass(frozen=True)
class Way:
    """One way of reaching the simulated model."""

    name: str
    base: str
    model: str
    pid: int
    through: bool = True
    logs: bool = False  # a larrylab router that logs requests (its log queue is watched)
    talk: Conversations | None = None  # None: the branching traffic of `body`
    standard: bool = True  # measured in the standard phase (else only in the sustained one)
    protocol: str = "openai"  # or "gemini": `base` is then a `/v1beta` root
    headers: dict[str, str] = field(
        default_factory=lambda: {"authorization": "Bearer bench"}, compare=False
    )

    @property
    def root(self) -> str:
        """The server's root URL (`base` without its `/v1` or `/v1beta`)."""
        return self.base.rsplit("/", 1)[0]

    def url(self, stream: bool) -> str:
        """Where a request goes: chat completions, or Gemini's (stream)generateContent."""
        if self.protocol == "openai":
            return f"{self.base}/chat/completions"
        if stream:
            return f"{self.base}/models/{self.model}:streamGenerateContent?alt=sse"
        return f"{self.base}/models/{self.model}:generateContent"

    def request(self, stream: bool, i: int) -> tuple[bytes, list[dict[str, str]] | None]:
        """The body of request `i`, and the messages it sends (None: branching traffic)."""
        if self.talk is not None:
            return self.talk.request(self.model, stream, i, self.protocol)
        if self.protocol == "gemini":
            return gemini_body(branching_messages(i)), None
        return body(self.model, stream, i), None


def gemini_way(
    name: str, root: str, model: str, pid: int, *, through: bool = True, **kw: Any
) -> Way:
    """A way that speaks Gemini's native API at `root`/v1beta, with a Gemini API key."""
    return Way(
        GEMINI_PREFIX + name,
        f"{root}/v1beta",
        model,
        pid,
        through=through,
        protocol="gemini",
        headers={"x-goog-api-key": "bench"},
        **kw,
    )


@dataclass
class Cell:
    """Latencies (seconds) and counts for one way in one mode."""

    lat: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    rounds: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    router_cpu_s: float = 0.0  # the router's own process, without its log writer process
    backlog: list[float] = field(default_factory=list)  # rows not stored when a window ended
    drain_s: list[float] = field(default_factory=list)  # seconds until they were
    drain_cpu_s: float = 0.0  # server CPU while they were stored
    machine_cpu_s: float = 0.0  # CPU of the whole machine during the windows (/proc/stat)
    rows_written: float = 0.0  # rows the router's log writer stored for its windows
    batches_written: float = 0.0  # and the batches it stored them in

    def add(self, dt: float | None) -> None:
        """Count one request: its latency, or an error when None."""
        self.errors += dt is None
        self.lat += [] if dt is None else [dt]


def pct(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 in milliseconds (inclusive method)."""
    if len(values) < 2:
        return {f"p{p}_ms": float("nan") for p in PCTS}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {f"p{p}_ms": round(q[p - 1] * 1000, 3) for p in PCTS}


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its live descendants (Linux /proc)."""
    total, todo = 0.0, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(stat[11]) + int(stat[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def process_cpu_seconds(pid: int) -> float:
    """User+system CPU of one process alone (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot (/proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def own_cpu_s(pids: Sequence[int]) -> float:
    """CPU seconds of this process and the servers it started."""
    return sum(os.times()[:2]) + sum(cpu_seconds(p) for p in set(pids))


def branching_messages(i: int) -> list[dict[str, str]]:
    """A small coach conversation: system prompt and three user turns, the last new in every
    request, on one of 256 threads."""
    thread = f"bench-thread-{i % 256:03d}"
    texts = [t.format(thread=thread, i=i) for t in TURNS]
    roles = ["system", "user", "assistant", "user", "assistant", "user"]
    return [{"role": r, "content": t} for r, t in zip(roles, texts, strict=True)]


def body(model: str, stream: bool, i: int) -> bytes:
    """The chat completion body of `branching_messages(i)`, `user` = its thread id (Gemini's
    body has no such field: `gemini_body`)."""
    thread = f"bench-thread-{i % 256:03d}"
    return orjson.dumps(
        {"model": model, "stream": stream, "user": thread, "messages": branching_messages(i)}
    )


async def one(session: aiohttp.ClientSession, way: Way, stream: bool, i: int) -> float | None:
    """Send one request; its latency to the last byte in seconds, or None on any failure.
    A Gemini reply is always read whole and its text checked (after the clock stops): an
    error, a cut stream or an empty text counts as a failure."""
    payload, sent = way.request(stream, i)
    t0 = time.perf_counter()
    try:
        async with session.post(way.url(stream), data=payload, headers=way.headers) as resp:
            if way.protocol == "gemini":
                if stream:
                    data = b"".join([chunk async for chunk in resp.content.iter_any()])
                else:
                    data = await resp.read()
                ok = resp.status == 200
            elif stream and sent is None:
                tail = b""
                async for chunk in resp.content.iter_any():
                    tail = (tail + chunk)[-64:]
                ok = resp.status == 200 and b"[DONE]" in tail
            elif stream:
                data = b"".join([chunk async for chunk in resp.content.iter_any()])
                ok = resp.status == 200 and b"[DONE]" in data[-64:]
            else:
                data = await resp.read()
                ok = resp.status == 200 and b'"choices"' in data
    except (aiohttp.ClientError, TimeoutError):
        return None
    dt = time.perf_counter() - t0
    if ok and way.protocol == "gemini":
        try:
            content = gemini_content(data, stream)
        except (ValueError, TypeError, AttributeError, IndexError):  # orjson's errors included
            return None
        if not content:
            return None
        if way.talk is not None and sent is not None:
            way.talk.replied(i, sent, content)
    elif ok and way.talk is not None and sent is not None:
        way.talk.replied(i, sent, reply_content(data, stream))
    return dt if ok else None


class BenchError(RuntimeError):
    """A way cannot be measured; the message says which and why."""


async def preflight(session: aiohttp.ClientSession, ways: Sequence[Way]) -> None:
    """One request per way and mode, each reply's text checked; BenchError naming every way
    that failed (status and the start of its body), so that a way that cannot answer stops the
    run at once rather than being measured as errors."""
    problems = []
    timeout = aiohttp.ClientTimeout(total=20)
    for w in ways:
        for mode in MODES:
            stream, url = mode == "stream", w.url(mode == "stream")
            payload = (
                gemini_body(branching_messages(0))
                if w.protocol == "gemini"
                else body(w.model, stream, 0)
            )
            what = f"{w.name} ({mode}): POST {url}"
            try:
                async with session.post(
                    url, data=payload, headers=w.headers, timeout=timeout
                ) as resp:
                    status, data = resp.status, await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                problems.append(f"{what}: {type(exc).__name__} {exc}")
                continue
            try:
                text = reply_content(data, stream, w.protocol) if status == 200 else ""
            except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
                text = f"!{exc}"
            if not text or text.startswith("!"):
                why = f" ({text[1:]})" if text else ""
                problems.append(f"{what} -> {status}{why}: {data[:300]!r}")
    if not problems:
        return
    message = "these ways did not answer:\n  " + "\n  ".join(problems)
    if any(p.startswith(GEMINI_PREFIX + "larrylab") for p in problems):
        message += (
            "\nThe larrylab router must serve Gemini's native API (POST /v1beta/models/{model}"
            ":generateContent and :streamGenerateContent?alt=sse, `api: gemini` models) for the "
            "gemini ways; `--protocol openai` measures the OpenAI path alone."
        )
    raise BenchError(message)


async def preflight_alone(ways: Sequence[Way]) -> None:
    """`preflight` in a session of its own (before the measuring session opens)."""
    async with aiohttp.ClientSession(headers={"content-type": "application/json"}) as session:
        await preflight(session, ways)


async def sequential(
    session: aiohttp.ClientSession, ways: Sequence[Way], n: int, warmup: int
) -> dict[str, dict[str, Cell]]:
    """n requests per way and mode, one at a time, interleaved request by request."""
    cells = {m: {w.name: Cell() for w in ways} for m in MODES}
    for i in range(-warmup, n):
        for mode in MODES:
            for w in ways if i % 2 else reversed(ways):
                dt = await one(session, w, mode == "stream", i)
                if i >= 0:
                    cells[mode][w.name].add(dt)
    return cells


async def window(
    session: aiohttp.ClientSession, way: Way, stream: bool, conc: int, seconds: float, base: int
) -> Cell:
    """`conc` workers back to back for `seconds`; latencies, errors, elapsed, server CPU."""
    cell = Cell()
    counter = iter(range(base, base + 10**9))
    cpu0, own0, t0 = cpu_seconds(way.pid), process_cpu_seconds(way.pid), time.perf_counter()
    busy0 = machine_busy_s()
    deadline = t0 + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            cell.add(await one(session, way, stream, next(counter)))

    await asyncio.gather(*(worker() for _ in range(conc)))
    cell.elapsed, cell.cpu_s = time.perf_counter() - t0, cpu_seconds(way.pid) - cpu0
    cell.router_cpu_s = process_cpu_seconds(way.pid) - own0
    cell.machine_cpu_s = machine_busy_s() - busy0
    return cell


LOG_METRICS = (
    "larrylab_log_queue_depth",
    "larrylab_log_rows_written_total",
    "larrylab_log_batches_written_total",
)


def log_metrics(way: Way) -> dict[str, float]:
    """A router's log writer gauges and counters from its /metrics."""
    text = httpx.get(way.root + "/metrics", timeout=30).text
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in LOG_METRICS:
            found[name] = float(value)
    if "larrylab_log_queue_depth" not in found:
        raise RuntimeError(f"{way.name}: no larrylab_log_queue_depth in /metrics")
    return found


def queue_depth(way: Way) -> float:
    """Rows a router logged but has not stored yet (its `larrylab_log_queue_depth`)."""
    return log_metrics(way)["larrylab_log_queue_depth"]


def written(way: Way) -> tuple[float, float]:
    """Rows a router's log writer stored so far, and in how many batches (0, 0 on a checkout
    from before these counters)."""
    found = log_metrics(way)
    rows = found.get("larrylab_log_rows_written_total", 0.0)
    return rows, found.get("larrylab_log_batches_written_total", 0.0)


async def drained(ways: Sequence[Way]) -> None:
    """Wait until every logging router stored what it logged (so that no router's deferred
    store work runs during another way's window)."""
    for w in ways:
        while w.logs and await asyncio.to_thread(queue_depth, w) > 0:
            await asyncio.sleep(0.05)


async def concurrent(
    session: aiohttp.ClientSession, ways: Sequence[Way], conc: int, seconds: float, rounds: int
) -> dict[str, dict[str, Cell]]:
    """Rounds of fixed windows per way and mode, the order of ways rotated each round; the
    first round only warms up (the machine got faster over the first ~10 s in trial runs).
    After each window of a logging router: the rows it had not stored yet, and the time and
    server CPU it took to store them."""
    cells = {m: {w.name: Cell() for w in ways} for m in MODES}
    for r in range(-1, rounds):
        order = list(ways[r % len(ways) :]) + list(ways[: r % len(ways)])
        for mode in MODES:
            for w in order:
                await drained(ways)
                await asyncio.sleep(0.5)  # let the previous router settle
                before = await asyncio.to_thread(written, w) if w.logs else (0.0, 0.0)
                got = await window(session, w, mode == "stream", conc, seconds, (r + 2) * 10**6)
                backlog, drain_s, drain_cpu, after = 0.0, 0.0, 0.0, before
                if w.logs:
                    t0, cpu0 = time.perf_counter(), cpu_seconds(w.pid)
                    backlog = await asyncio.to_thread(queue_depth, w)
                    await drained([w])
                    drain_s, drain_cpu = time.perf_counter() - t0, cpu_seconds(w.pid) - cpu0
                    after = await asyncio.to_thread(written, w)
                if r < 0:
                    continue
                cell = cells[mode][w.name]
                cell.lat, cell.errors = cell.lat + got.lat, cell.errors + got.errors
                cell.elapsed, cell.cpu_s = cell.elapsed + got.elapsed, cell.cpu_s + got.cpu_s
                cell.router_cpu_s += got.router_cpu_s
                cell.machine_cpu_s += got.machine_cpu_s
                cell.rows_written += after[0] - before[0]
                cell.batches_written += after[1] - before[1]
                cell.rounds.append(round(len(got.lat) / got.elapsed, 1))
                if w.logs:
                    cell.backlog.append(backlog)
                    cell.drain_s.append(round(drain_s, 2))
                    cell.drain_cpu_s += drain_cpu
    return cells


Run = tuple[int, float, float]
"""One window of the sustained phase: requests, seconds, seconds to store what was left."""


def _rps(runs: Sequence[Run], storing: bool) -> float:
    """Throughput over `runs`, charged the time to store what they left if `storing`."""
    return sum(n for n, _, _ in runs) / sum(e + d * storing for _, e, d in runs)


def _cost(on: Sequence[Run], off: Sequence[Run], storing: bool) -> float:
    """Per cent of the throughput without logging that logging costs."""
    return round(100 * (1 - _rps(on, storing) / _rps(off, False)), 1)


def store_now_s(way: Way) -> float:
    """Seconds a router takes to store the rows it has waiting, told to store them now: the
    experiment summary makes it store at once (rather than at the indexer's next interval);
    a second summary, with nothing to store, is timed too and taken off."""
    url = way.root + "/admin/experiments/bench-ab/report"
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        httpx.get(url, timeout=600).raise_for_status()
        times.append(time.perf_counter() - t0)
    return max(times[0] - times[1], 0.0)


@dataclass
class Windows:
    """One router's sustained windows: runs, errors, CPU seconds (server with storing, router
    process, machine) and, for a logging router, the rows left waiting at each window's end."""

    runs: list[Run] = field(default_factory=list)
    errors: int = 0
    cpu_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    backlog: list[float] = field(default_factory=list)


def sustained_figures(on: Windows, off: Windows) -> dict[str, Any]:
    """What logging cost in the sustained windows of `on` against those of `off`."""

    def per_req(w: Windows, k: int) -> float:
        return round(1000 * w.cpu_s[k] / max(sum(n for n, _, _ in w.runs), 1), 3)

    kinds = ("server_incl_storing", "router_process", "machine_in_windows")
    return {
        "rps_on": round(_rps(on.runs, False), 1),
        "rps_on_incl_storing": round(_rps(on.runs, True), 1),
        "rps_off": round(_rps(off.runs, False), 1),
        "cost_pct": _cost(on.runs, off.runs, False),
        "cost_pct_incl_storing": _cost(on.runs, off.runs, True),
        "cost_pct_incl_storing_per_round": [
            _cost([a], [b], True) for a, b in zip(on.runs, off.runs, strict=True)
        ],
        "requests_seconds_storing_s_per_round": {
            "on": [(n, round(e, 2), round(d, 2)) for n, e, d in on.runs],
            "off": [(n, round(e, 2)) for n, e, _ in off.runs],
        },
        "rows_waiting_at_window_end": on.backlog,
        "errors_on_off": [on.errors, off.errors],
        "cpu_ms_per_req_on_off": {
            kind: [per_req(on, k), per_req(off, k)] for k, kind in enumerate(kinds)
        },
    }


async def sustained(
    session: aiohttp.ClientSession,
    ways: Sequence[Way],
    conc: int,
    seconds: float,
    rounds: int,
    modes: Sequence[str] = MODES,
) -> dict[str, Any]:
    """The route with logging on and off (`ways`: the logging routers, the one without logging
    last) in long windows, rotating which goes first each round, after a 3 s warm-up of each.
    After a logging window: the rows it left waiting, and the seconds it took to store them
    when told to, which `incl_storing` adds to the window (the indexer then had the machine to
    itself, so the longer the window, the less this flatters logging). Also CPU per request:
    the server's (router and indexer, storing what was left included), the router process's
    own, and the machine's. The first logging router's figures are the mode's; any others
    (`--sustained-variant`) are under `variants`, each against the same windows without
    logging."""
    out: dict[str, Any] = {}
    for mode in modes:
        stream = mode == "stream"
        for w in ways:
            await drained(ways)
            await window(session, w, stream, conc, 3.0, 10**9)
        windows = {w.name: Windows() for w in ways}
        for r in range(rounds):
            shift = r % len(ways)  # with two: on, off, then off, on
            for w in [*ways[shift:], *ways[:shift]]:
                await drained(ways)
                await asyncio.sleep(0.5)
                got = await window(session, w, stream, conc, seconds, (r + 2) * 10**6)
                mine = windows[w.name]
                mine.errors += got.errors
                store_s, cpu0 = 0.0, cpu_seconds(w.pid)
                if w.logs:
                    mine.backlog.append(await asyncio.to_thread(queue_depth, w))
                    store_s = await asyncio.to_thread(store_now_s, w)
                mine.runs.append((len(got.lat), got.elapsed, store_s))
                storing_cpu = cpu_seconds(w.pid) - cpu0
                for k, v in enumerate(
                    (got.cpu_s + storing_cpu, got.router_cpu_s, got.machine_cpu_s)
                ):
                    mine.cpu_s[k] += v
        off = windows[ways[-1].name]
        out[mode] = sustained_figures(windows[ways[0].name], off)
        if len(ways) > 2:
            out[mode]["variants"] = {
                w.name: sustained_figures(windows[w.name], off) for w in ways[1:-1]
            }
    return out


def setup_litellm(venv: Path) -> None:
    """Create `venv` with litellm[proxy] pinned (constraints only if the plain install fails)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    spec = f"litellm[proxy]=={LITELLM_VERSION}"
    if subprocess.run([*pip, spec], timeout=1800).returncode != 0:
        pins = venv / "constraints.txt"
        pins.write_text("\n".join(LITELLM_PINS) + "\n")
        subprocess.run([*pip, "-c", str(pins), spec], check=True, timeout=1800)


def start_litellm(venv: Path, sim_url: str, tmp: Path, protocol: str = "openai") -> LocalProcess:
    """LiteLLM's proxy, one worker, offline, no database, pointing `larry` at the simulator:
    its OpenAI endpoint, or (`protocol="gemini"`) its Gemini one, which the proxy's own
    `/v1beta/models/larry:generateContent` and `:streamGenerateContent` call (a `gemini/`
    model with `api_base` = the simulator's `/v1beta`: the proxy appends
    `/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse`, and sends
    `x-goog-api-key`; its streams are relayed raw, without OpenAI's `[DONE]`)."""
    cfg = tmp / f"litellm-{protocol}.yaml"
    model = {"model": "openai/larry-v1", "api_base": f"{sim_url}/v1", "api_key": "x"}
    if protocol == "gemini":
        model = {"model": f"gemini/{GEMINI_MODEL}", "api_base": f"{sim_url}/v1beta", "api_key": "x"}
    cfg.write_text(
        yaml.safe_dump({"model_list": [{"model_name": "larry", "litellm_params": model}]})
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VIRTUAL_ENV")}
    env |= {  # no auth on either router: larrylab also runs without client keys on loopback
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        "LITELLM_LOG": "ERROR",
        "NO_PROXY": "*",
    }
    port, log_path = free_port(), tmp / f"litellm-{protocol}.log"
    args = [str(venv / "bin" / "litellm"), "--config", str(cfg), "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*args, "--num_workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=tmp,
        )  # fmt: skip
    lp = LocalProcess(f"litellm-{protocol}", port, proc, log_path)
    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError(f"litellm exited with {proc.returncode}:\n{lp.log()[-3000:]}")
        try:
            if httpx.get(f"{lp.url}/health/liveliness", timeout=1.0).status_code == 200:
                return lp
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    lp.stop()
    raise RuntimeError(f"litellm did not start:\n{lp.log()[-3000:]}")


def start_floor(sim_url: str, tmp: Path) -> LocalProcess:
    """`stack_floor.py` in front of the simulator: uvicorn and aiohttp forwarding as they are,
    without larrylab's code (the floor of what any proxy on these parts adds)."""
    port, log_path = free_port(), tmp / "stack-floor.log"
    args = [sys.executable, str(Path(__file__).resolve().parent / "stack_floor.py")]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*args, "--port", str(port), "--upstream", sim_url],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    lp = LocalProcess("stack-floor", port, proc, log_path)
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"stack_floor.py exited with {proc.returncode}:\n{lp.log()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return lp
        time.sleep(0.1)
    lp.stop()
    raise RuntimeError(f"stack_floor.py did not start:\n{lp.log()}")


def router_config(sim_url: str) -> dict[str, Any]:
    """Two model entries on the same simulator; route `larry` runs a 50/50 experiment."""
    models = {n: {"base_url": f"{sim_url}/v1", "model": "larry-v1"} for n in ("sim-a", "sim-b")}
    arms = [{"model": "sim-a", "weight": 50, "control": True}, {"model": "sim-b", "weight": 50}]
    return {
        "models": models,
        "routes": {"larry": {"model": "sim-a"}},
        "experiments": [{"name": "bench-ab", "route": "larry", "arms": arms}],
    }


def gemini_router_config(sim_url: str) -> dict[str, Any]:
    """`router_config` with `api: gemini` models: the router calls the simulator's root
    (`/v1beta/models/gemini-2.5-flash:generateContent` appended) natively."""
    spec = {"api": "gemini", "base_url": sim_url, "model": GEMINI_MODEL}
    models = {n: {**spec, "api_key_env": "GEMINI_API_KEY"} for n in ("gem-a", "gem-b")}
    arms = [{"model": "gem-a", "weight": 50, "control": True}, {"model": "gem-b", "weight": 50}]
    return {
        "models": models,
        "routes": {"larry": {"model": "gem-a"}},
        "experiments": [{"name": "bench-ab", "route": "larry", "arms": arms}],
    }


def request_rows(db: Path) -> int:
    """Rows in the router's request log."""
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM request").fetchone()[0])


def summarize(
    seq: dict[str, dict[str, Cell]], conc: dict[str, dict[str, Cell]], through: Sequence[str]
) -> dict[str, Any]:
    """Percentiles, throughput, added latency, ratios and the two targets."""
    out: dict[str, Any] = {"sequential": {}, "concurrent": {}, "added_latency_ms": {}}
    for mode in MODES:
        s = {w: {"n": len(c.lat), "errors": c.errors, **pct(c.lat)} for w, c in seq[mode].items()}
        out["sequential"][mode] = s
        out["concurrent"][mode] = {
            w: {
                "n": len(c.lat),
                "errors": c.errors,
                "rps": round(len(c.lat) / c.elapsed, 1) if c.elapsed else None,
                "rps_per_round": c.rounds,
                "server_cpu_ms_per_req": round(1000 * c.cpu_s / max(len(c.lat), 1), 3),
                "router_process_cpu_ms_per_req": round(
                    1000 * c.router_cpu_s / max(len(c.lat), 1), 3
                ),
                "machine_cpu_ms_per_req": round(1000 * c.machine_cpu_s / max(len(c.lat), 1), 3),
                "machine_busy_share": round(
                    c.machine_cpu_s / (c.elapsed * (os.cpu_count() or 1)), 3
                )
                if c.elapsed
                else None,
                **pct(c.lat),
                **(
                    {
                        "rows_waiting_at_window_end": c.backlog,
                        "seconds_to_store_them": c.drain_s,
                        "server_cpu_ms_per_req_incl_storing_them": round(
                            1000 * (c.cpu_s + c.drain_cpu_s) / max(len(c.lat), 1), 3
                        ),
                        "mean_rows_per_stored_batch": round(c.rows_written / c.batches_written)
                        if c.batches_written
                        else None,
                    }
                    if c.backlog
                    else {}
                ),
            }
            for w, c in conc[mode].items()
        }
        out["added_latency_ms"][mode] = {
            kind: {
                w: {f"p{p}": round(src[w][f"p{p}_ms"] - src["direct"][f"p{p}_ms"], 3) for p in PCTS}
                for w in through
                if w in src
            }
            for kind, src in (("sequential", s), ("concurrent", out["concurrent"][mode]))
        }
    return out


def judge(res: dict[str, Any], proxy: bool) -> dict[str, Any]:
    """Ratios larrylab/proxy and pass/fail against the targets."""
    t: dict[str, Any] = {"added_p50_le_1ms": {}, "throughput_ge_10x_proxy": {}, "ratios": {}}
    for mode in MODES:
        added = res["added_latency_ms"][mode]["sequential"]
        for w in ("larrylab-model", "larrylab-route"):
            v = added[w]["p50"]
            t["added_p50_le_1ms"][f"{mode}/{w}"] = {"added_p50_ms": v, "pass": v <= 1.0}
        if not proxy:
            t["throughput_ge_10x_proxy"] = "skipped: no bench/.litellm-venv (see --setup-litellm)"
            continue
        c = res["concurrent"][mode]
        ratio = c["larrylab-route"]["rps"] / c["litellm-proxy"]["rps"]
        t["throughput_ge_10x_proxy"][mode] = {"ratio": round(ratio, 2), "pass": ratio >= 10}
        cpu = (
            c["litellm-proxy"]["server_cpu_ms_per_req"]
            / c["larrylab-route"]["server_cpu_ms_per_req"]
        )
        t["ratios"][mode] = {
            "throughput_larrylab_over_proxy": round(ratio, 2),
            "server_cpu_per_req_proxy_over_larrylab": round(cpu, 2),
            **{
                f"added_p{p}_larrylab_over_proxy": round(
                    added["larrylab-route"][f"p{p}"] / added["litellm-proxy"][f"p{p}"], 3
                )
                for p in PCTS
            },
        }
    return t


def table(res: dict[str, Any]) -> str:
    """A plain-text table of the main numbers, the OpenAI path's then Gemini's."""
    head = f"{'proto':6} {'mode':6} {'way':18} {'seq p50':>8} {'p95':>7} {'p99':>7}"
    head += f" {'added p50':>9} {'c-rps':>7} {'c p50':>7} {'c p99':>7} {'cpu ms/req':>10}"
    lines = [head]
    for proto, sub in (("openai", res), ("gemini", res.get("gemini", {}))):
        for mode in MODES if "sequential" in sub else ():
            for w, s in sub["sequential"][mode].items():
                a = sub["added_latency_ms"][mode]["sequential"].get(w, {}).get("p50", 0.0)
                c = sub["concurrent"][mode][w]
                lines.append(
                    f"{proto:6} {mode:6} {w:18} {s['p50_ms']:8.2f} {s['p95_ms']:7.2f} "
                    f"{s['p99_ms']:7.2f} {a:9.2f} {c['rps'] or 0.0:7.1f} {c['p50_ms']:7.2f} "
                    f"{c['p99_ms']:7.2f} {c['server_cpu_ms_per_req']:10.2f}"
                )
    return "\n".join(lines)


def by_protocol(
    seq: dict[str, dict[str, Cell]], conc: dict[str, dict[str, Cell]], ways: Sequence[Way]
) -> dict[str, Any]:
    """`summarize` for each protocol's ways apart (Gemini's without their `gemini/` prefix,
    its added latency against its own `direct`): the OpenAI figures at the top level, as
    before, and Gemini's under `gemini`."""
    res: dict[str, Any] = {}
    for proto in PROTOCOLS:
        mine = [w for w in ways if w.protocol == proto]
        if not mine:
            continue
        prefix = GEMINI_PREFIX if proto == "gemini" else ""
        names = {w.name: w.name.removeprefix(prefix) for w in mine}
        s, c = ({m: {names[n]: v[m][n] for n in names} for m in MODES} for v in (seq, conc))
        summary = summarize(s, c, [names[w.name] for w in mine if w.through])
        if proto == "openai":
            res.update(summary)
        else:
            res[proto] = summary
    return res


async def measure(ways: Sequence[Way], args: argparse.Namespace) -> dict[str, Any]:
    """Run the sequential and concurrent phases against every way."""
    conn = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"content-type": "application/json"}  # and each way's key (`Way.headers`)
    phases = args.phases.split(",")
    res: dict[str, Any] = {}
    async with aiohttp.ClientSession(connector=conn, timeout=timeout, headers=headers) as session:
        if "standard" in phases:
            every = [w for w in ways if w.standard]
            await preflight(session, every)
            seq = await sequential(session, every, args.requests, warmup=50)
            conc = await concurrent(session, every, args.concurrency, args.window_s, args.rounds)
            res = by_protocol(seq, conc, every)
        if "sustained" in phases:
            named = {w.name: w for w in ways}
            variants = [named[name] for name in args.sustained_variant]
            pair = [named["larrylab-route"], *variants, named["larrylab-nolog"]]
            res["sustained"] = await sustained(
                session,
                pair,
                args.concurrency,
                args.sustained_s,
                args.sustained_rounds,
                args.sustained_modes.split(","),
            )
    return res


def python_speed_s() -> float:
    """Seconds for a Python loop of 10 million additions inside a function, best of three: how
    fast this VM runs Python, recorded with each run. Absolute latencies of runs on VMs of
    different speeds do not compare; the ratios within one run do."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(10_000_000):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the processes, measure, stop them, and collect the results."""
    speed_s = python_speed_s()
    if args.setup_litellm and not (LITELLM_VENV / "bin" / "litellm").exists():
        setup_litellm(LITELLM_VENV)
    phases = args.phases.split(",")
    standard = "standard" in phases
    protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
    openai_std, gemini_std = (standard and p in protocols for p in PROTOCOLS)
    proxy = standard and (LITELLM_VENV / "bin" / "litellm").exists()
    # (way, model, in the standard phase): the sustained phase needs only the route's routers
    # with and without logging (and its variants)
    larrylab_ways = [
        (name, model, openai_std)
        for name, model in LARRYLAB_WAYS
        if openai_std or ("sustained" in phases and name in ("larrylab-route", "larrylab-nolog"))
    ]
    larrylab_ways += [(name, "larry", False) for name in args.sustained_variant]
    procs: list[LocalProcess] = []
    with tempfile.TemporaryDirectory(prefix="larrylab-bench-") as tmp_s:
        tmp = Path(tmp_s)
        dbs = {name: tmp / name / "larrylab.db" for name, _, _ in larrylab_ways}
        gemini_dbs = {
            name: tmp / f"gemini-{name}" / "larrylab.db"
            for name, _ in (GEMINI_LARRYLAB_WAYS if gemini_std else ())
        }
        try:
            instant = ["--ttft-ms", "0", "--tokens-per-s", "0", "--latency-ms", "0"]
            sim = start_sim(log_dir=tmp, label="bench-instant", extra=instant)
            procs.append(sim)
            cfg, gemini_cfg = tmp / "larrylab.yaml", tmp / "larrylab-gemini.yaml"
            cfg.write_text(yaml.safe_dump(router_config(sim.url)))
            gemini_cfg.write_text(yaml.safe_dump(gemini_router_config(sim.url)))

            def talk() -> Conversations | None:  # each way holds its own conversations
                return Conversations() if args.traffic == "conversations" else None

            def router(db: Path, config: Path, env: dict[str, str]) -> LocalProcess:
                db.parent.mkdir()
                env = {
                    "LARRYLAB_SPILL_DIR": str(db.parent / "spill"),
                    "LARRYLAB_JOURNAL_DIR": str(db.parent / "spill" / "journal"),
                    **env,
                }
                home = db.parent  # also its working folder: a PYTHONPATH variant runs its
                # own checkout's code, not this one's (`python -m` imports from there first)
                url = f"sqlite:///{db}"
                r = start_router(log_dir=home, database_url=url, config=config, env=env, cwd=home)
                procs.append(r)
                return r

            # Gemini's routers first, each tried at once: until larrylab serves Gemini's
            # native API the run stops here, before the other ways are started
            gemini: list[Way] = []
            for name, model in GEMINI_LARRYLAB_WAYS if gemini_std else ():
                try:
                    r = router(gemini_dbs[name], gemini_cfg, {"GEMINI_API_KEY": "bench"})
                except RuntimeError as exc:
                    raise BenchError(
                        f"{GEMINI_PREFIX}{name}: larrylab serve did not start with the "
                        f"`api: gemini` models of {gemini_cfg.name}:\n{str(exc)[-3000:]}"
                    ) from None
                gemini.append(gemini_way(name, r.url, model, r.proc.pid, logs=True, talk=talk()))
                asyncio.run(preflight_alone(gemini[-1:]))
            floor = start_floor(sim.url, tmp) if standard else None
            if floor is not None:
                procs.append(floor)
            if gemini_std:
                pid = sim.proc.pid
                direct = gemini_way(
                    "direct", sim.url, GEMINI_MODEL, pid, through=False, talk=talk()
                )
                gemini.insert(0, direct)
            if gemini_std and floor is not None:
                pid = floor.proc.pid
                gemini.append(gemini_way("stack-floor", floor.url, GEMINI_MODEL, pid, talk=talk()))
            if gemini_std and proxy:
                procs.append(start_litellm(LITELLM_VENV, sim.url, tmp, "gemini"))
                pid = procs[-1].proc.pid
                gemini.append(gemini_way("litellm-proxy", procs[-1].url, "larry", pid, talk=talk()))
            ways = []
            if openai_std:
                pid = sim.proc.pid
                ways.append(Way("direct", f"{sim.url}/v1", "larry-v1", pid, False, talk=talk()))
            for name, model, in_standard in larrylab_ways:
                env = {LOG_OFF_ENV: "false"} if name == "larrylab-nolog" else {}
                env |= WRITER_ENV.get(name, {}) | args.sustained_variant.get(name, {})
                r = router(dbs[name], cfg, env)
                logs = name != "larrylab-nolog"
                way = Way(name, f"{r.url}/v1", model, r.proc.pid, logs=logs, talk=talk())
                ways.append(way if in_standard else replace(way, standard=False))
            if openai_std and floor is not None:
                pid = floor.proc.pid
                ways.append(Way("stack-floor", f"{floor.url}/v1", "larry-v1", pid, talk=talk()))
            if proxy and openai_std:
                procs.append(start_litellm(LITELLM_VENV, sim.url, tmp))
                pid = procs[-1].proc.pid
                ways.append(Way("litellm-proxy", f"{procs[-1].url}/v1", "larry", pid, talk=talk()))
            ways += gemini
            pids = [w.pid for w in ways]
            busy0, own0, t0 = machine_busy_s(), own_cpu_s(pids), time.perf_counter()
            res = asyncio.run(measure(ways, args))
            wall = time.perf_counter() - t0
            foreign = machine_busy_s() - busy0 - (own_cpu_s(pids) - own0)
        finally:
            for p in reversed(procs):
                p.stop()
        rows = {k: request_rows(db) for k, db in dbs.items()}
        gemini_rows = {k: request_rows(db) for k, db in gemini_dbs.items()}
    if openai_std:
        res["targets"] = judge(res, proxy)
        res["logging_cost"] = logging_cost(res, rows)
    elif rows:
        res["request_rows_written"] = rows
    if gemini_std:
        res["gemini"]["targets"] = judge(res["gemini"], proxy)
        res["gemini"]["request_rows_written"] = gemini_rows
    res["meta"] = {
        "python": sys.version.split()[0],
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "litellm_proxy": f"litellm[proxy]=={LITELLM_VERSION}" if proxy else "skipped (no venv)",
        "protocols": list(protocols),
        "sequential_requests_per_way_and_mode": args.requests,
        "concurrency": args.concurrency,
        "window_s": args.window_s,
        "rounds": args.rounds,
        "phases": args.phases,
        "traffic": args.traffic,
        "sustained_s": args.sustained_s,
        "sustained_rounds": args.sustained_rounds,
        "sustained_modes": args.sustained_modes,
        "sustained_variants": args.sustained_variant,
        "added_latency_method": "percentile of way minus same percentile of direct",
        "upstream": "larrylab sim --ttft-ms 0 --tokens-per-s 0 --latency-ms 0 (SIMULATED)",
        "stack_floor": "bench/stack_floor.py: uvicorn (httptools, uvloop) and aiohttp forwarding "
        "each request as it came, no larrylab code",
        "git": git_state(),
        "wall_s": round(wall, 1),
        "other_processes_cpu_share": round(max(foreign, 0.0) / (wall * (os.cpu_count() or 1)), 3),
        "python_10m_additions_s": speed_s,
    }
    if gemini_std:
        res["meta"]["gemini"] = {
            "paths": "POST /v1beta/models/{model}:generateContent and "
            ":streamGenerateContent?alt=sse, header x-goog-api-key, every reply's text read",
            "direct": f"the simulator's own Gemini endpoints, model {GEMINI_MODEL}",
            "larrylab": "routers with `api: gemini` models gem-a, gem-b (base_url = the "
            "simulator's root); larrylab-model calls gem-a, larrylab-route the route larry "
            "running experiment bench-ab (gem-a/gem-b 50/50)",
            "litellm_proxy": f"its own /v1beta/models/larry:generateContent, model_list larry = "
            f"gemini/{GEMINI_MODEL} with api_base <simulator>/v1beta",
        }
    return res


def git_state() -> dict[str, Any]:
    """Where the measured larrylab came from: its commit and uncommitted product files."""
    src = Path(larrylab.__file__).resolve().parent.parent

    def git(*a: str) -> str:
        run = subprocess.run(["git", "-C", str(src), *a], capture_output=True, text=True)
        return run.stdout.rstrip()

    dirty = git("status", "--porcelain", "--", "larrylab").splitlines()
    return {"source": str(src), "commit": git("rev-parse", "--short", "HEAD"), "dirty": dirty}


def record_run(result: dict[str, Any], out: Path | None) -> None:
    """Print a benchmark's result and add it to the JSON list in `out`, if given."""
    print(json.dumps(result, indent=2))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        runs = json.loads(out.read_text()) if out.exists() else []
        out.write_text(json.dumps([*runs, result], indent=2) + "\n")


def logging_cost(res: dict[str, Any], rows: dict[str, int]) -> dict[str, Any]:
    """Route throughput at concurrency with request logging on vs. off (if the router can)."""
    valid = rows["larrylab-nolog"] == 0
    out: dict[str, Any] = {
        "request_rows_written": rows,
        "logging_off": f"{LOG_OFF_ENV}=false (no request rows written)" if valid else
        f"NOT MEASURED: the router ignored {LOG_OFF_ENV}=false; logging-off needs that setting",
    }  # fmt: skip
    for mode in MODES:
        c = res["concurrent"][mode]
        route, nolog = c["larrylab-route"], c["larrylab-nolog"]
        on, off = route["rps"], nolog["rps"]
        bounded = c["larrylab-bounded"]["rps"]
        # All the CPU logging costs per request, the rows stored after the window included,
        # over the machine's CPU per request without logging: the throughput cost if every
        # row were stored within the window and the CPU bound the throughput (an upper bound
        # where the machine had idle CPU; see `machine_busy_share`).
        storing = route.get(
            "server_cpu_ms_per_req_incl_storing_them", route["server_cpu_ms_per_req"]
        )
        logging_cpu = storing - nolog["server_cpu_ms_per_req"]
        machine = nolog["machine_cpu_ms_per_req"]
        out[mode] = {
            "rps_on": on,
            "rps_off": off,
            "throughput_cost_pct": round(100 * (1 - on / off), 1) if valid else None,
            "throughput_cost_pct_median_of_rounds": round(
                statistics.median(
                    100 * (1 - a / b)
                    for a, b in zip(route["rps_per_round"], nolog["rps_per_round"], strict=True)
                ),
                1,
            )
            if valid
            else None,
            "logging_cpu_ms_per_req_incl_rows_stored_after_the_window": round(logging_cpu, 3),
            "machine_cpu_ms_per_req_logging_off": machine,
            "cpu_accounted_cost_pct": round(100 * logging_cpu / (machine + logging_cpu), 1)
            if valid
            else None,
            "rps_on_sustained": bounded,
            "sustained_cost_pct": round(100 * (1 - bounded / off), 1) if valid else None,
        }
    return out


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """`NAME:KEY=VALUE[,KEY=VALUE]` as (way name, environment); ValueError says what is wrong."""
    name, sep, settings = spec.partition(":")
    pairs = [p.partition("=") for p in settings.split(",") if p]
    if not name or not sep or not pairs or any(not k or not eq for k, eq, _ in pairs):
        raise ValueError(f"--sustained-variant {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE]")
    if name in {n for n, _ in LARRYLAB_WAYS}:
        raise ValueError(f"--sustained-variant {spec!r}: {name} is one of the standard ways")
    return name, {k: v for k, _, v in pairs}


def main() -> None:
    """Parse arguments, run, write the JSON and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setup-litellm", action="store_true", help="create bench/.litellm-venv")
    ap.add_argument("--requests", type=int, default=500, help="sequential requests per cell")
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--window-s", type=float, default=4.0, help="seconds per concurrent window")
    ap.add_argument("--rounds", type=int, default=3, help="concurrent windows per cell")
    ap.add_argument(
        "--phases",
        default="standard",
        help="standard (sequential and concurrent windows, every way), sustained (long windows "
        "of the route with logging on and off), or both: standard,sustained",
    )
    ap.add_argument(
        "--traffic",
        choices=("branching", "conversations"),
        default="branching",
        help="branching: each request of a thread resends the same 5 messages with a new last "
        "turn; conversations: 8-turn conversations, each request resending the conversation so "
        "far with the replies this way gave",
    )
    ap.add_argument(
        "--protocol",
        choices=("openai", "gemini", "both"),
        default="both",
        help="the standard phase's ways: OpenAI's chat completions (direct, larrylab, LiteLLM's "
        "proxy), Gemini's native generateContent (the same ways, under `gemini` in the JSON), or "
        "both in the same rounds; the sustained phase always measures the OpenAI path",
    )
    ap.add_argument("--sustained-s", type=float, default=30.0, help="seconds per window")
    ap.add_argument("--sustained-rounds", type=int, default=4)
    ap.add_argument("--sustained-modes", default="json,stream", help="json, stream or both")
    ap.add_argument(
        "--sustained-variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="another logging router for the sustained phase, with these extra environment "
        "settings (e.g. nice19:LARRYLAB_LOG_INDEXER_NICE=19), measured in the same rounds "
        "against the same router without logging; may be given more than once",
    )
    ap.add_argument("--out", type=Path, default=Path("bench/results/router_overhead.json"))
    args = ap.parse_args()
    if not set(args.phases.split(",")) <= {"standard", "sustained"}:
        ap.error(f"unknown phase in {args.phases!r}: use standard, sustained or both")
    if args.sustained_variant and "sustained" not in args.phases.split(","):
        ap.error("--sustained-variant needs the sustained phase: --phases sustained")
    try:
        args.sustained_variant = dict(map(parse_variant, args.sustained_variant))
    except ValueError as exc:
        ap.error(str(exc))
    try:
        res = run(args)
    except BenchError as exc:
        sys.exit(f"router_overhead: {exc}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    if "sequential" in res or "gemini" in res:
        print(table(res))
    shown = {k: res[k] for k in ("targets", "logging_cost", "sustained") if k in res}
    if "gemini" in res:
        shown["gemini_targets"] = res["gemini"]["targets"]
    print(json.dumps(shown, indent=2))


if __name__ == "__main__":
    main()
