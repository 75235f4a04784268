"""The Streamlit dashboard: experiments, models and pipeline runs, read through larrylab.platform.

`larrylab dashboard` runs `app.py` (see `launch.run_dashboard`); each page is one file in
`views/`.
"""
