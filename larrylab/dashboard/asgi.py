"""The dashboard's server: Streamlit's app (`app.py`) behind the Host and Origin check
(`guard.HostOriginGuard`). `larrylab dashboard` runs `streamlit run asgi.py`; Streamlit finds
`app` here and serves it with uvicorn."""

from __future__ import annotations

from pathlib import Path

from starlette.middleware import Middleware
from streamlit.starlette import App

from larrylab.dashboard.guard import HostOriginGuard

app = App(
    Path(__file__).resolve().parent / "app.py",
    middleware=[Middleware(HostOriginGuard)],
)
