"""Terminal renderings shared by the CLI and the demo (rich tables)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from larrylab.platform.summary import ArmSummary


def _ms(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "-"


def summary_table(rows: Sequence[ArmSummary], title: str | None = None) -> Table:
    """Per-arm traffic, latency and ratings."""
    table = Table(
        "arm",
        "weight",
        "requests",
        "threads",
        "errors",
        "fallbacks",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "ttft p50",
        "ratings",
        "mean",
        "≥4★",
        title=title,
    )
    for r in rows:
        table.add_row(
            r.arm + (" (control)" if r.control else ""),
            f"{r.weight:g}",
            str(r.requests),
            str(r.threads),
            str(r.errors),
            str(r.fallbacks),
            _ms(r.latency_ms.p50),
            _ms(r.latency_ms.p95),
            _ms(r.latency_ms.p99),
            _ms(r.ttft_ms.p50),
            str(r.feedback_count),
            f"{r.mean_score:.2f}" if r.mean_score is not None else "-",
            f"{r.high_rating_share:.0%}" if r.high_rating_share is not None else "-",
        )
    return table
