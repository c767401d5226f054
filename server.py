"""MPL Studio with the review grid's HTTP route: `streamlit run server.py` (what `make run` does).

app.py is the app; this launcher mounts review_grid.api's route beside it (st.App), so a decision
in the grid commits without a Streamlit rerun. `streamlit run app.py` works too, with the grid
sending its decisions through reruns.
"""
import streamlit as st

from review_grid.api import routes

app = st.App("app.py", routes=routes())
