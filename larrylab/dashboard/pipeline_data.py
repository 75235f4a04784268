"""What the Pipeline page shows: runs and their stages (from the store), and the items a run
wrote (JSON lines in its stage folders), read tolerantly: any `*.jsonl` file, any record shape.

A kept item is a pipeline record (`id`, `category`, `messages`, `meta.judge`...); a dropped
item wraps one as `{"step", "reason", "record"}`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import streamlit as st

from larrylab.dashboard.data import TTL_S, session
from larrylab.dashboard.frames import NONE
from larrylab.pipeline.runs import PipelineStagePublic, list_pipeline_runs

STAGE_ORDER = ("export", "generate", "filter", "dataset", "train", "package")
MAX_ITEMS = 500


@dataclass(frozen=True)
class PipelineRun:
    """One run folder and the newest record of each of its stages, in pipeline order."""

    run_dir: str
    stages: list[PipelineStagePublic]

    @property
    def status(self) -> str:
        """`failed` or `partial` if any stage was, else the last stage's status."""
        states = [s.status for s in self.stages]
        for bad in ("failed", "partial"):
            if bad in states:
                return bad
        return states[-1] if states else NONE

    @property
    def started_at(self) -> datetime:
        """When its first recorded stage started."""
        return min(s.started_at for s in self.stages)

    @property
    def finished_at(self) -> datetime:
        """When its last recorded stage finished."""
        return max(s.finished_at for s in self.stages)

    def stage(self, name: str) -> PipelineStagePublic | None:
        """The record of one stage, if the run has it."""
        return next((s for s in self.stages if s.stage == name), None)


def _order(stage: str) -> int:
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def load_runs(url: str, limit: int = 500) -> list[PipelineRun]:
    """Recent runs, newest first, from the stages the store recorded."""
    with session(url) as s:
        stages = list_pipeline_runs(session=s, limit=limit)
    newest: dict[str, dict[str, PipelineStagePublic]] = {}
    for st_ in stages:  # newest first: keep the first record of each (run, stage)
        newest.setdefault(st_.run_dir, {}).setdefault(st_.stage, st_)
    runs = [
        PipelineRun(run_dir, sorted(by_stage.values(), key=lambda x: _order(x.stage)))
        for run_dir, by_stage in newest.items()
    ]
    return sorted(runs, key=lambda r: r.finished_at, reverse=True)


def stage_counts_frame(run: PipelineRun) -> pd.DataFrame:
    """Counters (rows) per stage (columns)."""
    data = {s.stage: {k: f"{v:,}" for k, v in s.counts.items()} for s in run.stages}
    return pd.DataFrame(data).fillna(NONE).rename_axis("counter")


def stage_folder(run: PipelineRun, stage: str) -> Path:
    """Where a stage of the run wrote its files."""
    return Path(run.run_dir) / stage


def jsonl_files(folder: Path) -> list[Path]:
    """The JSON-lines files a stage folder holds (unfinished `.partial` files left out)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.jsonl") if not p.name.startswith("."))


def _targets(run: PipelineRun) -> dict[str, int]:
    for stage in run.stages:
        quotas = (stage.manifest.get("params") or {}).get("quotas")
        if isinstance(quotas, dict) and quotas:
            return {str(k): int(v) for k, v in quotas.items()}
    return {}


@st.cache_data(show_spinner=False)
def _categories(path: str, mtime: float) -> dict[str, int]:
    counts: Counter[str] = Counter()
    with open(path, "rb") as fh:
        for line in fh:
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(item, dict) and isinstance(item.get("category"), str):
                counts[item["category"]] += 1
    return dict(counts)


def category_progress(run: PipelineRun) -> list[dict[str, Any]]:
    """Examples kept per category (the filter's output) against the generation quotas."""
    targets = _targets(run)
    kept_file = stage_folder(run, "filter") / "records.jsonl"
    kept = _categories(str(kept_file), kept_file.stat().st_mtime) if kept_file.exists() else {}
    if not targets and not kept:
        return []
    names = list(targets) + sorted(set(kept) - set(targets))
    return [{"category": c, "examples": kept.get(c, 0), "target": targets.get(c, 0)} for c in names]


def _reply(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "assistant":
            return str(m.get("content") or "")
    return ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def unwrap(item: dict[str, Any]) -> dict[str, Any]:
    """The record of an item (a dropped item wraps it under `record`)."""
    return _dict(item.get("record")) or item


def judge_of(record: dict[str, Any]) -> dict[str, Any]:
    """The judge's annotation of a record (`meta.judge`), or {}."""
    return _dict(_dict(record.get("meta")).get("judge"))


def item_row(item: dict[str, Any]) -> dict[str, Any]:
    """One browser row: id, category, origin, judge scores, drop step and reason, reply."""
    record = unwrap(item)
    judge = judge_of(record)
    row: dict[str, Any] = {
        "id": str(record.get("id", "")),
        "category": record.get("category", ""),
        "origin": record.get("origin", ""),
        "strategy": record.get("strategy") or "",
        "dropped by": item.get("step", ""),
        "drop reason": item.get("reason", ""),
        "judge mean": judge.get("mean"),
    }
    scores = judge.get("scores")
    if isinstance(scores, dict):
        row.update({f"judge: {k}": v for k, v in scores.items()})
    row["reply"] = _reply(record.get("messages"))[:300]
    return row


@st.cache_data(show_spinner=False)
def read_items(path: str, mtime: float, limit: int = MAX_ITEMS) -> tuple[list[dict[str, Any]], int]:
    """Up to `limit` items of a JSON-lines file (as parsed) and how many lines it has."""
    items: list[dict[str, Any]] = []
    total = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            total += 1
            if len(items) >= limit:
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                value = {"id": f"line {total}", "reason": "not valid JSON"}
            items.append(value if isinstance(value, dict) else {"value": value})
    return items, total
