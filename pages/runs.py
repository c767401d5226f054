"""Runs: finished training runs and their validation curves."""
import pandas as pd
import plotly.express as px
import streamlit as st

from mpl_core.api import list_runs

st.title("Training runs")
runs = list_runs()
if not runs:
    st.info("No runs yet. Start one: `python -m mpl_core train --preset quick-demo --out runs/demo`.")
    st.stop()
table = pd.DataFrame([{k: v for k, v in r.items() if k != "history"} for r in runs])
st.dataframe(table, hide_index=True, column_config={"test_acc": st.column_config.ProgressColumn(
    "test accuracy", min_value=0.0, max_value=1.0, format="percent")})
curves = [{"run": r["run"], "phase": h["phase"], "step": h["step"], "val_acc": h["val_acc"]}
          for r in runs for h in r["history"] if "val_acc" in h and h["phase"] == "train"]
if curves:
    fig = px.line(pd.DataFrame(curves), x="step", y="val_acc", color="run", title="Validation accuracy")
    st.plotly_chart(fig, use_container_width=True)
