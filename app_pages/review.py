"""Review: thresholds with live counts and estimated precision, a histogram to select from, a grid
of pseudo-labels to accept / reject / relabel, bulk actions, undo, and a labeling queue."""
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
from mpl_core import SORTS, MPLStudioError, reliability_table

st.title("Review")
studio = ui.get_studio()
name = ui.workspace_or_stop()
BINS = 20


def act(fn, *args, **kwargs) -> None:
    """Button callback: run a decision; keep a user error for the page to show."""
    try:
        n = fn(*args, **kwargs)
        st.session_state["review_flash"] = f"{n} decision(s) saved" if isinstance(n, int) else None
    except MPLStudioError as exc:
        st.session_state["review_error"] = str(exc)


def generate_panel(expanded: bool) -> None:
    runs = [r for r in studio.runs(name) if r["checkpoint"]]
    with st.expander("Generate pseudo-labels", expanded=expanded, icon=":material/auto_awesome:"):
        if not runs:
            st.info("Train a model first (Train page).")
            return
        c = st.columns([2, 1, 1])
        run = ui.pick_run("From run", runs, container=c[0])
        model = c[1].selectbox("Model", ["auto", "teacher", "student"], help="auto = the teacher for MPL runs")
        if c[2].button("Generate", type="primary", icon=":material/auto_awesome:"):
            with ui.user_errors():
                studio.start(name, "pseudo_label", run_id=int(run), model=model)


@st.fragment(run_every=ui.POLL_S)
def job_panel() -> None:
    job = studio.job(name)
    if job is not None and job.kind == "pseudo_label" and job.status().active:
        ui.job_status_block(name, controls=False)
    elif job is not None and job.kind == "pseudo_label" and st.session_state.get("seen_round") != studio.open(name).store.latest_round():
        st.session_state["seen_round"] = studio.open(name).store.latest_round()
        st.rerun()  # a new round arrived: redraw the whole page


view = studio.review(name)
generate_panel(expanded=view is None)
_job = studio.job(name)
if _job is not None and _job.kind == "pseudo_label" and (_job.status().active or st.session_state.get("seen_round")
                                                         != studio.open(name).store.latest_round()):
    job_panel()  # polls only while pseudo-labels are being made: eight idle reviewers cost nothing
if view is None:
    st.stop()

for key, show in (("review_error", st.error), ("review_flash", st.toast)):
    if st.session_state.get(key):
        show(st.session_state.pop(key))
names = view.class_names
K = len(names)
who = ui.reviewer()
st.caption(f"Round {view.rows.round}: {len(view.rows):,} pseudo-labels from the {view.rows.model} of run {view.rows.run_id}")


# Moving the threshold reruns only this fragment: statistics, histogram and bulk counts.
@st.fragment
def threshold_panel() -> None:
    view = studio.review(name)
    left, right = st.columns([1, 2])
    with left:
        global_t = st.slider("Threshold", 0.0, 1.0, 0.9, 0.01, key="threshold",
                             help="pseudo-labels at or above this confidence pass")
        thresholds = [global_t] * K
        if st.toggle("Per-class thresholds", key="per_class"):
            for k in range(K):
                thresholds[k] = st.slider(ui.plain(names[k]), 0.0, 1.0, global_t, 0.01, key=f"t-{k}")
        stats = view.index.stats(thresholds)
        m = st.columns(2)
        m[0].metric("Pass", f"{stats.passed:,}", help="pseudo-labels at or above their class threshold")
        m[1].metric("Coverage", ui.pct(stats.coverage), help="share of the pool that passes")
        m = st.columns(2)
        m[0].metric("Estimated precision", ui.pct(stats.est_precision),
                    help="calibrated on the validation split")
        if stats.true_precision is not None:
            m[1].metric("True precision", ui.pct(stats.true_precision), help="from the dataset's hidden labels")
        st.caption(f"{stats.val_support} validation image(s) behind the estimate")
    with right:
        select_range(histogram_figure(view, global_t))
    with st.expander("Per class"):
        st.dataframe(pd.DataFrame([{"class": names[r["class"]], "threshold": thresholds[r["class"]],
                                    "predicted": r["predicted"], "pass": r["passed"], "coverage": r["coverage"],
                                    "est. precision": r["est_precision"], "true precision": r["true_precision"]}
                                   for r in stats.per_class]), hide_index=True, column_config={
            "coverage": st.column_config.NumberColumn(format="percent"),
            "est. precision": st.column_config.NumberColumn(format="percent"),
            "true precision": st.column_config.NumberColumn(format="percent")})
    # No counts on these labels: decisions in the grid (a separate fragment) would leave them stale.
    b = st.columns(2)
    if b[0].button("Accept all pending at or above the threshold", icon=":material/done_all:", key="bulk-accept"):
        act(studio.decide_by_threshold, name, "accept", thresholds, who)
        st.rerun()  # the grid and the counts change too
    if b[1].button("Reject all pending below it", icon=":material/remove_done:", key="bulk-reject"):
        act(studio.decide_by_threshold, name, "reject", thresholds, who)
        st.rerun()


