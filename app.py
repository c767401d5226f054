"""MPL Studio: the Streamlit entry point (page config, sidebar, navigation over pages/)."""
import streamlit as st

import ui

st.set_page_config(page_title="MPL Studio", page_icon=":material/label:", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/dataset:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/review.py", title="Review", icon=":material/fact_check:"),
    st.Page("pages/rounds.py", title="Rounds", icon=":material/leaderboard:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
]
navigation = st.navigation(pages)
ui.sidebar()
navigation.run()
