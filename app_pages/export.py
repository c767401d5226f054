"""Export: reviewed labels as CSV, Label Studio JSON or an ImageFolder zip; the model checkpoint."""
import streamlit as st

import ui

st.title("Export")
studio = ui.get_studio()
name = ui.workspace_or_stop()
runs = [r for r in studio.runs(name) if r["checkpoint"]]
run_id = None
if runs:
    run_id = ui.pick_run("Checkpoint of run", runs)
for fmt, (label, mime) in studio.export_formats().items():
    c = st.columns([3, 1, 1])
    c[0].markdown(f"**{label}**")
    if fmt == "checkpoint" and not runs:
        c[1].caption("train a model first")
        continue
    if c[1].button("Prepare", key=f"prep-{fmt}", icon=":material/build:"):
        with ui.user_errors(), st.spinner(f"Preparing {fmt}..."):
            st.session_state[f"export-{fmt}"] = studio.export_bytes(name, fmt, run_id)
    prepared = st.session_state.get(f"export-{fmt}")
    if prepared:
        data, file_name = prepared
        c[2].download_button("Download", data, file_name=file_name, mime=mime, key=f"dl-{fmt}",
                             on_click="ignore", icon=":material/download:", type="primary")
        c[0].caption(f"{file_name} · {len(data) / 1024:,.0f} KB")
