"""Fixtures: a seeded SQLite store shared by the read-only page tests of a module."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboard.seed import Seeded, seed

APP = Path(__file__).resolve().parents[2] / "larrylab" / "dashboard" / "app.py"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """A store seeded once per test module (tests must not change it)."""
    tmp = tmp_path_factory.mktemp("dashboard")
    return seed(f"sqlite:///{tmp / 'larrylab.db'}", run_dir=tmp / "run-1")
