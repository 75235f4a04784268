"""Every dashboard page through Streamlit's AppTest, against a seeded store: no exception, and the
numbers on the page equal what the platform's functions (the API's) report for the same data."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import Session
from streamlit.testing.v1 import AppTest

from larrylab.dashboard import frames
from larrylab.db._engine import make_engine
from larrylab.experiments._arm_report import arm_reports
from larrylab.experiments._experiments import get_experiment
from larrylab.experiments._report import experiment_report
from larrylab.release._evalstore import latest_eval_results
from larrylab.release._promotion import promotion_readiness
from tests.dashboard.conftest import APP
from tests.dashboard.seed import (
    CANDIDATE,
    CONTROL,
    EXPERIMENT,
    FAILED,
    GATED,
    SKEWED,
    Seeded,
)


def _open(seeded: Seeded, monkeypatch: pytest.MonkeyPatch, page: str, **query: str) -> AppTest:
    monkeypatch.setenv("LARRYLAB_DATABASE_URL", seeded.url)
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.run()
    at.switch_page(f"views/{page}.py")
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    parts = [e.value for kind in ("error", "warning", "success", "info") for e in at.get(kind)]
    parts += [e.value for e in at.markdown] + [e.value for e in at.caption]
    return "\n".join(str(p) for p in parts)


def test_overview_shows_traffic_and_alerts(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _open(seeded, monkeypatch, "overview")
    routes = at.table[0].value
    hour = seeded.now - timedelta(hours=1)
    larry = [r for r in seeded.records if r.route == "larry" and r.created_at >= hour]
    assert routes.loc["larry", "requests 1 h"] == frames.count(len(larry))
    errors = sum(r.status == "error" for r in larry)
    assert routes.loc["larry", "error rate 1 h"] == frames.share(errors / len(larry))
    day = [
        r
        for r in seeded.records
        if r.route == "summaries" and r.created_at >= hour - timedelta(hours=23)
    ]
    assert routes.loc["summaries", "requests 24 h"] == frames.count(len(day)) == "4"
    assert routes.loc["summaries", "default model"] == CONTROL
    assert routes.loc["larry", "running experiment"] == EXPERIMENT
    assert routes.loc["larry", "arms"] == f"{CONTROL} 50% (control), {CANDIDATE} 50%"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Requests, last hour"] == frames.count(
        sum(1 for r in seeded.records if r.created_at >= hour)
    )
    alerts = [e.value for e in at.error]
    assert any("sample ratio mismatch" in a and SKEWED in a for a in alerts), alerts
    assert any("circuit breaker open for larry-v1: 3 requests" in a for a in alerts), alerts
    assert not any(EXPERIMENT in a and "sample ratio" in a for a in alerts)


def test_experiment_page_matches_the_report(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _open(seeded, monkeypatch, "experiment", experiment=EXPERIMENT)
    engine = make_engine(seeded.url)
    with Session(engine) as s:
        exp = get_experiment(session=s, name=EXPERIMENT)
    arms = [(a.model, a.control, a.weight) for a in exp.arms]
    expected = frames.arm_frame(arm_reports(engine, EXPERIMENT, arms))
    shown = at.table[0].value
    assert shown.equals(expected), (shown, expected)
    # And against the seed itself, independently of any platform function:
    control = [r for r in seeded.records if r.experiment == EXPERIMENT and r.arm == CONTROL]
    scores = seeded.scores[CANDIDATE]
    assert shown.loc[CANDIDATE, "mean score"] == f"{sum(scores) / len(scores):.2f}"
    assert shown.loc[CANDIDATE, "fallbacks"] == "3"
    thumbs = seeded.thumbs[CANDIDATE]
    assert shown.loc[CANDIDATE, "thumbs"] == str(len(thumbs))
    assert shown.loc[CANDIDATE, "thumbs-up share"] == f"{sum(thumbs) / len(thumbs):.1%}"
    left_out = [r for r in control if r.ineligible]
    assert len(left_out) == 4
    assert shown.loc[f"{CONTROL} (control)", "requests"] == str(len(control) - len(left_out))
    assert shown.loc[f"{CONTROL} (control)", "ineligible"] == f"{len(left_out) / len(control):.1%}"
    tools = sum("tools" in (r.ineligible or "") for r in left_out)
    assert shown.loc[f"{CONTROL} (control)", "ineligible: tools"] == f"{tools / len(control):.1%}"
    assert shown.loc[CANDIDATE, "ineligible"] == "0.0%"

    report = experiment_report(engine, EXPERIMENT, arms)
    cand = report.candidates[0]
    assert at.table[1].value.equals(frames.metric_frame(cand))
    assert f"{cand.arm}: {cand.verdict.upper().replace('_', ' ')}" in _texts(at)
    assert "Sample ratio mismatch" not in _texts(at)
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 4  # latency, ratings, time series, intervals
    engine.dispose()


def test_experiment_page_warns_of_sample_ratio_mismatch(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _open(seeded, monkeypatch, "experiment", experiment=SKEWED)
    banner = [e.value for e in at.error if "Sample ratio mismatch" in e.value]
    assert banner and f"{CONTROL} 40, {CANDIDATE} 8" in banner[0]
    assert "INVALID" in _texts(at)


def test_models_page_shows_evals_gate_and_enabled_promote(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _open(seeded, monkeypatch, "models", model=GATED)
    registry = at.table[0].value
    assert registry.loc[GATED, "state"] == "passed"
    assert registry.loc[CONTROL, "serves routes"] == "coach, summaries"
    engine = make_engine(seeded.url)
    with Session(engine) as s:
        results = latest_eval_results(session=s, model=GATED)
        baseline = latest_eval_results(session=s, model=CONTROL)
        ready = promotion_readiness(session=s, candidate=GATED, route="coach")
    engine.dispose()
    lineage = at.table[1].value
    assert lineage.loc["training_metrics.train_loss", "value"] == "1.234"
    evals = at.table[2].value
    for r in results:
        assert evals.loc[r.task, "candidate"] == frames.interval(r.mean, r.ci_low, r.ci_high)
    for b in baseline:
        assert evals.loc[b.task, f"baseline ({CONTROL})"] == frames.interval(
            b.mean, b.ci_low, b.ci_high
        )
    assert any("Gate passed" in s.value and CONTROL in s.value for s in at.success)
    assert "overall score 0.840 clears the floor 0.60" in _texts(at)
    assert ready.ok
    promote = at.button(key="promote")
    assert not promote.disabled


def test_models_page_disables_promote_with_the_reason(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _open(seeded, monkeypatch, "models", model=FAILED)
    engine = make_engine(seeded.url)
    with Session(engine) as s:
        ready = promotion_readiness(session=s, candidate=FAILED, route="coach")
    engine.dispose()
    assert not ready.ok
    promote = at.button(key="promote")
    assert promote.disabled
    assert promote.help == ready.reason
    assert any(ready.reason in w.value for w in at.warning)
    assert any("Gate failed" in e.value for e in at.error)


def test_pipeline_page_shows_runs_quotas_and_drop_reasons(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert seeded.run_dir is not None
    at = _open(seeded, monkeypatch, "pipeline")
    runs = at.table[0].value
    assert str(seeded.run_dir) in runs.index
    assert runs.loc[str(seeded.run_dir), "status"] == "done"
    counts = at.table[1].value
    assert counts.loc["kept", "filter"] == "3"
    assert counts.loc["variations", "generate"] == "20"
    quotas = at.table[2].value
    assert quotas.loc["tta", "examples"] == 2 and quotas.loc["tta", "target"] == 4
    assert quotas.loc["s_curve", "progress"] == "0%"
    files = next(s for s in at.selectbox if s.label == "File")
    files.select(seeded.run_dir / "filter" / "dropped.jsonl").run()
    assert not at.exception
    items = at.dataframe[0].value
    assert set(items["drop reason"]) == {
        "judge: socratic 2 below 3",
        "reply shorter than 20 characters",
    }
    assert items.loc["rec-4", "judge mean"] == 2.5


def _series_axis(at: AppTest) -> set[str]:
    return {
        title
        for chart in at.get("vega_lite_chart")
        for title in re.findall(r"time \(UTC, [^)]*\)", chart.proto.spec)
    }


def test_experiment_time_series_window_can_be_changed(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _open(seeded, monkeypatch, "experiment", experiment=EXPERIMENT)
    # The last 7 days by default; the experiment started a day ago: hourly buckets.
    assert _series_axis(at) == {"time (UTC, 1 h buckets)"}
    at.button_group[0].set_value("last 24 hours").run()
    assert not at.exception
    assert _series_axis(at) == {"time (UTC, 30 min buckets)"}


@pytest.mark.parametrize("page", ["overview", "experiment", "models", "pipeline"])
def test_a_store_that_is_not_migrated_gets_a_sentence(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LARRYLAB_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception
    assert any("larrylab db upgrade" in e.value for e in at.error), [e.value for e in at.error]


def test_a_bad_database_url_gets_a_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LARRYLAB_DATABASE_URL", "mysql://db/larry")
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["unsupported database 'mysql': use SQLite or PostgreSQL"]
