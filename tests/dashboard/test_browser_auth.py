"""Headless Chromium, driven over the DevTools protocol, against a real `larrylab dashboard` with
`LARRYLAB_ADMIN_KEY` set: the Models page is read-only until the key is typed into the sidebar,
and a DNS-rebound name (Chromium resolves evil.example to 127.0.0.1) gets no page.

Skipped when Chromium is not installed, unless LARRYLAB_REQUIRE_BROWSER is set (as in CI).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.dashboard.running import Dashboard, start_dashboard, stop_dashboard
from tests.dashboard.seed import GATED, Seeded

pytestmark = pytest.mark.e2e
KEY = "correct horse battery staple"
TIMEOUT_S = 60.0


class Page:
    """One Chromium tab over the DevTools protocol: navigate, evaluate, type."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and return its result (events in between are skipped)."""
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=TIMEOUT_S))
            if msg.get("id") == n:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        out = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        return out.get("result", {}).get("value")

    def text(self) -> str:
        """The page's visible text."""
        return str(self.js("document.body ? document.body.innerText : ''") or "")

    def wait_for(self, ok: Callable[[str], bool], what: str) -> str:
        """Poll the page's text until `ok` holds for it."""
        deadline = time.monotonic() + TIMEOUT_S
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if ok(text):
                return text
            time.sleep(0.3)
        raise AssertionError(f"{what} never showed; the page says:\n{text[:3000]}")


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Page]:
    """A headless Chromium tab; evil.example resolves to 127.0.0.1 (a DNS rebinding)."""
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP evil.example 127.0.0.1",
            "--window-size=1400,1000",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT_S
        while not active.exists() or len(active.read_text().split()) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "Chromium did not start"
            time.sleep(0.2)
        port = active.read_text().split()[0]
        tabs = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        url = next(t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page")
        with connect(url, proxy=None, max_size=None) as ws:
            page = Page(ws)
            page.call("Runtime.enable")
            yield page
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def locked_dashboard(seeded: Seeded, tmp_path: Path) -> Iterator[Dashboard]:
    """`larrylab dashboard` with an admin key."""
    dash = start_dashboard(seeded.url, tmp_path, env={"LARRYLAB_ADMIN_KEY": KEY})
    try:
        yield dash
    finally:
        stop_dashboard(dash)


def _type_key(page: Page, key: str) -> None:
    page.js("document.querySelector('input[type=password]').focus()")
    page.call("Input.insertText", text=key)
    page.js(
        "[...document.querySelectorAll('button')]"
        ".find(b => b.innerText.trim() === 'Unlock').click()"
    )


def test_the_models_page_is_read_only_until_the_key_is_typed(
    browser: Page, locked_dashboard: Dashboard
) -> None:
    browser.call("Page.navigate", url=f"{locked_dashboard.base}/models?model={GATED}")
    text = browser.wait_for(lambda t: "read-only" in t and "Admin key" in t, "the locked page")
    assert GATED in text and "Gate passed" in text  # reading needs no key
    assert "Promote…" not in text and "Roll back…" not in text

    _type_key(browser, "not the key")
    text = browser.wait_for(lambda t: "not the admin key" in t, "the refusal")
    assert "Promote…" not in text

    _type_key(browser, KEY)
    unlocked = ("Promote…", "Roll back…", "Unlocked with the admin key")
    text = browser.wait_for(lambda t: all(s in t for s in unlocked), "the unlocked page")
    assert all(s in text for s in unlocked)  # Streamlit draws them one after another
    assert "read-only" not in text


def test_a_rebound_name_gets_no_dashboard(browser: Page, locked_dashboard: Dashboard) -> None:
    browser.call("Page.navigate", url=f"http://evil.example:{locked_dashboard.port}/")
    text = browser.wait_for(lambda t: "Forbidden" in t, "the refusal")
    assert "does not answer to the host" in text
    # A page of another origin cannot open the dashboard's websocket either.
    opened = browser.js(
        f"""new Promise(done => {{
            const ws = new WebSocket("ws://127.0.0.1:{locked_dashboard.port}/_stcore/stream");
            ws.onopen = () => done("open");
            ws.onerror = () => done("refused");
        }})"""
    )
    assert opened == "refused"
