"""Request records for the request-log tests: random arms, statuses and threads, seeded."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from larrylab.requestlog._store import RequestRecord

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
                created_at=T0,
                finished_at=T0,
                prompt=[{"role": "user", "content": f"q{i}"}],
                reply={"role": "assistant", "content": "a"},
            )
        )
    return out
