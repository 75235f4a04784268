"""Issue #27: the admin API refuses non-finite or absurd numbers, malformed URLs, bad names and
key variables it must not read, with a 4xx naming the field; the good values still work."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from larrylab.localproc import LocalProcess
from larrylab.router._routing import load_routing_table
from tests.router.factories import CHAT
from tests.router.factories import error_message as _error
from tests.router.factories import router_client as _client

EXP = "larry-v1-vs-gemini"


@pytest.fixture
def client(tmp_path: Path, fast_sim: LocalProcess) -> Iterator[TestClient]:
    yield from _client(tmp_path, fast_sim)


def _raw(client: TestClient, method: str, url: str, body: str) -> Any:
    """Send `body` as it is: JSON's Infinity, NaN and 1e309 survive only as raw text."""
    return client.request(
        method, url, content=body.encode(), headers={"content-type": "application/json"}
    )


def _arms(w1: str, w2: str) -> str:
    return (
        f'[{{"model": "gemini-flash", "weight": {w1}, "control": true}},'
        f' {{"model": "larry-v1", "weight": {w2}}}]'
    )


BAD_WEIGHTS = [
    ("Infinity", "1"),
    ("1e309", "1"),
    ("1e308", "1e308"),
    ("NaN", "1"),
    ("-1", "1"),
    ("2e6", "1"),
]


@pytest.mark.parametrize(("w1", "w2"), BAD_WEIGHTS)
def test_bad_weights_are_refused_on_create_and_patch(client: TestClient, w1: str, w2: str) -> None:
    client.post(f"/admin/experiments/{EXP}/stop")
    body = f'{{"name": "e2", "route": "larry", "arms": {_arms(w1, w2)}}}'
    assert "weight" in _error(_raw(client, "POST", "/admin/experiments", body), 422)
    patch = f'{{"arms": {_arms(w1, w2)}}}'
    assert "weight" in _error(_raw(client, "PATCH", f"/admin/experiments/{EXP}", patch), 422)
    assert client.get("/admin/experiments/e2").status_code == 404
    weights = [a["weight"] for a in client.get(f"/admin/experiments/{EXP}").json()["arms"]]
    assert weights == [50, 50]


def test_the_largest_and_smallest_weights_still_work(client: TestClient) -> None:
    r = _raw(client, "PATCH", f"/admin/experiments/{EXP}", f'{{"arms": {_arms("1e6", "1e-3")}}}')
    assert r.status_code == 200, r.text
    for i in range(4):
        assert (
            client.post("/v1/chat/completions", json={**CHAT, "user": f"w{i}"}).status_code == 200
        )
    summary = client.get(f"/admin/experiments/{EXP}/report")
    assert summary.status_code == 200, summary.text
    assert [a["weight"] for a in summary.json()["arms"]] == [1e6, 1e-3]


MODEL = '{"name": "m2", "base_url": "http://127.0.0.1:9/v1"'


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ('"connect_timeout_s": Infinity', "connect_timeout_s"),
        ('"first_token_timeout_s": 1e300', "first_token_timeout_s"),
        ('"total_timeout_s": NaN', "total_timeout_s"),
        ('"total_timeout_s": 0', "total_timeout_s"),
        ('"total_timeout_s": 3601', "total_timeout_s"),
        ('"api_key_env": "LARRYLAB_ADMIN_KEY"', "LARRYLAB_ADMIN_KEY"),
        ('"api_key_env": "HOME"', "HOME"),
        ('"api_key_env": "BAD NAME"', "api_key_env"),
        ('"model": "a\\u0000b"', "model"),
    ],
)
def test_bad_model_fields_are_refused_on_create_and_update(
    client: TestClient, fields: str, field: str
) -> None:
    assert field in _error(_raw(client, "POST", "/admin/models", f"{MODEL}, {fields}}}"), 422)
    update = '{"base_url": "http://127.0.0.1:9/v1", ' + fields + "}"
    assert field in _error(_raw(client, "PUT", "/admin/models/larry-v1", update), 422)
    assert client.get("/admin/models/m2").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://",
        "http://a b c/v1",
        "ftp://example.test/v1",
        "http://example.test:99999/v1",
        "http://example.test:port/v1",
        "http://a..b/v1",
        "http://user:secret@example.test/v1",
        "http://example.test/v1?key=1",
        "http://exämple.test/v1",
        "http://example.test/v1\n",
        "h" * 10 + "://x",
    ],
)
def test_malformed_base_urls_are_refused(client: TestClient, url: str) -> None:
    body = orjson.dumps({"name": "m2", "base_url": url}).decode()
    assert "base_url" in _error(_raw(client, "POST", "/admin/models", body), 422)
    update = orjson.dumps({"base_url": url}).decode()
    assert "base_url" in _error(_raw(client, "PUT", "/admin/models/larry-v1", update), 422)


@pytest.mark.parametrize("name", ["x" * 5000, "x" * 201, "bad name", "a\nb", "a/b", "-a", ".."])
def test_bad_names_are_refused_everywhere(client: TestClient, name: str) -> None:
    model = orjson.dumps({"name": name, "base_url": "http://127.0.0.1:9/v1"}).decode()
    assert "name" in _error(_raw(client, "POST", "/admin/models", model), 422)
    client.post(f"/admin/experiments/{EXP}/stop")
    arms = [{"model": "gemini-flash", "weight": 1, "control": True}]
    exp = {"name": name, "route": "larry", "arms": arms}
    assert "name" in _error(client.post("/admin/experiments", json=exp), 422)
    exp = {"name": "e3", "route": name, "arms": arms}
    assert "route" in _error(client.post("/admin/experiments", json=exp), 422)
    if name.isprintable() and "/" not in name and name != "..":  # one path segment
        route = client.put(f"/admin/routes/{name}", json={"model": "gemini-flash"})
        assert "route" in _error(route, 422)
    assert client.get("/admin/routes").json()["count"] == 1
    assert client.get("/admin/experiments").json()["count"] == 1


