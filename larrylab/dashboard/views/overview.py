"""Overview: routes, running experiments and their arms, traffic and error rates of the last
hour and day, and alerts (sample ratio mismatch, open circuit breakers, failed guardrails)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from larrylab.dashboard import frames
from larrylab.dashboard.data import OverviewData, database_url, friendly_errors, load_overview

ALERT_ICONS = {
    "srm": ":material/warning:",
    "breaker": ":material/power_off:",
    "guardrail": ":material/block:",
}


def _totals(data: OverviewData) -> None:
    hour = sum(t.requests_hour for t in data.traffic)
    day = sum(t.requests_day for t in data.traffic)
    errors_hour = sum(t.errors_hour for t in data.traffic)
    errors_day = sum(t.errors_day for t in data.traffic)
    cols = st.columns(4)
    cols[0].metric("Requests, last hour", frames.count(hour))
    cols[1].metric("Error rate, last hour", frames.share(errors_hour / hour if hour else None))
    cols[2].metric("Requests, last 24 h", frames.count(day))
    cols[3].metric("Error rate, last 24 h", frames.share(errors_day / day if day else None))


def _routes(data: OverviewData) -> pd.DataFrame:
    traffic = frames.traffic_frame(data.traffic)
    rows = pd.DataFrame(
        [
            {
                "route": r.route,
                "default model": r.model or frames.NONE,
                "running experiment": r.experiment or frames.NONE,
                "arms": r.arms or frames.NONE,
            }
            for r in data.routes
        ]
    )
    if rows.empty:
        return rows
    rows = rows.set_index("route")
    if traffic.empty:
        return rows
    zeros = {c: "0" for c in traffic.columns if "requests" in c or "fallbacks" in c}
    return rows.join(traffic).fillna(zeros).fillna(frames.NONE)


def render() -> None:
    """Draw the page."""
    st.title("Overview")
    with friendly_errors():
        data = load_overview(database_url())
    st.caption(f"As of {data.as_of:%Y-%m-%d %H:%M:%S} UTC; numbers refresh every few seconds.")

    st.subheader("Alerts")
    if not data.alerts:
        st.success("No alerts: no sample ratio mismatch, failed guardrail or open circuit breaker.")
    for alert in data.alerts:
        st.error(alert.message, icon=ALERT_ICONS[alert.kind])

    _totals(data)
    st.subheader("Routes")
    routes = _routes(data)
    if routes.empty:
        st.info("No routes yet: configure models and routes (`larrylab serve --config ...`).")
    else:
        st.table(routes)

    st.subheader("Running experiments")
    if not data.running:
        st.info("No experiment is running.")
    for exp in data.running:
        started = f"{exp.started_at:%Y-%m-%d %H:%M} UTC" if exp.started_at else frames.NONE
        st.page_link(
            "views/experiment.py",
            label=f"**{exp.name}** on route {exp.route}, since {started}",
            icon=":material/balance:",
            query_params={"experiment": exp.name},
        )
        st.caption(
            " · ".join(
                f"{a.model}: {a.weight:g}%{' (control)' if a.control else ''}" for a in exp.arms
            )
        )


if __name__ == "__main__":
    render()
