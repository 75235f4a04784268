"""A real browser against a real `streamlit run`: headless Chromium renders every page to a
screenshot, and each page's DOM holds the numbers the platform reports for the seeded store.

Skipped when Chromium is not installed, unless LARRYLAB_REQUIRE_BROWSER is set (as in CI).
Set LARRYLAB_SCREENSHOT_DIR to keep the screenshots.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlmodel import Session

from larrylab.dashboard import frames
from larrylab.dashboard.launch import dashboard_env, streamlit_command
from larrylab.db._engine import make_engine
from larrylab.experiments._arm_report import arm_reports
from larrylab.experiments._experiments import get_experiment
from larrylab.localproc import free_port
from larrylab.release._evalstore import latest_eval_results
from tests.dashboard.seed import CANDIDATE, CONTROL, EXPERIMENT, GATED, Seeded

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--virtual-time-budget=30000",
    "--window-size=1400,1000",
]
DUMP = ["--dump-dom"]
ATTEMPTS = 8  # a cold server's first run can outlast the virtual-time budget


@pytest.fixture(scope="module")
def dashboard(
    chromium: str, seeded: Seeded, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`streamlit run` of the dashboard on a free loopback port, reading the seeded store
    (started only once Chromium is known to be there)."""
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            streamlit_command(port=port), env=dashboard_env(seeded.url), stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/_stcore/health", timeout=2).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _text(dom: str) -> str:
    no_scripts = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", no_scripts))


def _render(chromium: str, url: str, shot: Path, expected: list[str], profile: Path) -> str:
    """Render `url` until its DOM holds every expected string; returns the page text."""
    text = ""
    for _ in range(ATTEMPTS):
        shot.unlink(missing_ok=True)
        done = subprocess.run(
            [chromium, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", *DUMP, url],
            capture_output=True,
            timeout=120,
            check=False,
        )
        text = _text(done.stdout.decode(errors="replace"))
        if all(e in text for e in expected):
            return text
    missing = [e for e in expected if e not in text]
    raise AssertionError(f"{url}: {missing} not on the page after {ATTEMPTS} tries:\n{text[:3000]}")


def _expectations(seeded: Seeded) -> dict[str, list[str]]:
    engine = make_engine(seeded.url)
    with Session(engine) as s:
        exp = get_experiment(session=s, name=EXPERIMENT)
        evals = latest_eval_results(session=s, model=GATED)
    spec = [(a.model, a.control, a.weight) for a in exp.arms]
    arms = {a.arm: a for a in arm_reports(engine, EXPERIMENT, spec)}
    engine.dispose()
    control, cand = arms[CONTROL], arms[CANDIDATE]
    return {
        "": ["Overview", EXPERIMENT, "sample ratio mismatch", "circuit breaker open"],
        f"experiment?experiment={EXPERIMENT}": [
            frames.count(control.requests),
            frames.ms(control.latency_ms.p50),
            frames.ms(cand.latency_ms.p95),
            frames.score(cand.mean_score),
            frames.share(cand.high_rating_share),
            frames.share(cand.thumbs_up_rate),
            frames.share(control.ineligible_share),
            "KEEP RUNNING",
        ],
        f"models?model={GATED}": [
            GATED,
            "Gate passed",
            frames.interval(evals[0].mean, evals[0].ci_low, evals[0].ci_high),
        ],
        "pipeline": ["Stage counts", "Categories against targets", str(seeded.run_dir)],
    }


def test_every_page_renders_in_chromium(
    chromium: str, dashboard: str, seeded: Seeded, tmp_path: Path
) -> None:
    keep = os.environ.get("LARRYLAB_SCREENSHOT_DIR")
    for path, expected in _expectations(seeded).items():
        name = path.split("?")[0] or "overview"
        shot = tmp_path / f"{name}.png"
        text = _render(chromium, f"{dashboard}/{path}", shot, expected, tmp_path / "profile")
        assert "Traceback" not in text
        with Image.open(shot) as image:
            assert image.size == (1400, 1000)
            colours = image.convert("RGB").getcolors(maxcolors=1_000_000) or []
            assert len(colours) > 50, f"{name}: the screenshot looks blank"
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(keep) / shot.name)
