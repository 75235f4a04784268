"""The Streamlit dashboard: experiments, models and pipeline runs, read through the lower packages.

`larrylab dashboard` runs `app.py` (see `launch.run_dashboard`); each page is one file in
`views/`.
"""
