"""Terminal output shared by the CLI and the demo: an experiment's report, rendered with rich."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from larrylab.experiments import ArmReport, CandidateResult


def _ms(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "-"


def _share(value: float | None) -> str:
    return f"{value:.0%}" if value is not None else "-"


def ineligible_lines(rows: Sequence[ArmReport]) -> list[str]:
    """Per arm with ineligible requests: `b: 12% of requests ineligible (tools 10%, ...)`."""
    out = []
    for r in rows:
        if r.ineligible_requests:
            reasons = ", ".join(
                f"{reason} {share:.0%}" for reason, share in r.ineligible_share_by_reason.items()
            )
            out.append(
                f"{r.arm}: {r.ineligible_requests} requests ({_share(r.ineligible_share)}) "
                f"ineligible, left out of the comparison ({reasons})"
            )
    return out


def render_arms(rows: Sequence[ArmReport], title: str | None = None) -> Table:
    """The report's per-arm rows: traffic, latency, ratings (scores and thumbs) and the share
    of requests a candidate could not serve as sent (ineligible; per reason: `ineligible_lines`)."""
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
        "thumbs",
        "up",
        "ineligible",
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
            _share(r.high_rating_share),
            str(r.thumbs_count),
            _share(r.thumbs_up_rate),
            _share(r.ineligible_share),
        )
    return table


def _pct(value: float | None, relative: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value:+.1%}" if relative else f"{value * 100:+.2f} pp"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


VERDICT_STYLE = {
    "ship": "bold green",
    "keep_running": "yellow",
    "stop": "bold red",
    "invalid": "bold red",
}


def render_candidate(candidate: CandidateResult, control: str) -> Table:
    """One candidate's metrics against the control, with lifts, intervals and p-values."""
    table = Table(
        "metric",
        "role",
        f"{control}",
        candidate.arm,
        "lift",
        "interval",
        "p",
        "adj. p",
        "outcome",
        title=f"{candidate.arm} vs {control}",
    )
    for m in candidate.metrics:
        t = m.test
        error = t.get("error")
        style = {"better": "green", "worse": "red"}.get(m.outcome, "")
        table.add_row(
            m.metric,
            m.role,
            f"{_num(m.control['mean'])} (n={int(m.control['n'])})",
            f"{_num(m.treatment['mean'])} (n={int(m.treatment['n'])})",
            "-" if error else _pct(t["effect"], m.relative),
            "-"
            if error
            else f"[{_pct(t['ci_low'], m.relative)}, {_pct(t['ci_high'], m.relative)}]",
            "-" if error else f"{t['p_value']:.3g}",
            f"{m.adjusted_p_value:.3g}" if m.adjusted_p_value is not None else "-",
            f"[{style}]{m.outcome}[/{style}]" if style else m.outcome,
        )
    return table


def verdict_line(candidate: CandidateResult) -> str:
    """`larry-v1: SHIP — reasons` with rich markup."""
    style = VERDICT_STYLE[candidate.verdict]
    text = f"[{style}]{candidate.arm}: {candidate.verdict.upper().replace('_', ' ')}[/{style}] — "
    text += "; ".join(candidate.reasons)
    if candidate.verdict == "keep_running" and candidate.ratings_needed_per_arm:
        text += (
            f"; about {candidate.ratings_needed_per_arm} more ratings per arm for the chosen MDE"
        )
    return text
