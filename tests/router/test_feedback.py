"""`POST /v1/feedback` as Larry calls it: a thumb, a 1-5 rating, or both, with categories,
addressed by request id, Gemini's response id or thread; kept locally while the database is
down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from larrylab.experiments._feedback import replay_feedback
from larrylab.localproc import LocalProcess
from larrylab.requestlog._store import RequestRecord
from tests.conftest import write_records
from tests.requestlog.factories import records as _records
from tests.router.factories import router_client


@pytest.fixture
def stored() -> list[RequestRecord]:
    """Requests already in the router's store (experiment `exp`, arms a and b)."""
    return _records(6, seed=3)


@pytest.fixture
def client(
    tmp_path: Path, fast_sim: LocalProcess, stored: list[RequestRecord]
) -> Iterator[TestClient]:
    for c in router_client(tmp_path, fast_sim, spill_dir=str(tmp_path / "spill")):
        write_records(f"sqlite:///{tmp_path / 'db.sqlite'}", stored)
        yield c


def _rate(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/feedback", json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ({"thumb": "up"}, {"score": None, "thumb": "up", "categories": {}}),
        ({"thumb": "down"}, {"score": None, "thumb": "down", "categories": {}}),
        ({"thumb": True}, {"score": None, "thumb": "up"}),
        ({"thumb": False}, {"score": None, "thumb": "down"}),
        ({"thumb": 1}, {"thumb": "up"}),
        ({"thumb": 0}, {"thumb": "down"}),
        ({"score": 3}, {"score": 3, "thumb": None, "categories": {}}),
        ({"score": 5, "thumb": 0}, {"score": 5, "thumb": "down"}),
        (
            {"score": 4, "categories": {"accuracy": True, "depth": False, "action-able_2": True}},
            {"score": 4, "categories": {"accuracy": True, "depth": False, "action-able_2": True}},
        ),
    ],
)
def test_thumbs_scores_and_categories(
    client: TestClient, stored: list[RequestRecord], body: dict[str, Any], shown: dict[str, Any]
) -> None:
    out = _rate(client, request_id="r1", **body)
    assert out | shown == out  # every shown field as expected
    assert (out["arm"], out["thread_id"]) == (stored[1].arm, stored[1].thread_id)
    assert out["updated"] is False


def test_response_id_is_the_request_id(client: TestClient, stored: list[RequestRecord]) -> None:
    by_response = _rate(client, response_id="r2", thumb="up", source="larry")
    assert by_response["request_id"] == "r2" and by_response["arm"] == stored[2].arm
    both = _rate(client, request_id="r2", response_id="r2", score=2, source="larry")
    assert both["id"] == by_response["id"] and both["updated"] is True
    assert (both["score"], both["thumb"]) == (2, "up")  # the thumb given before is kept


def test_rating_again_updates_what_it_gives(client: TestClient) -> None:
    first = _rate(client, request_id="r0", thumb="up")
    detailed = _rate(
        client, request_id="r0", score=2, categories={"clarity": False}, comment="vague"
    )
    assert detailed["id"] == first["id"] and detailed["updated"] is True
    assert (detailed["thumb"], detailed["score"], detailed["categories"]) == (
        "up",
        2,
        {"clarity": False},
    )
    flipped = _rate(client, request_id="r0", thumb="down")
    assert (flipped["thumb"], flipped["score"], flipped["comment"]) == ("down", 2, "vague")
    other_source = _rate(client, request_id="r0", thumb="up", source="facilitator")
    assert other_source["id"] != first["id"] and other_source["updated"] is False


def test_a_thread_rated_by_thumb(client: TestClient, stored: list[RequestRecord]) -> None:
    out = _rate(client, thread_id=stored[4].thread_id, thumb=False)
    assert out["request_id"] is None and out["thumb"] == "down" and out["experiment"] == "exp"


def test_openapi_documents_thumbs_and_categories(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    fields = schemas["FeedbackIn"]["properties"]
    assert {"score", "thumb", "categories", "response_id", "request_id", "thread_id"} <= set(fields)
    assert {"enum": ["up", "down"]} in fields["thumb"]["anyOf"]
    assert fields["categories"]["maxProperties"] == 20


def test_ratings_spill_while_the_database_is_down(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from larrylab.router import _feedback

    async def down(*_: Any) -> Any:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    with monkeypatch.context() as m:
        m.setattr(_feedback, "_store", down)
        body = {"response_id": "r5", "thumb": "up", "categories": {"relevance": True}}
        r = client.post("/v1/feedback", json=body)
        assert r.status_code == 202, r.text
        out = r.json()
        assert out | {"spilled": True, "request_id": "r5", "thumb": "up", "score": None} == out
        assert out["categories"] == {"relevance": True}
        thread = client.post("/v1/feedback", json={"thread_id": "t0", "score": 4, "thumb": 0})
        assert thread.status_code == 202 and thread.json()["thumb"] == "down"
    (path,) = (tmp_path / "spill").glob("feedback*")
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [(r["request_id"], r["score"], r["thumb"], r["categories"]) for r in rows] == [
        ("r5", None, 1, {"relevance": True}),
        (None, 4, 0, None),
    ]
    # Once the database is back, the replay stores them as sent.
    state = client.app.state.router  # type: ignore[attr-defined]
    replayed = replay_feedback(state.engine, state.writer.spill, state.writer.quarantine)
    assert (replayed.written, replayed.quarantined) == (2, 0)
    again = _rate(client, request_id="r5", score=1)
    assert (again["thumb"], again["categories"], again["updated"]) == (
        "up",
        {"relevance": True},
        True,
    )
