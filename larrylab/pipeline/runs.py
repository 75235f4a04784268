"""Pipeline stages as the store records them, for the dashboard and for lineage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel
from sqlmodel import Session, col, select

from larrylab.db import PipelineStage


class PipelineStagePublic(BaseModel):
    """One recorded stage of a pipeline run."""

    run_dir: str
    stage: str
    status: str
    counts: dict[str, int]
    manifest: dict[str, Any]
    started_at: datetime
    finished_at: datetime


def record_pipeline_stage(
    *,
    session: Session,
    run_dir: str,
    stage: str,
    status: str,
    counts: dict[str, int],
    manifest: dict[str, Any],
    started_at: datetime,
    finished_at: datetime,
) -> None:
    """Record a finished (or failed) stage of the pipeline run writing to `run_dir`."""
    session.add(
        PipelineStage(
            run_dir=run_dir,
            stage=stage,
            status=status,
            counts=orjson.dumps(counts).decode(),
            manifest=orjson.dumps(manifest, default=str).decode(),
            started_at=started_at,
            finished_at=finished_at,
        )
    )
    session.commit()


def list_pipeline_runs(*, session: Session, limit: int = 50) -> list[PipelineStagePublic]:
    """The most recent stages recorded, newest first."""
    rows = session.exec(select(PipelineStage).order_by(col(PipelineStage.id).desc()).limit(limit))
    return [
        PipelineStagePublic(
            run_dir=r.run_dir,
            stage=r.stage,
            status=r.status,
            counts=orjson.loads(r.counts or "{}"),
            manifest=orjson.loads(r.manifest or "{}"),
            started_at=r.started_at,
            finished_at=r.finished_at,
        )
        for r in rows
    ]