def histogram_figure(view, threshold: float) -> go.Figure:
    hist = view.histogram(BINS)
    centers = (np.arange(BINS) + 0.5) / BINS
    fig = go.Figure([go.Bar(x=centers, y=hist[k], name=ui.chart_text(names[k]), width=0.95 / BINS) for k in range(K)])
    fig.update_layout(shapes=[dict(type="line", x0=threshold, x1=threshold, y0=0, y1=1, yref="paper",
                                   line=dict(dash="dash", color="black"))],  # add_vline costs 3x the figure
                      barmode="stack", height=330, margin=dict(l=10, r=10, t=40, b=10), xaxis_range=[0, 1],
                      dragmode="select", xaxis_title="confidence", yaxis_title="count",
                      title="Confidence per predicted class (drag a box to filter the grid)")
    return fig


def select_range(fig: go.Figure) -> None:
    """A box drawn on the histogram sets the grid's confidence range (a full rerun: the grid changes)."""
    event = st.plotly_chart(fig, key="histogram", on_select="rerun", selection_mode="box")
    xs = [p["x"] for p in (event.selection.points if event and event.selection else [])]
    new = (max(0.0, min(xs) - 0.5 / BINS), min(1.0, max(xs) + 0.5 / BINS)) if xs else None
    if new != st.session_state.get("conf_range"):
        st.session_state["conf_range"] = new
        st.rerun()


