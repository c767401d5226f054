"""Data: create a workspace from the built-in, a torchvision or your own dataset; preview it."""
import pandas as pd
import streamlit as st

import ui
from mpl_core import DEMO_VAL_PER_CLASS, MIN_TRAIN_PER_CLASS, DataConfig, MPLStudioError

st.title("Data")
studio = ui.get_studio()
SOURCES = {"Fashion-MNIST (built in, offline)": "fashion-mnist", "MNIST (download)": "mnist",
           "CIFAR-10 (download)": "cifar10", "SVHN (download)": "svhn",
           "My images: a folder under the data folder": "folder", "My images: upload a zip": "zip"}

with st.expander("New workspace", expanded=not st.session_state.get("workspace"), icon=":material/add:"):
    with st.form("new-workspace"):
        name = st.text_input("Workspace name", value="my-project", max_chars=64,
                             help="letters, digits, '-', '_' or '.'")
        source = st.radio("Data", list(SOURCES), horizontal=False)
        folder = st.text_input("Folder (for 'a folder under the data folder')", placeholder="my-images",
                               help=f"relative to {studio.data_root}: labeled/<class>/*.png, unlabeled/*.png, "
                                    "optional test/<class>/")
        upload = st.file_uploader("Zip (for 'upload a zip')", type=["zip"])
        c = st.columns(4)
        labels = c[0].number_input("Labels per class", 1, 5000, 10, help="built-in datasets: labels kept")
        val = c[1].number_input("Validation per class", 0, 5000, 50,
                                help="labels held out to estimate the precision of pseudo-labels. Your own images: "
                                     f"up to this many of a class's labels beyond the {MIN_TRAIN_PER_CLASS} it keeps "
                                     "to train on; more come from the Review page's validation queue. On Fashion-MNIST "
                                     "the estimate came within 2 points of the truth, where 200 or more validation "
                                     "images pass, for about 80% of thresholds at 50 a class, 92% at "
                                     f"100 and 99% at 200 (the Home page's demo workspace holds out "
                                     f"{DEMO_VAL_PER_CLASS})")
        pool = c[2].number_input("Max unlabeled (0 = all)", 0, 10_000_000, 0)
        seed = c[3].number_input("Seed", 0, 2**31 - 1, 0)
        size = st.number_input("Training size in pixels for my images (0 = automatic)", 0, 512, 0, step=8,
                               help="the size the models train on; the review always shows the images themselves. "
                                    "Automatic: 28 or 32 px for small images, else 64 px on a CPU and 128 px on "
                                    "a GPU, never above the images' own size")
        submitted = st.form_submit_button("Create workspace", type="primary")
    if submitted:
        with ui.user_errors():
            kind = SOURCES[source]
            dataset = kind
            if kind == "folder":
                dataset = folder.strip()
                if not dataset:
                    raise MPLStudioError("type the folder's path under the data folder")
            elif kind == "zip":
                if upload is None:
                    raise MPLStudioError("choose a zip file to upload")
                dataset = studio.save_upload(name, upload.getvalue())
            bar = st.progress(0.0, text="Reading the data...")
            studio.create(name, DataConfig(dataset=dataset, labels_per_class=int(labels), val_per_class=int(val),
                                           max_unlabeled=int(pool), seed=int(seed), image_size=int(size)),
                          on_progress=ui.import_progress(bar))
            ui.open_workspace(name)
            st.rerun()



def training_size_form(name: str, summary: dict) -> None:
    with st.expander("Training size"):
        with st.form("training-size"):
            chosen = st.number_input("Train at (pixels; 0 = automatic)", 0, 512, int(summary["data"]["image_size"]),
                                     step=8, help="larger sees more detail and trains slower; runs trained at "
                                                  "another size keep their pseudo-labels and decisions")
            if st.form_submit_button("Import again at this size"):
                with ui.user_errors():
                    bar = st.progress(0.0, text="Importing again...")
                    studio.set_image_size(name, int(chosen), on_progress=ui.import_progress(bar))
                    st.rerun()


def split_per_class(summary: dict) -> None:
    """The split in use, train / validation per class, and in words what its validation can say."""
    rows = summary["per_class"]
    shown = " · ".join(f"{ui.plain(r['class'])} {r['train']:,} / {r['validation']:,}" for r in rows[:12])
    rule = (f" A folder holds out up to {summary['data']['val_per_class']} of a class's labels (Validation per "
            f"class) where the class keeps {MIN_TRAIN_PER_CLASS} to train on; the Review page's validation "
            "queue adds pool images." if summary["own_images"] and not summary["data"]["val_fraction"] else "")
    more = f" · and {len(rows) - 12} more classes" if len(rows) > 12 else ""
    st.caption(f"Per class, train / validation: {shown}{more}.{rule}")
    if summary["validation"].message:
        st.warning(summary["validation"].message, icon=":material/straighten:")


name = ui.workspace_or_stop()
with ui.user_errors():
    summary = studio.summary(name)
    st.subheader(f"{name}: {summary['dataset']}")
    sizes = summary["sizes"]
    c = st.columns(5)
    c[0].metric("Classes", len(summary["classes"]))
    c[1].metric("Labeled", f"{sizes['labeled']:,}")
    c[2].metric("Validation", f"{sizes['val']:,}")
    c[3].metric("Unlabeled", f"{sizes['unlabeled']:,}")
    c[4].metric("Test", f"{summary['test']:,}", help="only ever measured on")
    split_per_class(summary)
    kind = "grayscale" if summary["channels"] == 1 else "colour"
    if summary["own_images"]:
        st.caption(f"Trained on at {summary['image_size']}×{summary['image_size']} px, {kind}; reviewed at their "
                   f"own size ({summary['native']}). Split seed {summary['data']['seed']}.")
        training_size_form(name, summary)
    else:
        st.caption(f"Images are {summary['image_size']}×{summary['image_size']}, {kind}. "
                   f"Split seed {summary['data']['seed']}.")
    start = studio.default_start(name)  # what the Train page's defaults start from, and whether it is at hand
    if start.note:
        st.info(ui.plain(start.note), icon=":material/cloud_off:")
    else:
        st.caption("With the Train page's defaults, " + "; ".join(ui.plain(s.message) for s in start.statuses) + ".")

    st.subheader("Labeled examples per class")
    preview = studio.preview(name, per_class=8)
    for cls, indices in preview.items():
        st.text(f"{cls} · {len(indices)} shown")  # plain text: class names may contain markdown or HTML
        st.image(studio.thumbnails(name, indices, scale=2), width=112 if summary["own_images"] else 56)

    if summary["report"]:
        st.subheader("Import report")
        if summary["skipped"]:
            st.warning(f"{len(summary['skipped'])} file(s) were skipped; the reasons are listed below.")
        st.code("\n".join(summary["report"]), language=None)  # up to 50 skipped files, then a count
        if len(summary["skipped"]) > 50:
            table = pd.DataFrame(summary["skipped"], columns=["file", "reason"])
            st.download_button("Download the full list of skipped files (CSV)", table.to_csv(index=False),
                               file_name=f"{name}-skipped.csv", mime="text/csv")
