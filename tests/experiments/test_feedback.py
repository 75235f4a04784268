"""Ratings as Larry gives them (1-5 stars, thumbs, categories) on SQLite and PostgreSQL: stored,
updated per target and source, replayed from the spill, and counted in the experiment report."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from larrylab.db._engine import make_engine
from larrylab.db._schema import utcnow
from larrylab.experiments._arm_report import ArmReport, arm_reports
from larrylab.experiments._feedback import (
    Attribution,
    attribute_thread,
    replay_feedback,
    upsert_feedback,
)
from larrylab.experiments._report import experiment_report
from larrylab.requestlog._spill import Quarantine, SpillDir
from larrylab.requestlog._store import RequestRecord
from larrylab.rollups import rebuild_rollups
from tests.conftest import write_records
from tests.requestlog.factories import records as _records

ARMS = [("a", True, 50.0), ("b", False, 50.0)]


def _stored(engine: Engine, n: int = 12, seed: int = 41) -> list[RequestRecord]:
    """`n` requests of arms a and b, all successful, stored."""
    records = [replace(r, status="ok") for r in _records(n, seed)]
    write_records(engine.url.render_as_string(hide_password=False), records)
    return records


def _target(r: RequestRecord) -> Attribution:
    return Attribution(r.thread_id, r.experiment, r.arm)


def _rows(engine: Engine) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT target, score, thumb, categories, comment FROM feedback"))
        return {r[0]: (r[1], r[2], json.loads(r[3]), r[4]) for r in rows}


def _by_arm(engine: Engine) -> dict[str, ArmReport]:
    return {r.arm: r for r in arm_reports(engine, "exp", ARMS)}


def test_thumb_only_score_only_and_both(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    r0, r1, r2 = _stored(engine)[:3]
    upsert_feedback(
        engine, target=_target(r0), request_id="r0", score=None, thumb=1, comment=None, source="u"
    )
    upsert_feedback(engine, target=_target(r1), request_id="r1", score=2, comment=None, source="u")
    fb, updated = upsert_feedback(
        engine,
        target=_target(r2),
        request_id="r2",
        score=5,
        thumb=0,
        categories={"accuracy": True, "depth": False},
        comment="deep enough",
        source="u",
    )
    assert not updated and (fb.score, fb.thumb) == (5, 0)
    assert _rows(engine) == {
        "request:r0": (None, 1, {}, None),
        "request:r1": (2, None, {}, None),
        "request:r2": (5, 0, {"accuracy": True, "depth": False}, "deep enough"),
    }


def test_rating_again_updates_the_fields_it_gives(migrated_url: str) -> None:
    """Larry sends the thumb first and the detailed rating later, from the same source: the
    second keeps the thumb; a new thumb or new categories replace the old ones."""
    engine = make_engine(migrated_url)
    r0 = _stored(engine)[0]
    rate: dict[str, Any] = {"target": _target(r0), "request_id": "r0", "source": "user"}
    upsert_feedback(engine, **rate, score=None, thumb=1, comment=None)
    fb, updated = upsert_feedback(
        engine, **rate, score=4, categories={"clarity": True}, comment="clear"
    )
    assert updated and (fb.score, fb.thumb) == (4, 1)
    upsert_feedback(engine, **rate, score=None, thumb=0, categories={"depth": False}, comment=None)
    assert _rows(engine) == {"request:r0": (4, 0, {"depth": False}, "clear")}
    row = _by_arm(engine)[r0.arm or ""]
    assert (row.thumbs_count, row.thumbs_up_rate) == (1, 0.0)
    assert (row.feedback_count, row.mean_score, row.high_rating_share) == (1, 4.0, 1.0)


def test_report_rows_count_thumbs_beside_scores(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    records = _stored(engine, n=30)
    expected: dict[str, dict[str, list[int]]] = {"a": {"thumbs": [], "scores": []}}
    expected["b"] = {"thumbs": [], "scores": []}
    for i, r in enumerate(records):
        score = None if i % 3 == 0 else 1 + i % 5
        thumb = None if i % 4 == 0 else i % 2
        if score is None and thumb is None:
            continue
        upsert_feedback(
            engine,
            target=_target(r),
            request_id=r.id,
            score=score,
            thumb=thumb,
            comment=None,
            source="user",
        )
        arm = expected[r.arm or ""]
        if score is not None:
            arm["scores"].append(score)
        if thumb is not None:
            arm["thumbs"].append(thumb)
    rows = _by_arm(engine)
    for arm, seen in expected.items():
        row = rows[arm]
        assert row.thumbs_count == len(seen["thumbs"])
        assert row.thumbs_up_rate == sum(seen["thumbs"]) / len(seen["thumbs"])
        assert row.feedback_count == len(seen["scores"])
        assert row.mean_score == sum(seen["scores"]) / len(seen["scores"])
    # The same numbers when the rollups are rebuilt from the rows.
    rebuild_rollups(engine)
    assert _by_arm(engine) == rows
    report = experiment_report(engine, "exp", ARMS)
    (thumbs,) = [m for m in report.candidates[0].metrics if m.metric == "thumbs_up_rate"]
    assert thumbs.role == "decision"
    assert thumbs.control["n"] == len(expected["a"]["thumbs"])
    assert thumbs.treatment["mean"] == rows["b"].thumbs_up_rate


def test_a_candidate_rated_better_by_thumbs_alone_can_ship(migrated_url: str) -> None:
    """Quality is judged on the rating kinds both arms have: thumbs without any score."""
    engine = make_engine(migrated_url)
    records = [replace(r, status="ok", latency_ms=100.0) for r in _records(600, seed=5)]
    write_records(migrated_url, records)
    for i, r in enumerate(records):
        up = i % 10 < (9 if r.arm == "b" else 5)  # 90% up for b, 50% for a
        upsert_feedback(
            engine,
            target=_target(r),
            request_id=r.id,
            score=None,
            thumb=int(up),
            comment=None,
            source="user",
        )
    (cand,) = experiment_report(engine, "exp", ARMS).candidates
    by_name = {m.metric: m for m in cand.metrics}
    assert by_name["thumbs_up_rate"].outcome == "better"
    assert by_name["mean_score"].outcome == "no_data"
    assert cand.verdict == "ship", cand.reasons


def test_report_rows_show_ineligible_requests(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    records = [replace(r, status="ok") for r in _records(40, seed=7)]
    reasons = ["tools", "tools,non_text_parts", "cached_content"]
    records = [
        replace(r, ineligible=reasons[i % 3]) if r.arm == "b" and i % 4 == 0 else r
        for i, r in enumerate(records)
    ]
    write_records(migrated_url, records)
    rows = _by_arm(engine)
    for arm in ("a", "b"):
        mine = [r for r in records if r.arm == arm]
        left_out = [r for r in mine if r.ineligible]
        row = rows[arm]
        assert row.requests == len(mine) - len(left_out)
        assert row.ineligible_requests == len(left_out)
        if not left_out:
            assert row.ineligible_share == 0 and row.ineligible_by_reason == {}
            continue
        assert row.ineligible_share == len(left_out) / len(mine)
        per_reason = {
            reason: sum(reason in (r.ineligible or "").split(",") for r in left_out)
            for reason in ("tools", "non_text_parts", "cached_content")
        }
        assert row.ineligible_by_reason == {k: n for k, n in sorted(per_reason.items()) if n}
        assert row.ineligible_share_by_reason == {
            k: n / len(mine) for k, n in row.ineligible_by_reason.items()
        }


def _spill(spill: SpillDir, received_s_ago: float = 1, **fields: Any) -> None:
    row = {"request_id": None, "thread_id": None, "comment": None, "source": "user"}
    row |= fields
    row["received_at"] = (utcnow() - timedelta(seconds=received_s_ago)).isoformat()
    spill.append("feedback", [row])


def test_spilled_thumbs_and_categories_are_replayed(migrated_url: str, tmp_path: Path) -> None:
    engine = make_engine(migrated_url)
    records = _stored(engine)
    spill, quarantine = SpillDir(tmp_path / "spill"), Quarantine(tmp_path / "quarantine")
    _spill(spill, 9, request_id="r0", thumb=1, categories={"actionable": True})
    _spill(spill, 5, request_id="r0", score=3, comment="ok")  # later, same source: merged
    _spill(spill, 5, request_id="r1", score=5, thumb=0, categories={})
    _spill(spill, 5, thread_id=records[2].thread_id, thumb=0, source="facilitator")
    _spill(spill, 5, request_id="r3")  # neither a score nor a thumb: unreadable
    result = replay_feedback(engine, spill, quarantine)
    assert (result.written, result.quarantined) == (4, 1)
    assert _rows(engine) == {
        "request:r0": (3, 1, {"actionable": True}, "ok"),
        "request:r1": (5, 0, {}, None),
        f"thread:{records[2].thread_id}": (None, 0, {}, None),
    }
    thumbs = {arm: (row.thumbs_count, row.thumbs_up_rate) for arm, row in _by_arm(engine).items()}
    expected: dict[str, list[int]] = {"a": [], "b": []}
    thread = attribute_thread(engine, records[2].thread_id)
    assert thread is not None
    for arm, thumb in ((records[0].arm, 1), (records[1].arm, 0), (thread.arm, 0)):
        expected[arm or ""].append(thumb)
    assert thumbs == {arm: (len(t), sum(t) / len(t) if t else None) for arm, t in expected.items()}
