"""Experiment reports on SQLite and PostgreSQL: sufficient statistics in SQL, verdicts."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert

from larrylab.db._engine import make_engine
from larrylab.db._schema import Feedback, RequestLog
from larrylab.experiments._report import ReportOptions, experiment_report, sufficient_stats
from larrylab.rollups import rebuild_rollups

T0 = datetime(2026, 11, 1, tzinfo=UTC)
ARMS = [("gemini", True, 50.0), ("larry", False, 50.0)]


def _insert(
    url: str, arm_specs: dict[str, dict[str, Any]], seed: int = 1
) -> dict[str, dict[str, list[float]]]:
    """Insert requests and ratings per arm; returns the raw values for checking."""
    rng = random.Random(seed)
    requests, ratings = [], []
    raw: dict[str, dict[str, list[float]]] = {}
    for arm, spec in arm_specs.items():
        vals: dict[str, list[float]] = {"latency": [], "errors": [], "scores": []}
        for i in range(spec["requests"]):
            error = rng.random() < spec.get("error_rate", 0.0)
            latency = max(1.0, rng.gauss(spec["latency"], spec["latency"] * 0.2))
            rid = f"{arm}-{i}"
            requests.append(
                {
                    "id": rid,
                    "thread_id": f"{arm}-t{i // 2}",
                    "unit_source": "user",
                    "route": "larry",
                    "experiment": "exp",
                    "arm": arm,
                    "model": arm,
                    "upstream_model": arm,
                    "stream": True,
                    "status": "error" if error else "ok",
                    "http_status": 502 if error else 200,
                    "error_class": "server_error" if error else None,
                    "error_message": None,
                    "fallback_from": None,
                    "latency_ms": latency,
                    "ttft_ms": latency / 3,
                    "upstream_ms": latency - 0.5,
                    "overhead_ms": 0.5,
                    "prompt_tokens": 10,
                    "completion_tokens": 20,
                    "prompt_message_id": None,
                    "reply_message_id": None,
                    "created_at": T0,
                    "finished_at": T0,
                }
            )
            vals["errors"].append(float(error))
            if not error:
                vals["latency"].append(latency)
            if rng.random() < spec.get("rated", 0.5):
                score = rng.choices([1, 2, 3, 4, 5], weights=spec.get("taste", (1, 1, 2, 3, 3)))[0]
                ratings.append(
                    {
                        "target": f"request:{rid}",
                        "request_id": rid,
                        "thread_id": f"{arm}-t{i // 2}",
                        "experiment": "exp",
                        "arm": arm,
                        "score": score,
                        "comment": None,
                        "source": "user",
                        "created_at": T0,
                        "updated_at": T0,
                    }
                )
                vals["scores"].append(float(score))
        raw[arm] = vals
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(RequestLog.__table__), requests)  # type: ignore[attr-defined]
        if ratings:
            conn.execute(insert(Feedback.__table__), ratings)  # type: ignore[attr-defined]
    rebuild_rollups(engine)  # rows inserted behind the writer's back: recompute the running totals
    return raw


def test_sufficient_stats_match_numpy(migrated_url: str) -> None:
    raw = _insert(
        migrated_url,
        {
            "gemini": {"requests": 300, "latency": 900, "error_rate": 0.05},
            "larry": {"requests": 200, "latency": 200, "error_rate": 0.1},
        },
    )
    with make_engine(migrated_url).connect() as conn:
        stats, threads = sufficient_stats(conn, "exp")
    assert threads == {"gemini": 150, "larry": 100}
    for arm in ("gemini", "larry"):
        lat = np.array(raw[arm]["latency"])
        s = stats[arm]["latency_ms"]
        assert (s.n, s.sum, s.sum_squares) == (
            len(lat),
            pytest.approx(lat.sum()),
            pytest.approx((lat**2).sum()),
        )
        assert s.variance == pytest.approx(lat.var(ddof=1))
        err = np.array(raw[arm]["errors"])
        assert stats[arm]["error_rate"].n == len(err) and stats[arm][
            "error_rate"
        ].mean == pytest.approx(err.mean())
        scores = np.array(raw[arm]["scores"])
        assert stats[arm]["mean_score"].mean == pytest.approx(scores.mean())
        assert stats[arm]["high_rating_share"].mean == pytest.approx((scores >= 4).mean())
        assert stats[arm]["feedback_rate"].mean == pytest.approx(len(scores) / len(err))


def _verdict(
    url: str, larry: dict[str, Any], gemini: dict[str, Any] | None = None, **opts: Any
) -> Any:
    base = {"requests": 2000, "latency": 900, "rated": 0.6}
    _insert(url, {"gemini": {**base, **(gemini or {})}, "larry": {**base, **larry}})
    return experiment_report(make_engine(url), "exp", ARMS, ReportOptions(**opts)).candidates[0]


def test_faster_and_not_worse_ships(migrated_url: str) -> None:
    big = {"requests": 10000, "rated": 0.9}
    cand = _verdict(migrated_url, {**big, "latency": 200}, big)
    assert cand.verdict == "ship", cand.reasons
    latency = next(m for m in cand.metrics if m.metric == "latency_ms")
    assert latency.outcome == "better" and latency.test["effect"] == pytest.approx(-0.78, abs=0.03)


def test_more_errors_stops(migrated_url: str) -> None:
    cand = _verdict(migrated_url, {"latency": 200, "error_rate": 0.2})
    assert cand.verdict == "stop" and "error_rate is significantly worse" in cand.reasons


def test_errors_only_in_the_candidate_still_stop(migrated_url: str) -> None:
    cand = _verdict(migrated_url, {"latency": 900, "error_rate": 0.05}, {"error_rate": 0.0})
    assert cand.verdict == "stop"


def test_worse_quality_stops(migrated_url: str) -> None:
    cand = _verdict(migrated_url, {"latency": 200, "taste": (6, 3, 1, 1, 1)})
    assert cand.verdict == "stop"
    assert {"mean_score is significantly worse", "high_rating_share is significantly worse"} <= set(
        cand.reasons
    )


def test_little_data_keeps_running_with_samples_needed(migrated_url: str) -> None:
    cand = _verdict(migrated_url, {"requests": 30, "latency": 880}, {"requests": 30})
    assert cand.verdict == "keep_running"
    assert cand.ratings_needed_per_arm is not None and cand.ratings_needed_per_arm > 100


def test_sample_ratio_mismatch_is_invalid(migrated_url: str) -> None:
    cand = _verdict(migrated_url, {"requests": 1000, "latency": 200})
    assert cand.verdict == "invalid"


def test_fixed_horizon_option(migrated_url: str) -> None:
    _insert(
        migrated_url,
        {"gemini": {"requests": 400, "latency": 900}, "larry": {"requests": 400, "latency": 850}},
    )
    engine = make_engine(migrated_url)
    seq = experiment_report(engine, "exp", ARMS).candidates[0].metrics[0]
    fixed = (
        experiment_report(engine, "exp", ARMS, ReportOptions(sequential=False))
        .candidates[0]
        .metrics[0]
    )
    assert seq.test["effect"] == pytest.approx(fixed.test["effect"])
    # The always-valid interval is wider than the fixed-horizon one.
    assert seq.test["ci_high"] - seq.test["ci_low"] > fixed.test["ci_high"] - fixed.test["ci_low"]
