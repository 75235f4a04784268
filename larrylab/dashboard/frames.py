"""What people read on the dashboard: pandas frames of formatted text, one per view.

The same formatting functions are used by the tests to find the numbers on the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from larrylab.dashboard.insights import RouteTraffic
from larrylab.experiments import ArmReport, CandidateResult
from larrylab.release import AuditEventPublic, EvalResultPublic, ModelPublic, RolloutPublic

NONE = "\u2013"  # an en dash for a missing value ("-" starts a Markdown list in a cell)


def count(value: int | None) -> str:
    """An integer with thousands separators."""
    return NONE if value is None else f"{value:,}"


def ms(value: float | None) -> str:
    """Milliseconds: whole above 100 ms, one decimal below."""
    if value is None:
        return NONE
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def share(value: float | None) -> str:
    """A share as a percentage with one decimal."""
    return NONE if value is None else f"{value:.1%}"


def score(value: float | None) -> str:
    """A mean rating with two decimals."""
    return NONE if value is None else f"{value:.2f}"


def effect(value: float | None, relative: bool) -> str:
    """A lift: relative in percent, or an absolute difference in percentage points."""
    if value is None:
        return NONE
    return f"{value:+.1%}" if relative else f"{value * 100:+.2f} pp"


def mean(value: float | None) -> str:
    """A metric's mean: three significant digits, or whole numbers above 1000."""
    if value is None:
        return NONE
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def arm_frame(arms: Sequence[ArmReport]) -> pd.DataFrame:
    """The report's per-arm rows: traffic, latency, ratings (scores and thumbs), and the share
    of requests a candidate could not serve as sent (ineligible), in all and per reason."""
    reasons = sorted({reason for s in arms for reason in s.ineligible_by_reason})
    rows = [
        {
            "arm": s.arm + (" (control)" if s.control else ""),
            "weight %": f"{s.weight:g}",
            "requests": count(s.requests),
            "threads": count(s.threads),
            "p50 ms": ms(s.latency_ms.p50),
            "p95 ms": ms(s.latency_ms.p95),
            "p99 ms": ms(s.latency_ms.p99),
            "TTFT p50": ms(s.ttft_ms.p50),
            "TTFT p95": ms(s.ttft_ms.p95),
            "TTFT p99": ms(s.ttft_ms.p99),
            "errors": count(s.errors),
            "fallbacks": count(s.fallbacks),
            "ratings": count(s.feedback_count),
            "mean score": score(s.mean_score),
            "≥4★ share": share(s.high_rating_share),
            "thumbs": count(s.thumbs_count),
            "thumbs-up share": share(s.thumbs_up_rate),
            "ineligible": share(s.ineligible_share),
            **{
                f"ineligible: {reason}": share(
                    s.ineligible_share_by_reason.get(reason, 0.0)
                    if s.ineligible_share is not None
                    else None
                )
                for reason in reasons
            },
        }
        for s in arms
    ]
    return pd.DataFrame(rows).set_index("arm") if rows else pd.DataFrame()


def metric_frame(candidate: CandidateResult) -> pd.DataFrame:
    """One candidate's metrics against the control: means, lift, interval, p-values, outcome."""
    rows: list[dict[str, Any]] = []
    for m in candidate.metrics:
        t = m.test
        failed = bool(t.get("error"))
        rows.append(
            {
                "metric": m.metric,
                "role": m.role,
                "control": f"{mean(m.control['mean'])} (n={int(m.control['n']):,})",
                "candidate": f"{mean(m.treatment['mean'])} (n={int(m.treatment['n']):,})",
                "lift": NONE if failed else effect(t["effect"], m.relative),
                "95% interval": NONE
                if failed
                else f"[{effect(t['ci_low'], m.relative)}, {effect(t['ci_high'], m.relative)}]",
                "p": NONE if failed else f"{t['p_value']:.3g}",
                "adj. p": NONE if m.adjusted_p_value is None else f"{m.adjusted_p_value:.3g}",
                "outcome": m.outcome,
            }
        )
    return pd.DataFrame(rows).set_index("metric")


def traffic_frame(traffic: Sequence[RouteTraffic]) -> pd.DataFrame:
    """Per-route requests and error rates over the last hour and day."""
    rows = [
        {
            "route": t.route,
            "requests 1 h": count(t.requests_hour),
            "error rate 1 h": share(t.error_rate_hour),
            "requests 24 h": count(t.requests_day),
            "error rate 24 h": share(t.error_rate_day),
            "fallbacks 24 h": count(t.fallbacks_day),
        }
        for t in traffic
    ]
    return pd.DataFrame(rows).set_index("route") if rows else pd.DataFrame()


def _flat(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, list):
        out[prefix] = ", ".join(str(v) for v in value)
    else:
        out[prefix] = NONE if value is None else str(value)


