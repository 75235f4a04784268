"""Fixtures: a seeded SQLite store shared by the read-only page tests of a module, Chromium, and
the dashboard's defaults for AppTest runs (bound to loopback, no admin key)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit import config

from tests.dashboard.seed import Seeded, seed

APP = Path(__file__).resolve().parents[2] / "larrylab" / "dashboard" / "app.py"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """A store seeded once per test module (tests must not change it)."""
    tmp = tmp_path_factory.mktemp("dashboard")
    return seed(f"sqlite:///{tmp / 'larrylab.db'}", run_dir=tmp / "run-1")


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary (skips, or fails when LARRYLAB_REQUIRE_BROWSER is set, if absent)."""
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found is None:
        if os.environ.get("LARRYLAB_REQUIRE_BROWSER"):
            pytest.fail("Chromium is not installed but LARRYLAB_REQUIRE_BROWSER is set")
        pytest.skip("Chromium is not installed (Debian package `chromium`)")
    return found


@pytest.fixture(autouse=True)
def as_launched(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """AppTest runs see what `larrylab dashboard` gives streamlit: a loopback address; and no
    admin key from the developer's shell."""
    monkeypatch.delenv("LARRYLAB_ADMIN_KEY", raising=False)
    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    try:
        yield
    finally:
        config.set_option("server.address", before)
