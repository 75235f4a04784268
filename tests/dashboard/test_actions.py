"""Promote and Roll back from the Models page: a confirmation step, then the same service
functions as the CLI (the store changes only after confirming)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session
from streamlit.testing.v1 import AppTest

from larrylab.db._engine import make_engine
from larrylab.release._promotion import list_rollouts
from larrylab.release._registry import get_model
from tests.dashboard.conftest import APP
from tests.dashboard.seed import GATED, seed


@pytest.fixture
def models_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[AppTest, str]:
    url = f"sqlite:///{tmp_path / 'larrylab.db'}"
    seed(url)
    monkeypatch.setenv("LARRYLAB_DATABASE_URL", url)
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.run()
    at.switch_page("views/models.py")
    at.query_params["model"] = GATED
    at.run()
    assert not at.exception
    return at, url


def _state(url: str) -> tuple[str, list[tuple[str, str, str]]]:
    engine = make_engine(url)
    with Session(engine) as s:
        state = get_model(session=s, name=GATED).state
        rollouts = [(r.route, r.candidate, r.status) for r in list_rollouts(session=s)]
    engine.dispose()
    return state, rollouts


def test_promote_asks_first_then_starts_a_canary(models_page: tuple[AppTest, str]) -> None:
    at, url = models_page
    at.number_input(key="weight").set_value(20.0)
    at.button(key="promote").click().run()
    assert not at.exception
    question = [w.value for w in at.warning if "Start a canary" in w.value]
    assert question and "**coach**" in question[0] and "20%" in question[0]
    assert _state(url) == ("passed", [])  # nothing happens before confirming

    at.button(key="cancel_promotion").click().run()
    assert not any("Start a canary" in w.value for w in at.warning)
    assert _state(url) == ("passed", [])

    at.button(key="promote").click().run()
    at.button(key="confirm_promotion").click().run()
    assert not at.exception
    assert any("Canary started: larry-v2 at 20% on coach" in s.value for s in at.success)
    assert _state(url) == ("canary", [("coach", GATED, "active")])
    # The gate is not re-passable on a route that now runs the canary: the button says why.
    assert at.button(key="promote").disabled
    assert "already rolling out" in str(at.button(key="promote").help)


def test_rollback_needs_a_reason_and_a_confirmation(models_page: tuple[AppTest, str]) -> None:
    at, url = models_page
    at.button(key="promote").click().run()
    at.button(key="confirm_promotion").click().run()
    assert _state(url)[1] == [("coach", GATED, "active")]

    at.selectbox(key="rollback_route").select("coach").run()
    assert at.button(key="rollback").disabled  # no reason given yet
    at.text_input(key="rollback_reason").input("answers too long in the canary").run()
    assert not at.button(key="rollback").disabled
    at.button(key="rollback").click().run()
    assert any("Roll back route **coach**" in w.value for w in at.warning)
    assert _state(url)[1] == [("coach", GATED, "active")]
    at.button(key="confirm_rollback").click().run()
    assert not at.exception
    assert any("Rolled back route coach" in s.value for s in at.success)
    assert _state(url) == ("failed", [("coach", GATED, "rolled_back")])


def test_rollback_is_disabled_when_there_is_nothing_to_roll_back(
    models_page: tuple[AppTest, str],
) -> None:
    at, _ = models_page
    at.selectbox(key="rollback_route").select("summaries").run()
    at.text_input(key="rollback_reason").input("just checking").run()
    button = at.button(key="rollback")
    assert button.disabled
    assert button.help == "route summaries has no active or completed rollout to roll back"
