"""`larrylab report`: per-arm rows with scores, thumbs and ineligible requests, the tests
against the control, as text and as JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from sqlmodel import Session
from typer.testing import CliRunner

from larrylab.cli._main import app
from larrylab.config import ArmSpec, ExperimentSpec, ModelSpec
from larrylab.db._engine import make_engine, upgrade
from larrylab.experiments._experiments import create_experiment
from larrylab.experiments._feedback import Attribution, upsert_feedback
from larrylab.release import create_model
from tests.conftest import write_records
from tests.requestlog.factories import records as _records

runner = CliRunner()


def _rated_experiment(tmp_path: Path) -> str:
    """Experiment `exp` (a control, b candidate): 30 requests, 4 of b's ineligible; every
    eligible request rated, by thumb, score or both."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as s:
        for name in ("a", "b"):
            create_model(
                session=s,
                name=name,
                spec=ModelSpec(base_url="http://127.0.0.1:9/v1", model=name),
            )
        arms = [ArmSpec(model="a", weight=50, control=True), ArmSpec(model="b", weight=50)]
        create_experiment(session=s, spec=ExperimentSpec(name="exp", route="larry", arms=arms))
    records = [replace(r, status="ok") for r in _records(30, seed=11)]
    b_rows = [i for i, r in enumerate(records) if r.arm == "b"]
    for k, i in enumerate(b_rows[:4]):
        records[i] = replace(records[i], ineligible="tools" if k < 3 else "cached_content")
    write_records(url, records)
    for i, r in enumerate(records):
        if r.ineligible:
            continue
        upsert_feedback(
            engine,
            target=Attribution(r.thread_id, r.experiment, r.arm),
            request_id=r.id,
            score=None if i % 2 else 4,
            thumb=1 if r.arm == "b" or i % 3 == 0 else 0,
            comment=None,
            source="user",
        )
    engine.dispose()
    return url


def test_report_shows_thumbs_and_ineligible_requests(tmp_path: Path) -> None:
    url = _rated_experiment(tmp_path)
    as_json = runner.invoke(app, ["report", "exp", "--json", "--database-url", url])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["unsupported"] == "control" and data["control"] == "a"
    arms = {a["arm"]: a for a in data["arms"]}
    assert arms["b"]["thumbs_up_rate"] == 1.0 and arms["b"]["thumbs_count"] > 0
    assert 0 < arms["a"]["thumbs_up_rate"] < 1
    assert arms["b"]["ineligible_requests"] == 4
    everything = arms["b"]["requests"] + 4
    assert arms["b"]["ineligible_share"] == 4 / everything
    assert arms["b"]["ineligible_by_reason"] == {"cached_content": 1, "tools": 3}
    assert arms["b"]["ineligible_share_by_reason"]["tools"] == 3 / everything
    assert arms["a"]["ineligible_requests"] == 0
    (cand,) = data["candidates"]
    thumbs = next(m for m in cand["metrics"] if m["metric"] == "thumbs_up_rate")
    assert (
        thumbs["treatment"]["mean"] == 1.0 and thumbs["control"]["n"] == arms["a"]["thumbs_count"]
    )

    text = runner.invoke(app, ["report", "exp", "--database-url", url])
    assert text.exit_code == 0, text.output
    assert "thumbs" in text.output and "ineligible" in text.output
    share = 4 / everything
    assert f"b: 4 requests ({share:.0%}) ineligible" in text.output
    assert f"(cached_content {1 / everything:.0%}, tools {3 / everything:.0%})" in text.output
    assert "thumbs_up_rate" in text.output  # the candidate's test against the control
