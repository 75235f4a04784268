"""Circuit breakers open after repeated failures, let one probe through after the cool-down."""

from __future__ import annotations

from larrylab.router._breaker import CircuitBreakers


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_and_recovers_through_a_probe() -> None:
    clock = Clock()
    changes: list[tuple[str, str]] = []
    b = CircuitBreakers(
        failure_threshold=3,
        cooldown_s=10,
        clock=clock,
        on_change=lambda m, s: changes.append((m, s)),
    )
    for _ in range(2):
        b.failure("m")
    assert b.allow("m") and b.state("m") == "closed"
    b.failure("m")
    assert b.state("m") == "open" and not b.allow("m")
    clock.now = 10.0
    assert b.state("m") == "half_open"
    assert b.allow("m")  # the probe
    assert not b.allow("m")  # only one probe at a time
    b.failure("m")  # probe failed: open again for a full cool-down
    assert b.state("m") == "open"
    clock.now = 20.0
    assert b.allow("m")
    b.success("m")
    assert b.state("m") == "closed" and b.allow("m")
    assert changes == [("m", "open"), ("m", "open"), ("m", "closed")]


def test_success_resets_the_count() -> None:
    b = CircuitBreakers(failure_threshold=3)
    b.failure("m")
    b.failure("m")
    b.success("m")
    b.failure("m")
    b.failure("m")
    assert b.state("m") == "closed"
    assert b.states() == {"m": "closed"}
