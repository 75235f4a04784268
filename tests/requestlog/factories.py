"""Request records for the request-log tests: random arms, statuses and threads, seeded."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from larrylab.requestlog._journal import SegmentReader
from larrylab.requestlog._store import RECORD_FIELDS, RequestRecord

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def records(n: int, seed: int) -> list[RequestRecord]:
    """`n` finished requests over about n/3 threads of two arms, reproducible from `seed`."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        arm = rng.choice(["a", "b"])
        status = rng.choice(["ok", "ok", "ok", "error", "cancelled"])
        out.append(
            RequestRecord(
                id=f"r{i}",
                thread_id=f"t{rng.randrange(n // 3)}",
                unit_source="user",
                route="larry",
                experiment="exp",
                arm=arm,
                model=arm,
                upstream_model=arm,
                stream=True,
                status=status,
                http_status=200,
                error_class=None,
                error_message=None,
                fallback_from=arm if rng.random() < 0.1 else None,
                latency_ms=rng.uniform(50, 900),
                ttft_ms=rng.choice([None, rng.uniform(10, 200)]),
                upstream_ms=1.0,
                overhead_ms=0.5,
                prompt_tokens=1,
                completion_tokens=1,
                protocol="openai",
                ineligible=None,
                stripped=False,
                created_at=T0,
                finished_at=T0,
                prompt=[{"role": "user", "content": f"q{i}"}],
                reply={"role": "assistant", "content": "a"},
            )
        )
    return out


def to_record(row: Sequence[Any]) -> RequestRecord:
    """The record of a row `SegmentReader.read_rows` gave (its times and prompt decoded)."""
    named = dict(zip(RECORD_FIELDS, row, strict=True))
    for key in ("created_at", "finished_at"):
        named[key] = datetime.fromisoformat(named[key])
    if isinstance(named["prompt"], bytes):
        named["prompt"] = orjson.loads(named["prompt"])
    return RequestRecord(**named)


def read_records(
    reader: SegmentReader, offset: int, max_rows: int
) -> tuple[list[RequestRecord], int]:
    """`reader.read_rows` as records."""
    rows, offset = reader.read_rows(offset, max_rows)
    return [to_record(row) for row in rows], offset