def lineage_frame(lineage: dict[str, Any]) -> pd.DataFrame:
    """A model's lineage as key/value rows (nested keys dotted)."""
    flat: dict[str, str] = {}
    _flat("", lineage, flat)
    return pd.DataFrame({"value": flat}).rename_axis("lineage")


def registry_frame(models: Sequence[ModelPublic], routes: dict[str, str]) -> pd.DataFrame:
    """The registry: state, how each model is reached, the routes it serves, its origin."""
    serves: dict[str, list[str]] = {}
    for route, model in routes.items():
        serves.setdefault(model, []).append(route)
    rows = [
        {
            "model": m.name,
            "state": m.state,
            "target": m.litellm_model or f"{m.base_url or '-'} ({m.model or '-'})",
            "serves routes": ", ".join(sorted(serves.get(m.name, []))) or NONE,
            "base model": str(m.lineage.get("base_model", NONE)),
            "dataset": str(m.lineage.get("dataset_manifest_hash", NONE))[:12],
            "updated": f"{m.updated_at:%Y-%m-%d %H:%M}",
        }
        for m in models
    ]
    return pd.DataFrame(rows).set_index("model")


def interval(mean_: float, low: float, high: float) -> str:
    """`0.812 [0.770, 0.850]`."""
    return f"{mean_:.3f} [{low:.3f}, {high:.3f}]"


def eval_rows(model: str, results: Sequence[EvalResultPublic]) -> list[dict[str, Any]]:
    """Chart rows of one model's eval results (one per task, labelled by category)."""
    label = {r.task: r.category for r in results}
    if len(set(label.values())) < len(label):  # several tasks share a category
        label = {r.task: f"{r.category} · {r.task}" for r in results}
    return [
        {
            "model": model,
            "category": label[r.task],
            "mean": r.mean,
            "ci_low": r.ci_low,
            "ci_high": r.ci_high,
            "n_samples": r.n_samples,
        }
        for r in results
    ]


def eval_frame(
    results: Sequence[EvalResultPublic],
    baseline: str | None,
    baseline_results: Sequence[EvalResultPublic],
) -> pd.DataFrame:
    """Per task: the candidate's mean and interval, the baseline's, and the difference."""
    base = {r.task: r for r in baseline_results}
    rows = []
    for r in results:
        b = base.get(r.task)
        row = {
            "task": r.task,
            "category": r.category,
            "samples": count(r.n_samples),
            "candidate": interval(r.mean, r.ci_low, r.ci_high),
        }
        if baseline:
            row[f"baseline ({baseline})"] = interval(b.mean, b.ci_low, b.ci_high) if b else NONE
            row["difference"] = f"{r.mean - b.mean:+.3f}" if b else NONE
        rows.append(row)
    return pd.DataFrame(rows).set_index("task")


def gate_categories_frame(categories: dict[str, Any]) -> pd.DataFrame:
    """The gate's per-category evidence: paired samples, candidate and baseline means."""
    rows = []
    for name, stats in categories.items():
        if not isinstance(stats, dict):
            continue
        cand, base = stats.get("candidate"), stats.get("baseline")
        rows.append(
            {
                "category": name,
                "paired samples": count(stats.get("n")),
                "candidate": NONE if cand is None else f"{cand:.3f}",
                "baseline": NONE if base is None else f"{base:.3f}",
                "difference": NONE if cand is None or base is None else f"{cand - base:+.3f}",
            }
        )
    return pd.DataFrame(rows).set_index("category") if rows else pd.DataFrame()


def rollout_frame(rollouts: Sequence[RolloutPublic]) -> pd.DataFrame:
    """Rollouts, newest first."""
    rows = [
        {
            "id": r.id,
            "route": r.route,
            "candidate": r.candidate,
            "baseline": r.baseline,
            "status": r.status,
            "weight %": f"{r.weight:g}",
            "steps": " → ".join(f"{s:g}" for s in r.steps),
            "started": f"{r.created_at:%Y-%m-%d %H:%M}",
            "finished": f"{r.finished_at:%Y-%m-%d %H:%M}" if r.finished_at else NONE,
        }
        for r in rollouts
    ]
    return pd.DataFrame(rows).set_index("id")


def event_frame(events: Sequence[AuditEventPublic]) -> pd.DataFrame:
    """Audit events, newest first."""
    rows = [
        {
            "time (UTC)": f"{e.created_at:%Y-%m-%d %H:%M:%S}",
            "action": e.action,
            "state": f"{e.from_state or NONE} → {e.to_state}" if e.to_state else NONE,
            "actor": e.actor,
            "reason": e.reason or NONE,
        }
        for e in events
    ]
    return pd.DataFrame(rows)
