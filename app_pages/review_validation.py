"""Not a page: the Review page's "Validation labels" tab (app_pages/review.py draws it). A random
sample of the pool to label for validation, in the review grid's labeling-queue mode, and the
estimate's 90% interval narrowing as the labels come in (mpl_core's ValidationQueue).

Its keys go to Python as the grid's `batch` trigger (no POST route): each rerun of this fragment
draws the queue again and the interval with the new labels."""
import plotly.graph_objects as go
import streamlit as st

import ui
from mpl_core import MPLStudioError
from review_grid import payload, review_grid

KEY = "validation-grid"
QUEUE_SIZE = 24


@st.fragment
def validation_tab(desk, thresholds, zoom_image, remember_zoom) -> None:
    """thresholds(): the threshold panel's thresholds now; zoom_image, remember_zoom: the page's lightbox."""
    desk.studio.touch()
    if message := st.session_state.pop("validation-flash", None):
        st.toast(ui.plain(message))
    queue = desk.studio.validation_queue(desk.name)
    view = desk.studio.review(desk.name)
    st.caption("A random sample of the pool, the same for every reviewer and every round (reviewed or not: the "
               "estimate is of every pseudo-label that passes): it stays unbiased only if these are labeled as "
               "they come, hard ones too. A keeps the "
               "model's class, a digit (or C) picks another, X marks an image that is none of the classes (it "
               "stays in the pool), U takes back your last. Each image labeled here becomes a validation image: it "
               "leaves the pool, is never trained on as a label, and counts in the estimate from the next round "
               "of pseudo-labels (Generate again).")
    show_progress(queue.preview(thresholds()))
    drawn = queue.draw(QUEUE_SIZE)
    if len(drawn) == 0:
        st.success("Every pool image of this round has a validation label.")
        return
    page = view.page(drawn, len(drawn), 1)
    # none of these has a validation label yet: drawn as undecided, whatever review decided (the history says)
    tiles = [{**t, "status": "pending", "final_label": -1, "final_name": ""}
             for t in desk.studio.review_tiles(desk.name, page.items)]
    data = payload(tiles, view.class_names, round_=int(view.rows.round), page=page, mode="queue",
                   ack=st.session_state.get(f"{KEY}-ack"), zoom=zoom_image(desk, tiles, KEY))
    review_grid(key=KEY, data=data, on_batch_change=lambda: commit(desk), on_turn_change=lambda: None,
                on_zoom_change=lambda: remember_zoom(KEY))
    st.button("Undo my last validation label", icon=":material/undo:", key="validation-undo",
              on_click=undo, args=(desk,))


def show_progress(preview: dict) -> None:
    """The interval at the page's thresholds with the labels given so far, and how it narrowed."""
    before, after = preview["before"], preview["after"]
    width = (after["high"] - after["low"]) if after["passing"] else None
    narrowed = (before["high"] - before["low"]) - width if width is not None and preview["given"] else None
    c = st.columns(3)
    c[0].metric("Labeled for validation", f"{preview['given']:,}", help="in this round's pool, so far")
    c[1].metric("90% interval with them", ui.interval(after["low"], after["high"]) if after["passing"] else "-",
                help="at the thresholds above, from the validation images that pass: the round's own and those "
                     "labeled here (with this round's pseudo-labels of them, as the next round of the same model "
                     "would have them)")
    c[2].metric("Its width", "-" if width is None else f"{width * 100:.1f} points",
                delta=None if narrowed is None else f"{-narrowed * 100:.1f} points", delta_color="inverse",
                help="against the round's validation images alone")
    st.caption(f"{after['passing']:,} validation image(s) pass these thresholds ({before['passing']:,} before the "
               "labels given here).")
    if len(preview["narrowing"]) > 2:
        given, widths = zip(*preview["narrowing"])
        fig = go.Figure(go.Scatter(x=given, y=[w * 100 for w in widths], mode="lines+markers"))
        fig.update_layout(height=220, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="validation labels given",
                          yaxis_title="points", title="Width of the 90% interval at these thresholds")
        st.plotly_chart(fig, key="validation-narrowing")


def commit(desk) -> None:
    """The grid's keys (labels and undos), as validation labels, in the order they were keyed."""
    batch = (st.session_state.get(KEY) or {}).get("batch")
    last = st.session_state.get(f"{KEY}-ack")
    if not isinstance(batch, dict) or (last and last.get("id") == batch.get("id")):
        return  # nothing new, or a batch sent again whose ack is already on its way
    try:
        ack = desk.studio.validation_queue(desk.name).apply(batch, desk.who)
    except MPLStudioError as exc:
        ack = {"id": batch.get("id"), "results": [], "message": str(exc)}
    st.session_state[f"{KEY}-ack"] = ack


def undo(desk) -> None:
    """Button callback: take back the reviewer's newest batch of validation labels."""
    try:
        n = desk.studio.validation_queue(desk.name).undo(desk.who)
        st.session_state["validation-flash"] = f"{n} validation label(s) taken back"
    except MPLStudioError as exc:
        st.session_state["validation-flash"] = str(exc)
