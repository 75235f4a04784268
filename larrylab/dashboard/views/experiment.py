"""Experiment: its report (per-arm rows; tests against the control with their intervals,
verdicts, SRM), latency and rating distributions, and time series."""

from __future__ import annotations

import streamlit as st

from larrylab.dashboard import charts, frames
from larrylab.dashboard.data import (
    ExperimentData,
    database_url,
    experiment_names,
    friendly_errors,
    load_experiment,
)
from larrylab.experiments import CandidateResult

WINDOWS = {"last 24 hours": 1, "last 7 days": 7, "whole experiment": None}
DEFAULT_WINDOW = "last 7 days"
VERDICTS = {
    "ship": (st.success, "SHIP"),
    "keep_running": (st.info, "KEEP RUNNING"),
    "stop": (st.error, "STOP"),
    "invalid": (st.error, "INVALID"),
}


def _choose(url: str) -> str | None:
    experiments = experiment_names(url)
    if not experiments:
        st.info("No experiments yet: create one with `larrylab experiment create`.")
        return None
    names = [e.name for e in experiments]
    wanted = st.query_params.get("experiment")
    index = names.index(wanted) if wanted in names else 0
    labels = {e.name: f"{e.name} ({e.status})" for e in experiments}
    name = st.selectbox("Experiment", names, index=index, format_func=labels.__getitem__)
    st.query_params["experiment"] = name
    return name


def _verdict(cand: CandidateResult) -> None:
    show, label = VERDICTS[cand.verdict]
    text = f"**{cand.arm}: {label}** — " + "; ".join(cand.reasons)
    if cand.verdict == "keep_running" and cand.ratings_needed_per_arm:
        text += f"; about {cand.ratings_needed_per_arm:,} more ratings per arm for the chosen MDE"
    show(text)


def _statistics(data: ExperimentData) -> None:
    report = data.report
    st.subheader("Report: candidates against the control")
    if report is None:
        st.info("This experiment has no control arm, so there is nothing to test against.")
        return
    st.caption(
        f"{report.method.replace('_', ' ')} tests against {report.control}, "
        f"alpha {report.alpha:g}, decision metrics Holm-corrected; "
        f"SRM check p = {report.srm_p_value:.4g} on threads per arm."
    )
    for cand in report.candidates:
        _verdict(cand)
        chart = charts.effect_intervals(cand)
        if chart is not None:
            st.altair_chart(chart, width="stretch")
        st.table(frames.metric_frame(cand))


def _distributions(data: ExperimentData) -> None:
    left, right = st.columns(2)
    latency = charts.latency_distribution(data.latency_bins, upper=data.histogram_upper)
    ratings = charts.rating_distribution(data.ratings)
    with left:
        if latency is None:
            st.info("No successful requests yet.")
        else:
            st.altair_chart(latency, width="stretch")
    with right:
        if ratings is None:
            st.info("No ratings yet.")
        else:
            st.altair_chart(ratings, width="stretch")
    st.caption(
        "Latencies are counted in buckets 2% wide (percentiles within 1% of the exact values)."
    )
    st.segmented_control("Time series over", list(WINDOWS), default=DEFAULT_WINDOW, key="window")
    series = charts.time_series(data.series, bucket_s=data.bucket_s)
    if series is None:
        st.info("No requests in this window.")
    else:
        st.altair_chart(series, width="stretch")


def render() -> None:
    """Draw the page."""
    st.title("Experiment")
    with friendly_errors():
        url = database_url()
        name = _choose(url)
        if name is None:
            return
        # The window's control is drawn by the chart; its value is known before.
        window = st.session_state.get("window") or DEFAULT_WINDOW
        data = load_experiment(url, name, WINDOWS[window])
    exp = data.experiment
    st.caption(
        f"Route **{exp.route}**, status **{exp.status}**, seed `{exp.seed}`"
        + (f", started {exp.started_at:%Y-%m-%d %H:%M} UTC" if exp.started_at else "")
        + (f" — {exp.description}" if exp.description else "")
    )
    if data.report is not None and data.report.srm:
        threads = ", ".join(f"{arm} {n:,}" for arm, n in data.report.threads.items())
        st.error(
            f"**Sample ratio mismatch** (SRM check p = {data.report.srm_p_value:.2g}; threads "
            f"{threads}): the split of threads does not match the weights, so no result below "
            "can be trusted. Look for an assignment or logging problem first.",
            icon=":material/warning:",
        )
    st.subheader("Report per arm")
    if data.arm_reports:
        st.table(frames.arm_frame(data.arm_reports))
    _distributions(data)
    _statistics(data)


if __name__ == "__main__":
    render()
