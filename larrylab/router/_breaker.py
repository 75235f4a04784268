"""Circuit breakers per model: skip an arm that keeps failing, probe it again after a cool-down.

closed --(N consecutive failures)--> open --(cool-down elapsed)--> half_open
half_open --(probe succeeds)--> closed;  half_open --(probe fails)--> open
While a candidate arm's breaker is open its traffic goes to the control arm.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _State:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class CircuitBreakers:
    """The breakers of one router process, one per model."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self._threshold = failure_threshold
        self._cooldown = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._states: dict[str, _State] = {}

    def state(self, model: str) -> str:
        """`closed`, `open` or `half_open`."""
        s = self._states.get(model)
        if s is None or s.opened_at is None:
            return "closed"
        if s.probing or self._clock() - s.opened_at >= self._cooldown:
            return "half_open"
        return "open"

    def states(self) -> dict[str, str]:
        """Every model that has a breaker, with its state."""
        return {model: self.state(model) for model in self._states}

    def allow(self, model: str) -> bool:
        """Whether a request may go to `model` now (one probe at a time when half open)."""
        s = self._states.get(model)
        if s is None or s.opened_at is None:
            return True
        if s.probing or self._clock() - s.opened_at < self._cooldown:
            return False
        s.probing = True
        return True

    def success(self, model: str) -> None:
        """Record a success; closes the breaker."""
        s = self._states.get(model)
        if s is None:
            return
        was_open = s.opened_at is not None
        s.failures, s.opened_at, s.probing = 0, None, False
        if was_open:
            log.warning("circuit breaker for model %s closed: it answers again", model)
            self._notify(model, "closed")

    def failure(self, model: str) -> None:
        """Record a failure; opens the breaker after enough in a row (or a failed probe)."""
        s = self._states.setdefault(model, _State())
        s.failures += 1
        if s.probing or (s.opened_at is None and s.failures >= self._threshold):
            s.opened_at, s.probing = self._clock(), False
            log.warning(
                "circuit breaker for model %s open after %d failures: its traffic goes to the "
                "control arm for %.0fs",
                model,
                s.failures,
                self._cooldown,
            )
            self._notify(model, "open")

    def _notify(self, model: str, state: str) -> None:
        if self._on_change is not None:
            self._on_change(model, state)