def test_good_values_still_work(client: TestClient, fast_sim: LocalProcess) -> None:
    made = client.post(
        "/admin/models",
        json={
            "name": "larry-v2.1_q4:latest",
            "base_url": f"{fast_sim.url}/v1/",
            "model": "hf.co/org/larry:Q4_K_M",
            "api_key_env": "OPENAI_API_KEY",
            "connect_timeout_s": 0.5,
            "first_token_timeout_s": 3600,
            "total_timeout_s": 3600,
        },
    )
    assert made.status_code == 201, made.text
    route = client.put("/admin/routes/coach_2", json={"model": "larry-v2.1_q4:latest"})
    assert route.status_code == 200, route.text
    r = client.post("/v1/chat/completions", json={**CHAT, "model": "coach_2"})
    assert r.status_code == 200 and r.headers["x-larrylab-arm"] == "larry-v2.1_q4:latest"
    for url in ("https://example.test:8443/v1", "http://[::1]:8000/v1", "http://gpu_box/v1"):
        ok = client.put("/admin/models/larry-v2.1_q4:latest", json={"base_url": url})
        assert ok.status_code == 200, ok.text


def test_the_deployment_chooses_which_key_variables_models_may_name(
    tmp_path: Path, fast_sim: LocalProcess
) -> None:
    for client in _client(tmp_path, fast_sim, allowed_key_envs="MY_TOKEN, VENDOR_*"):
        for env in ("MY_TOKEN", "VENDOR_KEY"):
            body = {"name": f"m-{env}", "base_url": "http://127.0.0.1:9/v1", "api_key_env": env}
            assert client.post("/admin/models", json=body).status_code == 201
        for env in ("OPENAI_API_KEY", "LARRYLAB_ADMIN_KEY"):
            body = {"name": "m3", "base_url": "http://127.0.0.1:9/v1", "api_key_env": env}
            message = _error(client.post("/admin/models", json=body), 422)
            assert env in message and "api_key_env" in message


def test_an_unset_key_variable_is_a_warning_naming_model_and_variable(
    tmp_path: Path,
    fast_sim: LocalProcess,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOWHERE_API_KEY", raising=False)
    caplog.set_level(logging.WARNING, logger="larrylab.router._routing")
    for client in _client(tmp_path, fast_sim, routing_refresh_s=0.05):
        body = {
            "name": "keyless",
            "base_url": f"{fast_sim.url}/v1",
            "api_key_env": "NOWHERE_API_KEY",
        }
        assert client.post("/admin/models", json=body).status_code == 201
        assert client.post("/v1/chat/completions", json={**CHAT, "model": "keyless"}).is_success
        time.sleep(0.3)  # several periodic reloads
        client.put("/admin/routes/larry", json={"model": "gemini-flash"})  # reloads again
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "NOWHERE_API_KEY" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert "keyless" in warnings[0] and "not set" in warnings[0]


def test_rows_stored_before_the_fix_are_skipped_not_served(
    tmp_path: Path, fast_sim: LocalProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LARRYLAB_TEST_SECRET", "s3cret")
    for client in _client(tmp_path, fast_sim):
        with sqlite3.connect(tmp_path / "db.sqlite") as conn:
            conn.execute("UPDATE arm SET weight = 9e999 WHERE model = 'gemini-flash'")
            conn.execute("UPDATE model SET api_key_env = 'LARRYLAB_TEST_SECRET'")
        client.put("/admin/routes/larry", json={"model": "gemini-flash"})  # reloads the table
        r = client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200 and r.headers["x-larrylab-experiment"] == "none"
        assert client.get("/admin/experiments").status_code == 200
        from sqlalchemy import create_engine

        table = load_routing_table(create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
        assert all(t.api_key() is None for t in table.models.values())


def test_long_values_are_refused_before_the_database_sees_them(
    migrated_url: str, tmp_path: Path, fast_sim: LocalProcess
) -> None:
    """PostgreSQL enforces the columns' lengths (a 500 before the fix); SQLite does not."""
    from larrylab.config import Settings
    from larrylab.release._prepare import prepare_store
    from larrylab.router._app import create_app
    from tests.conftest import write_config

    config = write_config(tmp_path / "c.yaml", control_url=fast_sim.url, candidate_url=fast_sim.url)
    settings = Settings(
        database_url=migrated_url, config=config, journal_dir=str(tmp_path / "journal")
    )
    prepare_store(settings)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert "route" in _error(client.put("/admin/routes/" + "r" * 5000, json=CHAT_ROUTE), 422)
        client.post(f"/admin/experiments/{EXP}/stop")
        arms = [
            {"model": "gemini-flash", "weight": 1e6, "control": True},
            {"model": "larry-v1", "weight": 0.001},
        ]
        exp = {"name": "e2", "route": "larry", "arms": arms, "seed": "s" * 201}
        assert "seed" in _error(client.post("/admin/experiments", json=exp), 422)
        made = client.post("/admin/experiments", json={**exp, "seed": "s" * 200})
        assert made.status_code == 201, made.text
        assert [a["weight"] for a in made.json()["arms"]] == [1e6, 0.001]
        summary = client.get("/admin/experiments/e2/report")
        assert summary.status_code == 200, summary.text


CHAT_ROUTE = {"model": "gemini-flash"}
