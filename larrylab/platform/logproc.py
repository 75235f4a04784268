"""The log writer process: the router's request rows written by a child process.

Writing a batch is Python work (transcript hashing, building rows, the driver's executemany).
In a thread of the router's process it competes with the event loop for the GIL: at
concurrency 20 the router spent 0.27 ms more CPU per request with logging on, against 0.15 ms
for the writer measured alone (`bench/results/router_overhead.md`). Here the router only
pickles finished records down a pipe; the child batches and stores them (`BatchStore`).

Losing nothing:
- The router keeps every record it sent until the child acknowledges it as durable (stored,
  or appended to the spill file). When the child dies, the router starts another and sends
  the unacknowledged records again; request ids are primary keys and rollups count only rows
  stored now, so a record stored twice counts once.
- When the router dies (SIGKILL), the child sees the pipe close, writes what it received and
  exits; only the records of the router's last 10 ms, not yet sent, are lost.
- The child ignores SIGINT and SIGTERM (they reach the whole process group from a terminal
  or a supervisor): it stops when the router closes the pipe, after the router has drained.

Wire format: the router sends frames of a 4-byte little-endian length and a pickle of
`("config", dict)`, `("rows", [values, ...])` or `("replay",)`; the child answers with 9-byte
frames, a kind byte (`A` records durable, `R` rows replayed, `E` replay failed) and a count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import select
import signal
import struct
import sys
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from larrylab.platform.logstore import BatchStore, RequestRecord, record_values
from larrylab.platform.logwriter import WriterBase
from larrylab.platform.spill import SpillDir

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("<I")
_ANSWER = struct.Struct("<cQ")
_MAX_BACKOFF_S = 5.0
# Records go to the child in one frame per interval: a frame per event-loop iteration woke the
# child hundreds of times a second and cost more CPU than the rows. (A SIGKILL of the router
# alone loses at most this interval's records.)
_SEND_EVERY_S = 0.01


def _frame(message: tuple[Any, ...]) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(payload)) + payload


def _rows_frame(records: Iterable[RequestRecord]) -> bytes:
    return _frame(("rows", [record_values(r) for r in records]))


class ProcessLogWriter(WriterBase):
    """Writes request records from a child process (`python -m larrylab.platform.logproc`)."""

    def __init__(
        self,
        database_url: str,
        *,
        batch_size: int = 1000,
        flush_interval_s: float = 0.2,
        queue_size: int = 10_000,
        spill_dir: Path = Path("larrylab-spill"),
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            queue_size=queue_size,
            spill_dir=spill_dir,
        )
        self._config = {
            "database_url": database_url,
            "batch_size": batch_size,
            "flush_interval_s": flush_interval_s,
            "spill_dir": str(spill_dir),
        }
        self._unacked: deque[RequestRecord] = deque()  # sent or to send, not yet durable
        self._outbox: list[RequestRecord] = []  # not yet sent
        self._send_timer: asyncio.TimerHandle | None = None
        self._replays: deque[asyncio.Future[int]] = deque()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._failures = 0  # child exits in a row with nothing acknowledged

    @property
    def pid(self) -> int | None:
        """The child's process id (None before `start()`)."""
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        """Start the child process."""
        await self._spawn()

    async def _spawn(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "larrylab.platform.logproc",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdin is not None
        self._proc = proc
        proc.stdin.write(_frame(("config", self._config)))
        self._outbox.clear()  # everything in it is in _unacked, sent now
        if self._unacked:
            proc.stdin.write(_rows_frame(self._unacked))
        if self._closing:
            proc.stdin.close()
        self._reader = asyncio.create_task(self._answers(proc), name="larrylab-log-acks")

    def _enqueue(self, record: RequestRecord) -> None:
        self._unacked.append(record)
        self._outbox.append(record)
        if self._send_timer is None:
            self._send_timer = asyncio.get_running_loop().call_later(_SEND_EVERY_S, self._send)

    def _send(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        proc = self._proc
        if not self._outbox or proc is None or proc.stdin is None or proc.stdin.is_closing():
            return  # a restarting child is sent everything unacknowledged
        proc.stdin.write(_rows_frame(self._outbox))
        self._outbox.clear()

    async def replay(self) -> int:
        """Have the child write spilled rows back to the store; returns how many it wrote."""
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            return 0
        self._send()  # keep order: rows finished before this call go first
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._replays.append(done)
        proc.stdin.write(_frame(("replay",)))
        return await done

    async def close(self) -> None:
        """Send what is left, let the child write everything, then wait for it to exit."""
        if self._proc is None or self._closing:
            return
        self._closing = True
        self._send()
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        await self.flush()
        while True:  # a child that died while closing was replaced: wait for the last one
            reader = self._reader
            if reader is None:
                break
            await reader
            if reader is self._reader:
                break

    async def _answers(self, proc: asyncio.subprocess.Process) -> None:
        """Read the child's answers until it exits; start another if records are unwritten."""
        assert proc.stdout is not None
        try:
            while True:
                kind, count = _ANSWER.unpack(await proc.stdout.readexactly(_ANSWER.size))
                if kind == b"A":
                    self._failures = 0
                    await self._done([self._unacked.popleft() for _ in range(count)])
                elif kind == b"R":
                    _settle(self._replays.popleft(), count)
                else:
                    _settle(self._replays.popleft(), RuntimeError("see the log writer's warning"))
        except asyncio.IncompleteReadError:
            pass
        code = await proc.wait()
        for pending in self._replays:
            _settle(pending, RuntimeError("the log writer process exited during a replay"))
        self._replays.clear()
        if self._closing and not self._unacked:
            return
        self._failures += 1
        delay = min(_MAX_BACKOFF_S, 0.1 * 2 ** (self._failures - 1))
        log.error(
            "log writer process %d exited with %s; starting another in %.1f s and sending it "
            "the %d rows not yet written",
            proc.pid,
            code,
            delay,
            len(self._unacked),
        )
        while True:
            await asyncio.sleep(delay)
            try:
                await self._spawn()
                return
            except OSError as exc:  # rows stay queued here (back-pressure) until one starts
                delay = min(_MAX_BACKOFF_S, delay * 2)
                log.error("cannot start the log writer process (%s); retry in %.1f s", exc, delay)


def _settle(future: asyncio.Future[int], outcome: int | Exception) -> None:
    """Resolve a replay's future unless its caller stopped waiting (cancelled at shutdown)."""
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


# The child process.


class _Frames:
    """The router's frames, read from a pipe with `select` (one thread, no queue)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def read(self, timeout: float | None) -> list[tuple[Any, ...]] | None:
        """The messages complete within `timeout` seconds (None: wait for data); None once the
        router closed the pipe (a frame it was cut off in the middle of is dropped)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        data = os.read(self.fd, 1 << 20)
        if not data:
            return None
        self.buffer += data
        messages, pos = [], 0
        while len(self.buffer) - pos >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self.buffer, pos)
            end = pos + _LENGTH.size + length
            if end > len(self.buffer):
                break
            messages.append(pickle.loads(self.buffer[pos + _LENGTH.size : end]))
            pos = end
        del self.buffer[:pos]
        return messages


class _Child:
    """The child's loop: gather records into batches, store them, acknowledge them."""

    def __init__(self, store: BatchStore, answers: IO[bytes], config: dict[str, Any]) -> None:
        self.store = store
        self.answers = answers
        self.batch_size: int = config["batch_size"]
        self.interval: float = config["flush_interval_s"]
        self.records: list[RequestRecord] = []

    def answer(self, kind: bytes, count: int) -> None:
        with contextlib.suppress(BrokenPipeError):  # router gone: still write what came
            self.answers.write(_ANSWER.pack(kind, count))

    def take(self, message: tuple[Any, ...]) -> None:
        if message[0] == "rows":
            self.records.extend(RequestRecord(*values) for values in message[1])
        elif message[0] == "replay":
            self.write_all()
            try:
                self.answer(b"R", self.store.replay(self.batch_size))
            except Exception as exc:  # the database is still down: the router asks again later
                log.warning("replaying spilled request rows failed: %s", exc)
                self.answer(b"E", 0)

    def write_all(self) -> None:
        while self.records:
            batch = self.records[: self.batch_size]
            del self.records[: self.batch_size]
            self.store.write_or_spill(batch)
            self.answer(b"A", len(batch))

    def run(self, frames: _Frames) -> None:
        """Cut a batch when it is full or one interval after its first record arrived."""
        reading = True
        while reading:
            if not self.records:
                if (messages := frames.read(None)) is None:
                    break
                for message in messages:
                    self.take(message)
                continue
            deadline = time.monotonic() + self.interval
            while len(self.records) < self.batch_size:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    break
                if (messages := frames.read(wait)) is None:
                    reading = False
                    break
                for message in messages:
                    self.take(message)
            self.write_all()
        self.write_all()


def main() -> None:
    """Run as the router's log writer: frames on stdin, answers on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints must not corrupt the answers
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.WARNING,
        format="larrylab log writer [%(process)d] %(levelname)s: %(message)s",
    )
    frames = _Frames(sys.stdin.fileno())
    first: list[tuple[Any, ...]] | None = []
    while first == []:
        first = frames.read(None)
    if not first or first[0][0] != "config":
        sys.exit("larrylab log writer: expected a config frame from the router on stdin")
    config: dict[str, Any] = first[0][1]

    from larrylab.platform.db import make_engine

    engine = make_engine(config["database_url"], pool_size=1)
    store = BatchStore(engine, SpillDir(Path(config["spill_dir"])))
    child = _Child(store, answers, config)
    for message in first[1:]:
        child.take(message)
    try:
        child.run(frames)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
