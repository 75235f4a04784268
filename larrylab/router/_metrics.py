"""Prometheus metrics of the router, on a registry owned by one app (no global state)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class RouterMetrics:
    """Requests, errors, fallbacks, latency and time to first token per route and arm."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # (route, arm, status) -> its request counter, latency and TTFT histograms: `labels()`
        # takes a lock and a lookup per call, and every request needs three of them.
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}
        labels = ("route", "arm")
        self.requests = Counter(
            "larrylab_requests",
            "Chat completion requests",
            (*labels, "status"),
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "larrylab_fallbacks",
            "Requests served by the control after the arm failed",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "larrylab_latency_seconds",
            "Total latency seen by the client",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "larrylab_ttft_seconds",
            "Time to first token",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.breaker_open = Gauge(
            "larrylab_breaker_open",
            "1 while a model's circuit breaker is open",
            ("model",),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "larrylab_log_queue_depth", "Request rows waiting to be written", registry=self.registry
        )
        self.log_rows = Counter(
            "larrylab_log_rows_written", "Request rows written to the store", registry=self.registry
        )
        self.log_batches = Counter(
            "larrylab_log_batches_written",
            "Batches the request rows were written in (rows / batches: the mean batch)",
            registry=self.registry,
        )
        self.log_quarantined = Counter(
            "larrylab_log_rows_quarantined",
            "Rows the database refused, kept in the quarantine file with the reason "
            "(kind: requests or feedback)",
            ("kind",),
            registry=self.registry,
        )
        for kind in ("requests", "feedback"):
            self.log_quarantined.labels(kind)  # shown at 0 from the start
        self._log_seen = (0, 0)  # (rows, batches) the two counters hold
        self._quarantined_seen: dict[str, int] = {}  # kind -> rows the counter holds

    def observe(
        self,
        *,
        route: str,
        arm: str,
        status: str,
        latency_s: float,
        ttft_s: float | None,
        fallback: bool,
    ) -> None:
        """Record one finished request."""
        key = (route, arm, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, arm, status),
                self.latency.labels(route, arm),
                self.ttft.labels(route, arm),
            )
            self._children[key] = children
        requests, latency, ttft = children
        requests.inc()
        latency.observe(latency_s)
        if ttft_s is not None:
            ttft.observe(ttft_s)
        if fallback:
            self.fallbacks.labels(route, arm).inc()

    def log_writer_state(
        self, depth: int, written: tuple[int, int], quarantined: dict[str, int] | None = None
    ) -> None:
        """Follow the log writer: rows waiting, rows and batches written so far, and rows
        quarantined so far per kind."""
        for kind, rows in (quarantined or {}).items():
            seen = self._quarantined_seen.get(kind, 0)
            if rows > seen:
                self.log_quarantined.labels(kind).inc(rows - seen)
                self._quarantined_seen[kind] = rows
        self.queue_depth.set(depth)
        rows, batches = written
        seen_rows, seen_batches = self._log_seen
        self.log_rows.inc(max(0, rows - seen_rows))
        self.log_batches.inc(max(0, batches - seen_batches))
        self._log_seen = (max(rows, seen_rows), max(batches, seen_batches))

    def breaker_changed(self, model: str, state: str) -> None:
        """Follow a breaker's state change."""
        self.breaker_open.labels(model).set(1 if state == "open" else 0)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
