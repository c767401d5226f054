"""Review: thresholds with live counts and estimated precision, a histogram to select from, a grid
of pseudo-labels to accept / reject / relabel, bulk actions, undo, and a labeling queue."""
import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import ui
from mpl_core.errors import MPLStudioError
from mpl_core.pseudo_labels import reliability_table
from mpl_core.studio import SORTS

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
        run = c[0].selectbox("From run", [r["id"] for r in reversed(runs)], format_func=lambda i: next(
            f"run {r['id']} · {r['kind']} · {r['config']['algorithm']['name']} · test {ui.pct(r['metrics'].get('test_acc'))}"
            for r in runs if r["id"] == i))
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
job_panel()
if view is None:
    st.stop()

for key, show in (("review_error", st.error), ("review_flash", st.toast)):
    if st.session_state.get(key):
        show(st.session_state.pop(key))

names = view.class_names
K = len(names)
counts = view.counts()
st.caption(f"Round {view.rows.round}: {len(view.rows):,} pseudo-labels from the {view.rows.model} of run {view.rows.run_id}")
c = st.columns(5)
for col, key in zip(c, ("pending", "accept", "reject", "relabel", "manual")):
    col.metric(key.capitalize() if key != "manual" else "Labeled by hand", f"{counts[key]:,}")

# --- thresholds ------------------------------------------------------------------------------------
left, right = st.columns([1, 2])
with left:
    global_t = st.slider("Threshold", 0.0, 1.0, 0.9, 0.01, key="threshold",
                         help="pseudo-labels at or above this confidence pass")
    per_class = st.toggle("Per-class thresholds", key="per_class")
    thresholds = [global_t] * K
    if per_class:
        for k in range(K):
            thresholds[k] = st.slider(names[k], 0.0, 1.0, global_t, 0.01, key=f"t-{k}")
    stats = view.index.stats(thresholds)
    m = st.columns(2)
    m[0].metric("Pass", f"{stats.passed:,}", help="pseudo-labels at or above their class threshold")
    m[1].metric("Coverage", ui.pct(stats.coverage), help="share of the pool that passes")
    m = st.columns(2)
    m[0].metric("Estimated precision", ui.pct(stats.est_precision),
                help=f"calibrated on the validation split; {stats.val_support} validation images pass too")
    if stats.true_precision is not None:
        m[1].metric("True precision", ui.pct(stats.true_precision), help="from the dataset's hidden labels")
    st.caption(f"{stats.val_support} validation image(s) behind the estimate")

with right:
    hist = view.histogram(BINS)
    centers = (np.arange(BINS) + 0.5) / BINS
    df = pd.DataFrame([{"confidence": centers[b], "count": int(hist[k, b]), "class": names[k]}
                       for k in range(K) for b in range(BINS) if hist[k, b]])
    fig = px.bar(df, x="confidence", y="count", color="class", height=330,
                 title="Confidence per predicted class (drag a box to filter the grid)")
    fig.update_traces(width=1 / BINS * 0.95)
    fig.add_vline(x=global_t, line_dash="dash", line_color="black")
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), bargap=0, xaxis_range=[0, 1], dragmode="select")
    event = st.plotly_chart(fig, key="histogram", on_select="rerun", selection_mode="box")
    xs = [p["x"] for p in (event.selection.points if event and event.selection else [])]
    conf_range = (max(0.0, min(xs) - 0.5 / BINS), min(1.0, max(xs) + 0.5 / BINS)) if xs else None

per_class_table = pd.DataFrame([{"class": names[r["class"]], "threshold": thresholds[r["class"]],
                                 "predicted": r["predicted"], "pass": r["passed"], "coverage": r["coverage"],
                                 "est. precision": r["est_precision"], "true precision": r["true_precision"]}
                                for r in stats.per_class])
with st.expander("Per class"):
    st.dataframe(per_class_table, hide_index=True, column_config={
        "coverage": st.column_config.NumberColumn(format="percent"),
        "est. precision": st.column_config.NumberColumn(format="percent"),
        "true precision": st.column_config.NumberColumn(format="percent")})

# --- bulk actions ----------------------------------------------------------------------------------
who = ui.reviewer()
pending_pass = int(((view.status == "pending") & (view.rows.confidence >= np.asarray(thresholds)[view.rows.label])).sum())
pending_fail = int((view.status == "pending").sum()) - pending_pass
b = st.columns(3)
b[0].button(f"Accept all {pending_pass:,} pending at or above the threshold", icon=":material/done_all:",
            on_click=act, args=(studio.decide_by_threshold, name, "accept", thresholds, who), key="bulk-accept",
            disabled=pending_pass == 0)
b[1].button(f"Reject all {pending_fail:,} pending below it", icon=":material/remove_done:",
            on_click=act, args=(studio.decide_by_threshold, name, "reject", thresholds, who), key="bulk-reject",
            disabled=pending_fail == 0)
b[2].button("Undo last", icon=":material/undo:", on_click=act, args=(studio.undo, name), key="undo")

# --- grid, queue, calibration ----------------------------------------------------------------------
grid_tab, queue_tab, cal_tab = st.tabs(["Pseudo-labels", "Labeling queue", "Calibration"])

with grid_tab:
    f = st.columns([2, 2, 2, 1, 1])
    classes = f[0].multiselect("Predicted class", range(K), format_func=lambda k: names[k], key="f-class")
    statuses = f[1].multiselect("Status", ["pending", "accept", "reject", "relabel", "manual"],
                                default=["pending"], key="f-status")
    sort = f[2].selectbox("Order", SORTS, key="f-sort")
    size = f[3].selectbox("Per page", [24, 48, 100], key="f-size")
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
    tiles = view.tiles(shown)
    images = studio.thumbnails(name, [t["pool_index"] for t in tiles], scale=3)
    per_row = 8
    for start in range(0, len(tiles), per_row):
        cols = st.columns(per_row)
        for col, tile, img in zip(cols, tiles[start: start + per_row], images[start: start + per_row]):
            with col.container(border=True, key=f"tile-{tile['position']}"):
                st.image(img, width="stretch")
                status = tile["status"] if tile["status"] == "pending" else f"{tile['status']} → {tile['final_name']}" \
                    if tile["final_name"] else tile["status"]
                st.text(f"{tile['label_name']} · {tile['confidence']:.2f}\n{status}")
                a, r = st.columns(2)
                a.button("✓", key=f"a-{tile['position']}", help="accept", on_click=act,
                         args=(studio.decide, name, [tile["position"]], "accept", who))
                r.button("✗", key=f"r-{tile['position']}", help="reject", on_click=act,
                         args=(studio.decide, name, [tile["position"]], "reject", who))
                st.selectbox("Relabel", range(K), index=None, format_func=lambda k: names[k], placeholder="relabel…",
                             key=f"rl-{tile['position']}", label_visibility="collapsed",
                             on_change=lambda pos=tile["position"]: act(
                                 studio.decide, name, [pos], "relabel", who, st.session_state[f"rl-{pos}"]))

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
    fig = px.line(sweep.melt(id_vars="threshold", value_vars=cols), x="threshold", y="value", color="variable",
                  title="Precision and coverage by threshold", height=330)
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), legend_title_text="")
    c[1].plotly_chart(fig, key="sweep")
