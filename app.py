"""MPL Studio: the Streamlit entry point (page config, sidebar, navigation over app_pages/)."""
from mpl_core import one_thread_outside_jobs

one_thread_outside_jobs()  # before anything loads torch: jobs set their own threads (see its module)

import streamlit as st  # noqa: E402

import ui  # noqa: E402

st.set_page_config(page_title="MPL Studio", page_icon=":material/label:", layout="wide")

pages = [
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("app_pages/data.py", title="Data", icon=":material/dataset:"),
    st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("app_pages/review.py", title="Review", icon=":material/fact_check:"),
    st.Page("app_pages/rounds.py", title="Rounds", icon=":material/leaderboard:"),
    st.Page("app_pages/export.py", title="Export", icon=":material/download:"),
]
navigation = st.navigation(pages)
ui.sidebar()
navigation.run()