# Decisions and page turns rerun only this fragment: the counts, filters and tiles.
@st.fragment
def grid() -> None:
    view = studio.review(name)
    for key, show in (("review_error", st.error), ("review_flash", st.toast)):
        if st.session_state.get(key):
            show(st.session_state.pop(key))
    counts = view.counts()
    c = st.columns(6)
    for col, key in zip(c, ("pending", "accept", "reject", "relabel", "manual")):
        col.metric(key.capitalize() if key != "manual" else "Labeled by hand", f"{counts[key]:,}")
    c[5].button("Undo last", icon=":material/undo:", on_click=act, args=(studio.undo, name), key="undo")
    f = st.columns([2, 2, 2, 1, 1])
    classes = f[0].multiselect("Predicted class", range(K), format_func=lambda k: names[k], key="f-class")
    statuses = f[1].multiselect("Status", ["pending", "accept", "reject", "relabel", "manual"],
                                default=["pending"], key="f-status")
    sort = f[2].selectbox("Order", SORTS, key="f-sort")
    size = f[3].selectbox("Per page", [24, 48, 100], key="f-size")
    conf_range = st.session_state.get("conf_range")
    positions = view.select(classes=classes or None, statuses=statuses or None, conf_range=conf_range, sort=sort)
    pages = max(1, -(-len(positions) // size))
    page = f[4].number_input("Page", 1, pages, 1, key="f-page")
    shown = positions[(page - 1) * size: page * size]
    st.caption(f"{len(positions):,} match" + (f" · confidence {conf_range[0]:.2f}–{conf_range[1]:.2f} "
                                               "(from the histogram selection)" if conf_range else "")
               + f" · page {page} of {pages}")
    p = st.columns(2)
    p[0].button("Accept this page", on_click=act, args=(studio.decide, name, shown, "accept", who),
                disabled=len(shown) == 0, key="page-accept", icon=":material/done_all:")
    p[1].button("Reject this page", on_click=act, args=(studio.decide, name, shown, "reject", who),
                disabled=len(shown) == 0, key="page-reject", icon=":material/remove_done:")
    tiles(view, shown)


MARKS = {"✓": "accept", "✗": "reject", "✎": "relabel"}  # ✎ selects the tile for the relabel bar


def on_mark(pos: int, key: str, shown_status: str) -> None:
    """A tile's ✓/✗ applies only if the tile is still as the reviewer saw it: another reviewer's
    decision in the meantime wins, and a change event the browser sends twice is recorded once."""
    mark = st.session_state.get(key)
    chosen = st.session_state.setdefault("relabel_selection", set())
    chosen.discard(pos)
    if mark == "✎":
        chosen.add(pos)
    elif mark in ("✓", "✗"):
        try:
            if (studio.decide(name, [pos], MARKS[mark], who, expect=shown_status) == 0
                    and studio.review(name).status[pos] != MARKS[mark]):  # a replayed click needs no word
                st.session_state["review_flash"] = "Another reviewer decided that tile first; the grid shows their decision"
        except MPLStudioError as exc:
            st.session_state["review_error"] = str(exc)


def relabel_bar(view) -> None:
    chosen = sorted(st.session_state.get("relabel_selection", set()))
    if not chosen:
        return
    c = st.columns([2, 2, 1, 1])
    c[0].markdown(f"**{len(chosen)}** tile(s) marked ✎")
    c[1].selectbox("Relabel as", range(K), format_func=lambda k: names[k], key="relabel-target",
                            label_visibility="collapsed")
    c[2].button("Relabel", type="primary", key="relabel-apply", icon=":material/edit:",
                on_click=lambda: (act(studio.decide, name, chosen, "relabel", who, st.session_state["relabel-target"]),
                                  st.session_state.update(relabel_selection=set())))
    c[3].button("Clear", key="relabel-clear", on_click=lambda: st.session_state.update(relabel_selection=set()))


def tiles(view, shown) -> None:
    """Two elements per tile (image with caption, one ✓/✗/✎ control): a 100-tile page stays light."""
    relabel_bar(view)
    items = view.tiles(shown)
    uris = studio.thumbnail_uris(name, [t["pool_index"] for t in items], scale=3)
    chosen = st.session_state.get("relabel_selection", set())
    per_row = 6  # fits the ✓/✗/✎ control under each thumbnail at 1280 px
    for start in range(0, len(items), per_row):
        cols = st.columns(per_row)
        for col, tile, uri in zip(cols, items[start: start + per_row], uris[start: start + per_row]):
            pos, status = tile["position"], tile["status"]
            after = f" → {tile['final_name']}" if status in ("relabel", "manual") else ""
            note = "" if status == "pending" else f" · {status}{after}"
            col.image(uri, caption=f"{ui.plain(tile['label_name'])} {tile['confidence']:.2f}{note}", width="stretch")
            key = f"d-{pos}-{status}"  # a new widget when the status changes elsewhere (bulk, undo)
            current = "✎" if pos in chosen else {"accept": "✓", "reject": "✗"}.get(status)
            col.segmented_control("Decision", list(MARKS), default=current, key=key, label_visibility="collapsed",
                                  on_change=on_mark, args=(pos, key, status))


threshold_panel()
grid_tab, queue_tab, cal_tab = st.tabs(["Pseudo-labels", "Labeling queue", "Calibration"])
with grid_tab:
    grid()

with queue_tab:
    queue = view.queue(12)
    st.caption("The most uncertain pending samples (smallest gap between the top two classes). "
               "Labeling these by hand teaches the next round the most.")
    if len(queue) == 0:
        st.success("Nothing pending.")
    else:
        with st.form("queue"):
            q_tiles = view.tiles(queue)
            q_images = studio.thumbnails(name, [t["pool_index"] for t in q_tiles], scale=3)
            cols = st.columns(6)
            for i, (tile, img) in enumerate(zip(q_tiles, q_images)):
                with cols[i % 6]:
                    st.image(img, width="stretch")
                    st.selectbox("Label", range(K), index=tile["label"], format_func=lambda k: names[k],
                                 key=f"q-{tile['position']}")
            if st.form_submit_button("Save these labels", type="primary"):
                with ui.user_errors():
                    for tile in q_tiles:
                        studio.label_by_hand(name, [tile["position"]], st.session_state[f"q-{tile['position']}"], who)
                    st.rerun()

with cal_tab:
    rel = pd.DataFrame(reliability_table(view.rows.validation, bins=10)).dropna()
    sweep = pd.DataFrame(view.index.sweep(np.linspace(0.0, 0.99, 34)))
    c = st.columns(2)
    fig = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line=dict(dash="dot")),
                     go.Scatter(x=rel["confidence"], y=rel["accuracy"], mode="lines+markers", name="validation",
                                text=rel["count"], hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>n=%{text}")])
    fig.update_layout(title="Reliability on the validation split", xaxis_title="confidence",
                      yaxis_title="accuracy", height=330, margin=dict(l=10, r=10, t=40, b=10))
    c[0].plotly_chart(fig, key="reliability")
    cols = [k for k in ("est_precision", "true_precision", "coverage") if sweep[k].notna().any()]
    fig = go.Figure([go.Scatter(x=sweep["threshold"], y=sweep[c], mode="lines", name=c) for c in cols])
    fig.update_layout(title="Precision and coverage by threshold", height=330, xaxis_title="threshold",
                      margin=dict(l=10, r=10, t=40, b=10))
    c[1].plotly_chart(fig, key="sweep")
