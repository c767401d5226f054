"""Export: reviewed labels as CSV, a Label Studio project or an ImageFolder zip; the model checkpoint;
and labels corrected in Label Studio brought back as decisions."""
import streamlit as st

import ui


def label_studio_options() -> str | None:
    """Where Label Studio will find the images: its local files (default) or the user's own URL."""
    where = st.radio("Images in Label Studio", ["Label Studio serves them (local files)", "I serve them at a URL"],
                     horizontal=True, key="ls-images",
                     help="Local files: start Label Studio with the two settings in the zip's README.txt and "
                          "add the images folder as Local files storage. Or serve images/ yourself.")
    if where.startswith("Label Studio"):
        return None
    return st.text_input("URL prefix of the images", placeholder="https://example.org/mpl-export/images/",
                         key="ls-prefix") or ""


def export_row(studio, name: str, fmt: str, label: str, mime: str, runs: list[dict], run_id) -> None:
    c = st.columns([3, 1, 1])
    c[0].markdown(f"**{label}**")
    if fmt == "checkpoint" and not runs:
        c[1].caption("train a model first")
        return
    prefix = label_studio_options() if fmt == "label-studio" else None
    if c[1].button("Prepare", key=f"prep-{fmt}", icon=":material/build:"):
        with ui.user_errors(), st.spinner(f"Preparing {fmt}..."):
            st.session_state[f"export-{fmt}"] = studio.export_bytes(name, fmt, run_id, image_prefix=prefix)
    prepared = st.session_state.get(f"export-{fmt}")
    if prepared:
        data, file_name = prepared
        c[2].download_button("Download", data, file_name=file_name, mime=mime, key=f"dl-{fmt}",
                             on_click="ignore", icon=":material/download:", type="primary")
        c[0].caption(f"{file_name} · {len(data) / 1024:,.0f} KB"
                     + (" · unzip it and follow its README.txt to see the images in Label Studio"
                        if fmt == "label-studio" else ""))


def import_panel(studio, name: str) -> None:
    with st.expander("Import from Label Studio", icon=":material/upload:"):
        st.caption("Labels that colleagues corrected in Label Studio (Export > JSON in its project) become "
                   "decisions here: the model's class accepts the pseudo-label, another class relabels it. "
                   "Nothing is recorded if any task names an unknown sample or class; one Undo on the Review "
                   "page takes the whole import back.")
        upload = st.file_uploader("Label Studio JSON export", type=["json"], key="ls-import")
        if upload is None:
            return
        data = upload.getvalue()
        with ui.user_errors():
            for line in studio.import_label_studio(name, data, ui.reviewer(), dry_run=True):
                st.caption(ui.plain(line))
            if st.button("Import these labels", type="primary", icon=":material/upload:", key="ls-import-go"):
                for line in studio.import_label_studio(name, data, ui.reviewer()):
                    st.success(ui.plain(line))


def main() -> None:
    st.title("Export")
    studio = ui.get_studio()
    name = ui.workspace_or_stop()
    runs = [r for r in studio.runs(name) if r["checkpoint"]]
    run_id = ui.pick_run("Checkpoint of run", runs) if runs else None
    for fmt, (label, mime) in studio.export_formats().items():
        export_row(studio, name, fmt, label, mime, runs, run_id)
    import_panel(studio, name)


main()
