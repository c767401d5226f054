"""MPL Studio: the Streamlit entry point (page config and navigation over pages/)."""
import streamlit as st

st.set_page_config(page_title="MPL Studio", page_icon=":material/label:", layout="wide")

pages = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/runs.py", title="Runs", icon=":material/monitoring:"),
]
st.navigation(pages).run()
