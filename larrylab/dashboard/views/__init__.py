"""Dashboard pages, one Streamlit page script per file, run by `st.navigation` in `app.py`.

The folder is not called `pages/`: a folder of that name next to the entry script switches
Streamlit to its older multipage mode, in which `st.navigation` is never run.
"""
