"""Home: what MPL Studio does and the data it will use."""
import streamlit as st

from mpl_core.api import builtin_dataset_status

st.title("MPL Studio")
st.markdown(
    "Label a few images, let **Meta Pseudo Labels** train a teacher and a student on the rest, "
    "then review the teacher's pseudo-labels and retrain on what you approved."
)
status = builtin_dataset_status()
if status["found"]:
    st.success(f"Built-in dataset Fashion-MNIST found in `{status['where']}`.")
else:
    st.warning("Fashion-MNIST is not installed yet: `apt-get install dataset-fashion-mnist`, "
               "or it will be downloaded on first use.")
st.page_link("pages/runs.py", label="See training runs", icon=":material/monitoring:")
st.markdown("Train from the command line for now: `python -m mpl_core train --preset quick-demo --out runs/demo`.")
