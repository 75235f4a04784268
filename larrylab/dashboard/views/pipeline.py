"""Pipeline: runs and their stage counts, category quotas against targets, and a browser of the
generated examples with their judge scores and the reasons items were dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from larrylab.dashboard import charts, frames
from larrylab.dashboard.data import database_url, friendly_errors
from larrylab.dashboard.pipeline_data import (
    MAX_ITEMS,
    PipelineRun,
    category_progress,
    item_row,
    jsonl_files,
    judge_of,
    load_runs,
    read_items,
    stage_counts_frame,
    stage_folder,
    unwrap,
)


def _runs_frame(runs: list[PipelineRun]) -> pd.DataFrame:
    rows = [
        {
            "run folder": r.run_dir,
            "stages": " → ".join(f"{s.stage} ({s.status})" for s in r.stages),
            "status": r.status,
            "started (UTC)": f"{r.started_at:%Y-%m-%d %H:%M}",
            "took": f"{(r.finished_at - r.started_at).total_seconds():,.0f} s",
        }
        for r in runs
    ]
    return pd.DataFrame(rows).set_index("run folder")


def _quotas(run: PipelineRun) -> None:
    st.subheader("Categories against targets")
    rows = category_progress(run)
    if not rows:
        st.caption("No category counts or quotas recorded for this run.")
        return
    chart = charts.quota_progress(rows)
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    for row in rows:
        row["progress"] = f"{row['examples'] / row['target']:.0%}" if row["target"] else frames.NONE
    st.table(pd.DataFrame(rows).set_index("category"))


def _conversation(item: dict[str, Any]) -> None:
    record = unwrap(item)
    for m in record.get("messages") or []:
        if isinstance(m, dict) and m.get("role") in ("user", "assistant"):
            st.chat_message(m["role"]).write(str(m.get("content") or ""))
    judge = judge_of(record)
    if judge.get("rationales"):
        st.table(
            pd.DataFrame(
                {
                    "score": judge.get("scores", {}),
                    "rationale": judge.get("rationales", {}),
                }
            ).rename_axis("criterion")
        )


def _browser(run: PipelineRun) -> None:
    st.subheader("Examples")
    folders = {s.stage: stage_folder(run, s.stage) for s in run.stages}
    with_files = [name for name, folder in folders.items() if jsonl_files(folder)]
    if not with_files:
        st.caption("No JSON-lines files in this run's stage folders (moved, or on another host).")
        return
    left, right = st.columns(2)
    default = with_files.index("filter") if "filter" in with_files else 0
    stage = left.selectbox("Stage folder", with_files, index=default)
    files = jsonl_files(folders[stage])
    path: Path = right.selectbox("File", files, format_func=lambda p: p.name)
    items, total = read_items(str(path), path.stat().st_mtime)
    rows = pd.DataFrame([item_row(i) for i in items])
    categories = sorted(c for c in rows.get("category", pd.Series(dtype=str)).unique() if c)
    left, right = st.columns(2)
    category = left.selectbox("Category", ["all", *categories])
    text = right.text_input("Search replies and reasons")
    mask = pd.Series(True, index=rows.index)
    if category != "all":
        mask &= rows["category"] == category
    if text:
        haystack = rows["reply"].astype(str) + " " + rows["drop reason"].astype(str)
        mask &= haystack.str.contains(text, case=False, regex=False)
    shown = rows[mask]
    st.caption(
        f"{len(shown):,} of {total:,} items shown"
        + (f" (the first {MAX_ITEMS:,} read)" if total > MAX_ITEMS else "")
    )
    st.dataframe(shown.set_index("id"), width="stretch")
    if not shown.empty:
        pick = st.selectbox("Read one", list(shown.index), format_func=lambda i: rows["id"][i])
        _conversation(items[pick])


def render() -> None:
    """Draw the page."""
    st.title("Pipeline")
    with friendly_errors():
        runs = load_runs(database_url())
    if not runs:
        st.info("No pipeline runs recorded yet: run `larrylab pipeline run`.")
        return
    st.subheader("Runs")
    st.table(_runs_frame(runs))
    labels = {r.run_dir: f"{Path(r.run_dir).name} ({r.status})" for r in runs}
    wanted = st.query_params.get("run")
    names = [r.run_dir for r in runs]
    run_dir = st.selectbox(
        "Run",
        names,
        index=names.index(wanted) if wanted in names else 0,
        format_func=labels.__getitem__,
    )
    run = runs[names.index(run_dir)]
    st.subheader("Stage counts")
    st.table(stage_counts_frame(run))
    _quotas(run)
    _browser(run)


if __name__ == "__main__":
    render()
