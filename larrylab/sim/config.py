"""`SimConfig`: how the simulated upstream behaves (timing, faults, labelling)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class SimConfig:
    """Settings of one simulated upstream.

    Times are medians of lognormal draws with `latency_sigma` as sigma (0 = fixed values).
    Rates are probabilities per request. The defaults answer like a healthy hosted model.

    Attributes:
        latency_ms: Extra latency before the response starts (network, queueing).
        latency_sigma: Lognormal sigma for the `latency_ms` and `ttft_ms` draws.
        ttft_ms: Median time to first token.
        tokens_per_s: Decode speed after the first token; 0 or less means instant.
        error_rate: Probability that a request fails with `error_status` before any byte.
        error_status: HTTP status of injected failures (400-599).
        hang_rate: Probability that a request sends nothing for `hang_s` seconds first.
        hang_s: How long a hanging request stays silent.
        drop_rate: Probability that a streaming reply is cut mid-stream.
        seed: Seed of the random draws; None for fresh randomness.
        label: Name shown in the banner, `system_fingerprint` and `x-larrylab-sim` header.
        models: Models listed by `/v1/models` and `/api/tags`; requests may name any model.
        structured_bias: Probability that a number in a structured-output reply is drawn at
            the top of its schema range instead of uniformly (0 = uniform). It simulates a
            model that answers high, e.g. an LLM judge that mostly approves.
    """

    latency_ms: float = 0.0
    latency_sigma: float = 0.25
    ttft_ms: float = 150.0
    tokens_per_s: float = 80.0
    error_rate: float = 0.0
    error_status: int = 500
    hang_rate: float = 0.0
    hang_s: float = 300.0
    drop_rate: float = 0.0
    seed: int | None = None
    label: str = "simulated"
    models: tuple[str, ...] = ("gemini-2.5-flash", "larry-v1")
    structured_bias: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        for f in fields(self):
            value = getattr(self, f.name)
            is_number = isinstance(value, float | int) and not isinstance(value, bool)
            if is_number and not math.isfinite(value):
                raise ValueError(f"SimConfig.{f.name} must be a finite number, got {value!r}.")
        for name in ("error_rate", "hang_rate", "drop_rate", "structured_bias"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"SimConfig.{name} must be between 0 and 1, got {rate!r}.")
        for name in ("latency_ms", "latency_sigma", "ttft_ms", "hang_s"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"SimConfig.{name} must not be negative, got {value!r}.")
        if isinstance(self.error_status, bool) or not 400 <= self.error_status <= 599:
            raise ValueError(
                f"SimConfig.error_status must be an HTTP error status (400-599), "
                f"got {self.error_status!r}."
            )
        if not self.label.strip():
            raise ValueError("SimConfig.label must not be empty.")
        if not (self.label.isascii() and self.label.isprintable()):
            raise ValueError(
                f"SimConfig.label must be printable ASCII (it is sent in an HTTP header), "
                f"got {self.label!r}."
            )
        if any(not isinstance(m, str) or not m.strip() for m in self.models):
            raise ValueError(f"SimConfig.models must be non-empty strings, got {self.models!r}.")

    @property
    def fingerprint(self) -> str:
        """The `system_fingerprint` of every reply: `larrylab-sim:<label>`."""
        return f"larrylab-sim:{self.label}"
