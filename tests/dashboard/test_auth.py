"""Who may Promote and Roll back: with `LARRYLAB_ADMIN_KEY` set the dashboard is read-only until
the key is entered; with Streamlit's OIDC login configured a logged-in user may act; with neither,
only a loopback dashboard acts, under a warning banner."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session
from streamlit import config
from streamlit.testing.v1 import AppTest

from larrylab.dashboard import auth
from larrylab.db._engine import make_engine
from larrylab.release._promotion import list_rollouts
from larrylab.release._registry import list_model_events
from tests.dashboard.conftest import APP
from tests.dashboard.seed import GATED, seed

KEY = "s3cret-admin-key"
MUTATING = {"promote", "confirm_promotion", "rollback", "confirm_rollback"}
OIDC = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "x" * 32,
    "client_id": "larrylab",
    "client_secret": "y",
    "server_metadata_url": "https://id.example/.well-known/openid-configuration",
}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'larrylab.db'}"
    seed(url)
    monkeypatch.setenv("LARRYLAB_DATABASE_URL", url)
    return url


def _models(at: AppTest) -> AppTest:
    at.run()
    at.switch_page("views/models.py")
    at.query_params["model"] = GATED
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _keys(at: AppTest) -> set[str]:
    return {b.key for b in at.button if b.key}


def _rollouts(url: str) -> list[tuple[str, str]]:
    engine = make_engine(url)
    with Session(engine) as s:
        out = [(r.route, r.status) for r in list_rollouts(session=s)]
    engine.dispose()
    return out


def _unlock(at: AppTest, key: str) -> None:
    at.text_input(key=auth.KEY_INPUT).input(key)
    at.button(key=auth.UNLOCK).click().run()
    assert not at.exception


def test_key_check_is_exact() -> None:
    assert auth.key_matches(KEY, KEY)
    assert not auth.key_matches(KEY + "x", KEY)
    assert not auth.key_matches("", "")  # no key configured: nothing unlocks
    assert not auth.key_matches("ä", "a")


def test_without_a_key_a_loopback_dashboard_acts_under_a_warning(store: str) -> None:
    at = _models(AppTest.from_file(str(APP), default_timeout=30))
    assert "promote" in _keys(at)
    assert any("LARRYLAB_ADMIN_KEY" in w.value and "no login" in w.value for w in at.warning)


def test_the_admin_key_unlocks_promote_and_rollback(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LARRYLAB_ADMIN_KEY", KEY)
    at = _models(AppTest.from_file(str(APP), default_timeout=30))
    assert not MUTATING & _keys(at)  # read-only: the pages show, the actions do not
    assert at.table, "the registry is still shown"
    assert any("read-only" in i.value for i in at.info)
    assert not any("no login" in w.value for w in at.warning)

    _unlock(at, "wrong key")
    assert "promote" not in _keys(at)
    assert any("not the admin key" in e.value for e in at.error)
    assert auth.SESSION_KEY not in at.session_state

    _unlock(at, KEY)
    assert "promote" in _keys(at) and at.session_state[auth.SESSION_KEY] == KEY
    at.button(key="promote").click().run()
    at.button(key="confirm_promotion").click().run()
    assert not at.exception
    assert _rollouts(store) == [("coach", "active")]
    engine = make_engine(store)
    with Session(engine) as s:
        actors = {e.actor for e in list_model_events(session=s, name=GATED)}
    engine.dispose()
    assert "dashboard (admin key)" in actors

    at.button(key=auth.LOCK).click().run()
    assert not MUTATING & _keys(at)
    assert auth.SESSION_KEY not in at.session_state


def test_a_changed_admin_key_locks_an_open_session(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LARRYLAB_ADMIN_KEY", KEY)
    at = _models(AppTest.from_file(str(APP), default_timeout=30))
    _unlock(at, KEY)
    assert "promote" in _keys(at)
    monkeypatch.setenv("LARRYLAB_ADMIN_KEY", "rotated")
    at.run()
    assert not MUTATING & _keys(at)


def test_a_pending_action_does_nothing_while_locked(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LARRYLAB_ADMIN_KEY", KEY)
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.session_state["models_pending_action"] = {
        "kind": "promotion",
        "model": GATED,
        "route": "coach",
        "weight": 10.0,
        "baseline": "gemini-flash",
    }
    at.session_state[auth.SESSION_KEY] = "a guess"
    _models(at)
    assert not MUTATING & _keys(at)
    assert _rollouts(store) == []


@pytest.fixture
def beyond_loopback() -> Iterator[None]:
    config.set_option("server.address", "0.0.0.0")
    try:
        yield
    finally:
        config.set_option("server.address", "127.0.0.1")


@pytest.mark.usefixtures("beyond_loopback")
def test_without_a_key_a_dashboard_beyond_loopback_is_read_only(store: str) -> None:
    at = _models(AppTest.from_file(str(APP), default_timeout=30))
    assert not MUTATING & _keys(at)
    assert any("0.0.0.0" in w.value and "LARRYLAB_ADMIN_KEY" in w.value for w in at.warning)


def _oidc_app(user: dict[str, Any], users: list[str] | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.secrets["auth"] = OIDC
    if users is not None:
        at.secrets["larrylab"] = {"dashboard_users": users}
    at.user = user
    return _models(at)


def test_with_oidc_a_logged_in_user_may_act(store: str) -> None:
    logged_out = _oidc_app({"is_logged_in": False})
    assert not MUTATING & _keys(logged_out)
    assert auth.LOGIN in _keys(logged_out)
    assert not any("no login" in w.value for w in logged_out.warning)

    ann = _oidc_app({"is_logged_in": True, "email": "ann@team.example", "name": "Ann"})
    assert "promote" in _keys(ann) and auth.LOGOUT in _keys(ann)
    ann.button(key="promote").click().run()
    ann.button(key="confirm_promotion").click().run()
    assert _rollouts(store) == [("coach", "active")]
    engine = make_engine(store)
    with Session(engine) as s:
        actors = {e.actor for e in list_model_events(session=s, name=GATED)}
    engine.dispose()
    assert "dashboard (ann@team.example)" in actors


def test_with_oidc_an_allow_list_limits_who_may_act(store: str) -> None:
    user = {"is_logged_in": True, "email": "eve@elsewhere.example"}
    eve = _oidc_app(user, users=["ann@team.example"])
    assert not MUTATING & _keys(eve)
    assert any("eve@elsewhere.example" in i.value for i in eve.info)
    ann = _oidc_app({"is_logged_in": True, "email": "Ann@Team.example"}, ["ann@team.example"])
    assert "promote" in _keys(ann)
