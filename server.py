"""MPL Studio with the review grid's HTTP route: `streamlit run server.py` (what `make run` does).

app.py is the app; this launcher mounts review_grid.api's route beside it (st.App), so a decision
in the grid commits without a Streamlit rerun. `streamlit run app.py` works too, with the grid
sending its decisions through reruns.
"""
from mpl_core import one_thread_outside_jobs

one_thread_outside_jobs()  # as app.py does, before anything here loads torch (see mpl_core/service/threads.py)

import streamlit as st  # noqa: E402

from review_grid.api import routes  # noqa: E402

app = st.App("app.py", routes=routes())
