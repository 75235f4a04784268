"""Recording finished stages in the store, for the dashboard and for lineage."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from larrylab.pipeline.manifest import StageResult


def record_stage(engine: Engine | None, run_dir: str, result: StageResult) -> str | None:
    """Store `result` as a pipeline stage row; returns a warning sentence if that failed.

    The data on disk is the pipeline's product; a store that cannot take the record (not
    migrated, unreachable) does not undo a finished stage, so the failure is reported instead.
    """
    if engine is None:
        return None
    from sqlmodel import Session

    from larrylab.pipeline.runs import record_pipeline_stage

    try:
        with Session(engine) as session:
            record_pipeline_stage(
                session=session,
                run_dir=run_dir,
                stage=result.stage,
                status=result.status,
                counts=result.counts,
                manifest=result.manifest,
                started_at=result.started_at,
                finished_at=result.finished_at,
            )
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0]
        return f"stage {result.stage} was not recorded in the store: {first}"
    return None
