"""The dashboard's entry point: `streamlit run larrylab/dashboard/app.py` (or `larrylab dashboard`).

Shared frame for every page: the navigation, the database in use, a refresh button and the
login controls (`auth`).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from larrylab.dashboard import auth
from larrylab.dashboard.data import clear_caches, database_url, display_url, friendly_errors

VIEWS_DIR = Path(__file__).resolve().parent / "views"


def main() -> None:
    """Configure the page, show the navigation and run the selected page."""
    st.set_page_config(page_title="larrylab", page_icon=":material/science:", layout="wide")
    page = st.navigation(
        [
            st.Page(
                VIEWS_DIR / "overview.py", title="Overview", icon=":material/home:", default=True
            ),
            st.Page(VIEWS_DIR / "experiment.py", title="Experiment", icon=":material/balance:"),
            st.Page(VIEWS_DIR / "models.py", title="Models", icon=":material/model_training:"),
            st.Page(VIEWS_DIR / "pipeline.py", title="Pipeline", icon=":material/factory:"),
        ]
    )
    with friendly_errors():
        url = display_url(database_url())
    with st.sidebar:
        st.caption(f"Database: `{url}`")
        if st.button("Refresh now", help="Numbers are cached for a few seconds."):
            clear_caches()
    auth.sidebar()
    page.run()


if __name__ == "__main__":
    main()
