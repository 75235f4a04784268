"""Models: the registry with lineage, eval results per category against the baseline, the gate
decision with its evidence, and Promote / Rollback (with a confirmation step), shown only to a
session that may act (`auth.current_access`)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from larrylab.dashboard import auth, charts, frames
from larrylab.dashboard.data import database_url, friendly_errors
from larrylab.dashboard.models_data import (
    ModelDetail,
    RegistryData,
    load_model,
    load_registry,
    run_promote,
    run_rollback,
)
from larrylab.db import DatabaseURLError
from larrylab.experiments import ConflictError, NotFoundError

PENDING = "models_pending_action"
FLASH = "models_flash"
CANDIDATE_STATES = ("registered", "evaluating", "passed", "failed")
SERVICE_ERRORS = (ConflictError, NotFoundError, ValueError, DatabaseURLError)


def _choose(reg: RegistryData) -> str:
    names = [m.name for m in reg.models]
    wanted = st.query_params.get("model")
    if wanted not in names:  # default: the candidate most recently changed
        candidates = [m for m in reg.models if m.state in CANDIDATE_STATES] or reg.models
        wanted = max(candidates, key=lambda m: m.updated_at).name
    index = names.index(wanted)
    states = {m.name: f"{m.name} ({m.state})" for m in reg.models}
    name = st.selectbox("Model", names, index=index, format_func=states.__getitem__)
    st.query_params["model"] = name
    return name


def _lineage(detail: ModelDetail) -> None:
    st.subheader("Lineage")
    lineage = detail.model.lineage
    if not lineage:
        st.caption("No lineage recorded (a model registered by hand).")
        return
    st.table(frames.lineage_frame(lineage))
    with st.expander("Lineage as recorded (JSON)"):
        st.json(lineage)


def _evals(detail: ModelDetail) -> None:
    st.subheader("Eval results")
    if not detail.results:
        st.info(f"No eval results for {detail.model.name} yet: run `larrylab eval`.")
        return
    first = detail.results[0]
    st.caption(
        f"Eval set `{first.eval_set_hash[:12]}`, judge {first.judge or '-'}, "
        f"run {first.created_at:%Y-%m-%d %H:%M} UTC; baseline: {detail.baseline or 'none chosen'}."
    )
    rows = frames.eval_rows(detail.model.name, detail.results)
    if detail.baseline:
        rows += frames.eval_rows(detail.baseline, detail.baseline_results)
    chart = charts.category_scores(rows)
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    st.table(frames.eval_frame(detail.results, detail.baseline, detail.baseline_results))


def _gate(detail: ModelDetail) -> None:
    st.subheader("Gate decision")
    d = detail.decision
    if d is None:
        st.info(f"{detail.model.name} has not been gated yet: run `larrylab gate`.")
        return
    verdict = "passed" if d.passed else "failed"
    text = (
        f"**Gate {verdict}** against {d.baseline} on eval set `{d.eval_set_hash[:12]}` "
        f"({d.created_at:%Y-%m-%d %H:%M} UTC, by {d.actor})"
    )
    (st.success if d.passed else st.error)(text)
    st.markdown("\n".join(f"- {r}" for r in d.reasons))
    categories = d.evidence.get("categories")
    if isinstance(categories, dict) and categories:
        st.table(frames.gate_categories_frame(categories))
    with st.expander("Evidence (JSON)"):
        st.json(d.evidence)


def _confirm(kind: str, question: str, run: Any) -> None:
    """The confirmation step of a pending action of `kind`."""
    pending = st.session_state.get(PENDING)
    if not pending or pending.get("kind") != kind:
        return
    st.warning(question.format(**pending))
    yes, no = st.columns(2)
    if yes.button(f"Confirm {kind}", type="primary", key=f"confirm_{kind}"):
        st.session_state.pop(PENDING, None)
        try:
            st.session_state[FLASH] = ("success", run(pending))
        except SERVICE_ERRORS as exc:
            st.session_state[FLASH] = ("error", f"{kind} refused: {exc}")
        st.rerun()
    if no.button("Cancel", key=f"cancel_{kind}"):
        st.session_state.pop(PENDING, None)
        st.rerun()


def _promote(url: str, detail: ModelDetail, actor: str) -> None:
    st.subheader("Promote")
    name = detail.model.name
    if not detail.readiness:
        st.info("No route has a default model, so there is nothing to promote onto.")
        return
    left, right = st.columns(2)
    route = left.selectbox("Route", list(detail.readiness), key="promote_route")
    weight = right.number_input("Canary weight (%)", 1.0, 99.0, 10.0, step=1.0, key="weight")
    ready = detail.readiness[route]
    if not ready.ok:
        st.warning(f"Promotion is not possible: {ready.reason}")
    if st.button(
        "Promote…", key="promote", disabled=not ready.ok, help=None if ready.ok else ready.reason
    ):
        st.session_state[PENDING] = {
            "kind": "promotion",
            "model": name,
            "route": route,
            "weight": weight,
            "baseline": ready.baseline,
        }

    def go(p: dict[str, Any]) -> str:
        r = run_promote(
            url, candidate=p["model"], route=p["route"], canary_weight=p["weight"], actor=actor
        )
        return f"Canary started: {r.candidate} at {r.weight:g}% on {r.route} ({r.experiment})."

    _confirm(
        "promotion",
        "Start a canary of **{model}** on route **{route}**: {weight:g}% of its threads, "
        "against {baseline}? It ramps up while the live guardrails hold.",
        go,
    )


def _rollback(url: str, reg: RegistryData, actor: str) -> None:
    st.subheader("Roll back")
    routes = sorted({*reg.routes, *(r.route for r in reg.rollouts)})
    if not routes:
        st.info("No routes yet.")
        return
    left, right = st.columns(2)
    route = left.selectbox("Route", routes, key="rollback_route")
    reason = right.text_input("Reason (kept in the audit log)", key="rollback_reason")
    ok, what = reg.rollback[route].ok, reg.rollback[route].reason
    st.caption(f"Rolling back {what}." if ok else what[0].upper() + what[1:] + ".")
    why_not = None if ok and reason.strip() else (what if not ok else "give a reason first")
    if st.button("Roll back…", key="rollback", disabled=why_not is not None, help=why_not):
        st.session_state[PENDING] = {
            "kind": "rollback",
            "route": route,
            "reason": reason.strip(),
            "what": what,
        }

    def go(p: dict[str, Any]) -> str:
        r = run_rollback(url, route=p["route"], reason=p["reason"], actor=actor)
        return f"Rolled back route {r.route}: {r.candidate} is out ({r.status})."

    _confirm("rollback", "Roll back route **{route}**? This {what}.", go)


def _actions(url: str, reg: RegistryData, detail: ModelDetail) -> None:
    """Promote and Roll back for a session that may act; a sentence saying why not otherwise
    (no buttons are drawn, and a pending action is dropped)."""
    access = auth.current_access()
    if not access.can_act:
        st.session_state.pop(PENDING, None)
        st.subheader("Promote and roll back")
        st.info(access.why_not, icon=":material/lock:")
        return
    _promote(url, detail, access.actor)
    _rollback(url, reg, access.actor)


def _history(reg: RegistryData, detail: ModelDetail) -> None:
    st.subheader("Rollouts")
    if reg.rollouts:
        st.table(frames.rollout_frame(reg.rollouts))
    else:
        st.caption("No rollouts yet.")
    st.subheader(f"History of {detail.model.name}")
    if detail.events:
        st.table(frames.event_frame(detail.events))


def render() -> None:
    """Draw the page."""
    st.title("Models")
    flash = st.session_state.pop(FLASH, None)
    if flash:
        (st.success if flash[0] == "success" else st.error)(flash[1])
    with friendly_errors():
        url = database_url()
        reg = load_registry(url)
    if not reg.models:
        st.info("The registry is empty: models come from the config file or `larrylab train`.")
        return
    st.subheader("Registry")
    st.table(frames.registry_frame(reg.models, reg.routes))
    name = _choose(reg)
    others = [m.name for m in reg.models if m.name != name]
    with friendly_errors():
        detail = load_model(url, name, None)
        if others:
            index = others.index(detail.baseline) if detail.baseline in others else 0
            baseline = st.selectbox("Compare eval results with", others, index=index)
            if baseline != detail.baseline:
                detail = load_model(url, name, baseline)
    _lineage(detail)
    _evals(detail)
    _gate(detail)
    _actions(url, reg, detail)
    _history(reg, detail)


if __name__ == "__main__":
    render()
