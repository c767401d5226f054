"""Review: thresholds with live counts and estimated precision, a histogram to select from, a grid
of pseudo-labels to accept / reject / relabel, bulk actions, undo, a labeling queue, and a validation
queue (app_pages/review_validation.py) that says how far the estimate can be trusted and narrows it.

Widgets and calls only: what the page shows comes from the Studio's review view (counts, pages,
tiles, calibration tables). Every function takes the workspace it works on as an argument."""
from dataclasses import dataclass

import plotly.graph_objects as go
import streamlit as st

import ui
from app_pages.review_validation import validation_tab
from mpl_core import SORTS, STATUSES, MPLStudioError, Studio
from review_grid import payload, review_grid
from review_grid.api import grid_api

BINS = 20  # histogram bins over [0, 1]


@dataclass(frozen=True)
class Desk:
    """The workspace under review and who is reviewing it."""
    studio: Studio
    name: str
    who: str


def act(fn, *args, **kwargs) -> None:
    """Button callback: run a decision; keep a user error for the page to show."""
    try:
        n = fn(*args, **kwargs)
        st.session_state["review_flash"] = f"{n} decision(s) saved" if isinstance(n, int) else None
    except MPLStudioError as exc:
        st.session_state["review_error"] = str(exc)


def show_messages() -> None:
    for key, show in (("review_error", st.error), ("review_flash", st.toast)):
        if st.session_state.get(key):
            show(ui.plain(st.session_state.pop(key)))


def generate_panel(desk: Desk, expanded: bool) -> None:
    runs = [r for r in desk.studio.runs(desk.name) if r["checkpoint"]]
    with st.expander("Generate pseudo-labels", expanded=expanded, icon=":material/auto_awesome:"):
        if not runs:
            st.info("Train a model first (Train page).")
            return
        c = st.columns([2, 1, 1])
        run = ui.pick_run("From run", runs, container=c[0])
        model = c[1].selectbox("Model", ["auto", "teacher", "student"], help="auto = the teacher for MPL runs")
        if c[2].button("Generate", type="primary", icon=":material/auto_awesome:"):
            with ui.user_errors():
                desk.studio.start(desk.name, "pseudo_label", run_id=int(run), model=model)


def labeling_job_to_watch(desk: Desk) -> bool:
    """Whether a pseudo-labeling job runs, or finished with a round this session has not drawn yet."""
    job = desk.studio.job(desk.name)
    if job is None or job.kind != "pseudo_label":
        return False
    return job.status().active or st.session_state.get("seen_round") != desk.studio.latest_round(desk.name)


@st.fragment(run_every=ui.POLL_S)
def job_panel(desk: Desk) -> None:
    """Polls only while pseudo-labels are being made: eight idle reviewers cost nothing."""
    job = desk.studio.job(desk.name)
    if job is not None and job.kind == "pseudo_label" and job.status().active:
        ui.job_status_block(desk.name, controls=False)
    elif labeling_job_to_watch(desk):
        st.session_state["seen_round"] = desk.studio.latest_round(desk.name)
        st.rerun()  # a new round arrived: redraw the whole page


# Moving the threshold reruns only this fragment: statistics, histogram and bulk counts.
@st.fragment
def threshold_panel(desk: Desk) -> None:
    desk.studio.touch()  # a person moved something: see Studio.job_threads
    view = desk.studio.review(desk.name)
    names = view.class_names
    left, right = st.columns([1, 2])
    with left:
        aim_row(desk)
        # defaults through the state, not value=: "Set" writes these keys too (aim_thresholds)
        st.session_state.setdefault("threshold", 0.9)
        global_t = st.slider("Threshold", 0.0, 1.0, step=0.01, key="threshold",
                             help="pseudo-labels at or above this confidence pass")
        thresholds = [global_t] * len(names)
        if st.toggle("Per-class thresholds", key="per_class"):
            for k, class_name in enumerate(names):
                st.session_state.setdefault(f"t-{k}", global_t)
                thresholds[k] = st.slider(ui.plain(class_name), 0.0, 1.0, step=0.01, key=f"t-{k}")
        stats = view.index.stats(thresholds)
        aim_note(desk, view, thresholds)
        threshold_metrics(stats)
        if (outlook := desk.studio.validation_queue(desk.name).outlook(stats)).message:
            st.warning(outlook.message, icon=":material/straighten:")  # thin validation: what it means, what to do
    with right:
        select_range(histogram_figure(view, global_t))
    with st.expander("Per class"):
        per_class_table(stats, names, thresholds)
    # No counts on these labels: decisions in the grid (a separate fragment) would leave them stale.
    b = st.columns(2)
    if b[0].button("Accept all pending at or above the threshold", icon=":material/done_all:", key="bulk-accept"):
        act(desk.studio.decide_by_threshold, desk.name, "accept", thresholds, desk.who)
        st.rerun()  # the grid and the counts change too
    if b[1].button("Reject all pending below it", icon=":material/remove_done:", key="bulk-reject"):
        act(desk.studio.decide_by_threshold, desk.name, "reject", thresholds, desk.who)
        st.rerun()


def aim_row(desk: Desk) -> None:
    """Set the sliders from a precision to aim for, instead of hunting for it by hand."""
    c = st.columns([3, 2], vertical_alignment="bottom")
    c[0].number_input("Aim for precision", 0.50, 0.99, 0.90, 0.01, format="%.2f", key="aim",
                      help="the estimated precision to set the thresholds for")
    c[1].button("Set", key="aim-set", icon=":material/tune:", on_click=aim_thresholds, args=(desk,),
                width="stretch", help="sets the lowest threshold whose estimated precision reaches the aim, as "
                                      "the demo does (on the sliders' 0.01 steps); with per-class thresholds on, "
                                      "each class's own")


def aim_note(desk: Desk, view, thresholds: list[float]) -> None:
    """What the last "Set" found, while the sliders still say so for this round."""
    found, note = st.session_state.get("aim_result", (None, ""))
    if found == (desk.name, view.rows.round, thresholds):
        st.caption(note)


def aim_thresholds(desk: Desk) -> None:
    """Button callback (before the sliders are drawn again, so it may set their values)."""
    view, target = desk.studio.review(desk.name), float(st.session_state["aim"])
    if view is None:  # the round went away since the page was drawn
        return
    aim = view.aim(target, bool(st.session_state.get("per_class")))
    names = view.class_names
    if aim.per_class:
        for k, t in enumerate(aim.thresholds):
            st.session_state[f"t-{k}"] = t
        note = f"Each class at the lowest threshold whose own estimate reaches {ui.pct(target)}"
        short = ", ".join(ui.plain(names[c]) for c in aim.short)
        note += (f"; none reaches it for {short}, set where their estimate is best (0.99 where too few of their "
                 "validation images pass)." if aim.short else ".")
        if not aim.short_of_validation:
            note += (f" {len(names)} thresholds chosen on the same validation images make the estimate of all "
                     "that passes a little optimistic (on Fashion-MNIST with 200 validation images a class, about "
                     "0.7 points), but what passes reached the aim more often than with one threshold for all "
                     "(there, in 95% of validation draws against 56%).")
        else:
            few = ", ".join(f"{ui.plain(names[c])} {n}" for c, n in aim.short_of_validation.items())
            note += (f" Few validation images are predicted as some classes ({few}): a threshold chosen on so "
                     "few often looks good only by chance. On Fashion-MNIST with 50 a class, what passed reached "
                     "the aim in 22% of validation draws against 54% with one threshold for all, so one threshold "
                     "is the safer choice here: turn off Per-class thresholds and press Set. More held-out "
                     "validation labels would let each class have its own.")
    else:
        t = aim.thresholds[0]
        st.session_state["threshold"] = t
        if aim.reached:
            note = f"{t:.2f} is the lowest threshold estimated at {ui.pct(target)} or more."
        elif not aim.strict_fallback:
            note = (f"No threshold reaches an estimated {ui.pct(target)}; {t:.2f} has the best estimate "
                    f"({ui.pct(aim.stats.est_precision)}) with at least 100 validation images behind it.")
        else:
            note = (f"No threshold has an estimate of {ui.pct(target)} with at least 100 validation images behind "
                    f"it, so it is set to the strict {t:.2f}. More held-out validation labels give the "
                    "estimate more to go on.")
    st.session_state["aim_result"] = ((desk.name, view.rows.round, aim.thresholds), note)


def later_round_caveat(desk: Desk, run_id: int) -> None:
    """A round labeled by a model that trained on earlier accepted labels: say what its estimate means."""
    seen = desk.studio.trained_on_pool(desk.name, run_id)
    if seen != 0:  # None: a retrain round stopped before it counted its labels
        how_many = "" if seen is None else f"{seen:,} "
        st.warning(f"Run {run_id} trained on {how_many}pool images whose labels were accepted or given earlier. "
                   "The estimated precision covers every pseudo-label that passes; the pending ones among "
                   "them are what earlier rounds left, harder than the average, and are right less often "
                   "than it says (on Fashion-MNIST, 67 to 96% at an estimated 95%: docs/results.md). Review "
                   "them sorted \"likely mistakes first\" rather than accepting them all.", icon=":material/warning:")


def threshold_metrics(stats) -> None:
    m = st.columns(2)
    m[0].metric("Pass", f"{stats.passed:,}", help="pseudo-labels at or above their class threshold")
    m[1].metric("Coverage", ui.pct(stats.coverage), help="share of the pool that passes")
    m = st.columns(2)
    m[0].metric("Estimated precision", ui.pct(stats.est_precision),
                help="how often the validation images that pass the same thresholds were labeled right")
    if stats.true_precision is not None:
        m[1].metric("True precision", ui.pct(stats.true_precision), help="from the dataset's hidden labels")
    if stats.val_support:
        st.caption(f"90% interval {ui.interval(stats.est_low, stats.est_high)}, from the "
                   f"{stats.val_support} validation image(s) that pass: fewer images, a wider interval")
    else:
        st.caption("No validation image passes these thresholds, so there is no estimate: lower them, "
                   "or label more images")


def per_class_table(stats, names: list[str], thresholds: list[float]) -> None:
    percent = st.column_config.NumberColumn(format="percent")
    st.dataframe([{"class": names[r["class"]], "threshold": thresholds[r["class"]], "predicted": r["predicted"],
                   "pass": r["passed"], "coverage": r["coverage"], "est. precision": r["est_precision"],
                   "90% interval": ui.interval(r["est_low"], r["est_high"]), "validation": r["val_support"],
                   "true precision": r["true_precision"]} for r in stats.per_class], hide_index=True,
                 column_config={"coverage": percent, "est. precision": percent, "true precision": percent})


def histogram_figure(view, threshold: float) -> go.Figure:
    hist = view.histogram(BINS)
    centers = [(i + 0.5) / BINS for i in range(BINS)]
    fig = go.Figure([go.Bar(x=centers, y=hist[k], name=ui.chart_text(n), width=0.95 / BINS)
                     for k, n in enumerate(view.class_names)])
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


# Filters, undo and the page buttons: changing one reruns this fragment (and the grid inside it).
@st.fragment
def grid(desk: Desk) -> None:
    desk.studio.touch()
    view = desk.studio.review(desk.name)
    names = view.class_names
    f = st.columns([2.2, 2.2, 2, 1, 1.2])
    f[0].multiselect("Predicted class", range(len(names)), format_func=lambda k: names[k], key="f-class")
    f[1].multiselect("Status", STATUSES, default=["pending"], key="f-status")
    f[2].selectbox("Order", SORTS, key="f-sort")
    p = st.columns([1, 1, 1, 1], vertical_alignment="center")
    focus = p[3].toggle("Focus mode", key="f-focus", help="one large image at a time, Prodigy-style")
    f[3].selectbox("Per page", [24, 48, 100], key="f-size", disabled=focus)  # kept across focus mode
    f[4].number_input("Go to page", min_value=1, value=None, step=1, key="f-goto", on_change=go_to_page,
                      placeholder="number", help="the grid's ‹ › and PageUp / PageDown turn pages too")
    conf_range = st.session_state.get("conf_range")
    if conf_range:
        st.caption(f"Confidence {conf_range[0]:.2f}–{conf_range[1]:.2f}, from the histogram selection")
    if not focus:
        for col, action, label, icon in ((p[0], "accept", "Accept this page", ":material/done_all:"),
                                         (p[1], "reject", "Reject this page", ":material/remove_done:")):
            col.button(label, on_click=act, args=(decide_page, desk, action), key=f"page-{action}", icon=icon)
    p[2].button("Undo last", icon=":material/undo:", on_click=act, args=(desk.studio.undo, desk.name, desk.who),
                key="undo", help="your last decision (U in the grid)")
    grid_page(desk)
    pace_caption(desk)


# Page turns (and decisions, where the grid cannot POST them: review_grid/api.py) rerun only this
# fragment: the grid component alone, which draws the counts and the page numbers itself. Each
# Streamlit element in a rerun costs the browser time, and with eight reviewers on one machine that
# time was most of a decision's.
@st.fragment
def grid_page(desk: Desk) -> None:
    desk.studio.touch()
    view = desk.studio.review(desk.name)
    show_messages()
    page = current_page(view)
    mode = "focus" if st.session_state.get("f-focus") else "grid"
    # What is on show, for the page buttons (in the outer fragment, which this one's reruns leave as
    # they were): the rows and the state each was drawn in.
    st.session_state["review-grid-shown"] = {"round": int(view.rows.round), "items": page.items.tolist(),
                                             "status": [str(view.status[i]) for i in page.items]}
    show_grid(desk, view, page, mode, key="review-grid", counts=view.counts())


def current_page(view):
    """The page of the grid that the filters (read from their widgets' state) and the page number give."""
    names = view.class_names
    focus = st.session_state.get("f-focus", False)
    size = 50 if focus else st.session_state.get("f-size", 24)
    state = st.session_state
    positions = view.select(classes=state.get("f-class") or None, statuses=state.get("f-status", ["pending"]) or None,
                            conf_range=state.get("conf_range"), sort=state.get("f-sort", SORTS[0]),
                            thresholds=current_thresholds(len(names)))
    page = view.page(positions, size, state.get("f-page", 1))
    state["f-page"] = page.page  # clamped: a filter or a decision can shrink the list
    return page


def go_to_page() -> None:
    """Turn to the page typed, then empty the box: the grid turns pages too, so a number left in it
    would soon be stale, and typing the same number again would not count as a change."""
    if st.session_state.get("f-goto"):
        st.session_state["f-page"] = int(st.session_state["f-goto"])
    st.session_state["f-goto"] = None


def decide_page(desk: Desk, action: str) -> int:
    """Accept or reject the tiles the grid shows, each only if it is still as it was drawn (another
    reviewer may have decided it since)."""
    shown = st.session_state.get("review-grid-shown") or {}
    if not shown.get("items"):
        raise MPLStudioError("this page is empty: nothing to decide")
    if shown["round"] != desk.studio.latest_round(desk.name):
        raise MPLStudioError("a new round of pseudo-labels arrived since this page was drawn: look at it first")
    # The grid's keys commit without redrawing the page: tiles the reviewer has decided since are
    # left as they decided them, and are not another reviewer's doing.
    as_seen = desk.studio.as_seen_by(desk.name, shown["items"], shown["status"], desk.who)
    keep = [i for i, (drawn, now) in enumerate(zip(shown["status"], as_seen)) if drawn == now]
    if not keep:
        raise MPLStudioError("you have decided every tile on this page already")
    n = desk.studio.decide(desk.name, [shown["items"][i] for i in keep], action, desk.who, seen=True,
                           expect=[shown["status"][i] for i in keep])
    if n < len(keep):
        raise MPLStudioError(f"{n} decision(s) saved; another reviewer decided {len(keep) - n} of these "
                             "tiles first, so they were left as that reviewer decided")
    return n


def current_thresholds(k: int) -> list[float]:
    """The threshold panel's thresholds (one per class), for the order "closest to the threshold"."""
    t = st.session_state.get("threshold", 0.9)
    return [st.session_state.get(f"t-{c}", t) if st.session_state.get("per_class") else t for c in range(k)]


def show_grid(desk: Desk, view, page, mode: str, key: str, counts: dict | None = None) -> None:
    """The review component over one page; its callbacks commit decisions and turn pages."""
    tiles = desk.studio.review_tiles(desk.name, page.items)
    data = payload(tiles, view.class_names, round_=int(view.rows.round), page=page, mode=mode, counts=counts,
                   ack=st.session_state.get(f"{key}-ack"), focus_last=st.session_state.pop(f"{key}-last", False),
                   zoom=zoom_image(desk, tiles, key), api=grid_api(desk.studio, desk.name, desk.who, st.session_state),
                   statuses=None if mode == "queue" else st.session_state.get("f-status", ["pending"]))
    review_grid(key=key, data=data, on_batch_change=lambda: commit(desk, key),
                on_turn_change=lambda: turn(key, "f-page" if mode != "queue" else None),
                on_zoom_change=lambda: remember_zoom(key))


def remember_zoom(key: str) -> None:
    """Keep the lightbox's request: a trigger lasts one rerun, the image must outlive the next decision."""
    request = (st.session_state.get(key) or {}).get("zoom")
    if isinstance(request, dict):  # a position, or None when the lightbox closed
        position = request.get("position")
        st.session_state[f"{key}-zoom"] = position if isinstance(position, int) else None


def zoom_image(desk: Desk, tiles: list[dict], key: str) -> dict | None:
    """The source image the lightbox asked for, if its tile is on this page."""
    wanted = st.session_state.get(f"{key}-zoom")
    tile = next((t for t in tiles if t["position"] == wanted), None)
    if tile is None or not tile.get("zoomable"):
        return None
    return {"position": tile["position"], **desk.studio.zoom_image(desk.name, tile["pool_index"])}


def commit(desk: Desk, key: str) -> None:
    """The grid's batch of keyed decisions and undos, committed in order (each its own transaction)."""
    batch = (st.session_state.get(key) or {}).get("batch")
    last = st.session_state.get(f"{key}-ack")
    if not isinstance(batch, dict) or (last and last.get("id") == batch.get("id")):
        return  # nothing new, or a batch sent again whose ack is already on its way
    st.session_state[f"{key}-ack"] = desk.studio.apply_review_batch(desk.name, batch, desk.who)


def turn(key: str, page_key: str | None) -> None:
    request = (st.session_state.get(key) or {}).get("turn") or {}
    if page_key and isinstance(request.get("page"), int):
        st.session_state[page_key] = max(1, request["page"])
        st.session_state[f"{key}-last"] = bool(request.get("last"))


def queue_tab(desk: Desk, view) -> None:
    st.caption("The most uncertain pending samples (smallest gap between the top two classes): labeling these "
               "by hand teaches the next round the most. A keeps the model's class, a digit (or C) picks another, "
               "X rejects; each is saved as a label by hand.")
    queue = view.queue(24)
    if len(queue) == 0:
        st.success("Nothing pending.")
        return
    show_grid(desk, view, view.page(queue, len(queue), 1), "queue", key="queue-grid")


def pace_caption(desk: Desk) -> None:
    """The reviewer's own pace, measured from the decisions they saved (none by threshold)."""
    mine = desk.studio.review_pace(desk.name).get(desk.who)
    if mine is not None and (text := mine.summary()):
        shared = (" Everyone who has not set a name in the sidebar shares this one, and its pace."
                  if desk.who == ui.DEFAULT_REVIEWER else "")
        st.caption(f"Your pace: {text}.{shared}",
                   help="From the times your decisions were saved under your reviewer name (people sharing a "
                        "name share a pace), in sittings with no gap over a minute (more before a page decided at "
                        "once); a longer gap is a break. Decisions by threshold are not counted. It is brought up "
                        "to date when the page redraws. The Rounds page shows what the review time before each "
                        "round bought.")


def calibration_tab(view) -> None:
    rel = view.reliability(bins=10)
    sweep = view.precision_coverage()
    c = st.columns(2)
    fig = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line=dict(dash="dot")),
                     go.Scatter(x=[r["confidence"] for r in rel], y=[r["accuracy"] for r in rel],
                                mode="lines+markers", name="validation", text=[r["count"] for r in rel],
                                hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.2f}<br>n=%{text}")])
    fig.update_layout(title="Reliability on the validation split", xaxis_title="confidence",
                      yaxis_title="accuracy", height=330, margin=dict(l=10, r=10, t=40, b=10))
    c[0].plotly_chart(fig, key="reliability")
    c[1].plotly_chart(precision_figure(sweep), key="sweep")


def precision_figure(sweep: list[dict]) -> go.Figure:
    """Precision and coverage by threshold, the estimate inside its 90% interval (a band)."""
    x = [r["threshold"] for r in sweep]
    traces = []
    if sweep and "est_low" in sweep[0]:
        traces += [go.Scatter(x=x, y=[r["est_high"] for r in sweep], mode="lines", line=dict(width=0),
                              showlegend=False, hoverinfo="skip"),
                   go.Scatter(x=x, y=[r["est_low"] for r in sweep], mode="lines", line=dict(width=0), fill="tonexty",
                              fillcolor="rgba(99, 110, 250, 0.2)", name="90% interval")]
    names = {"est_precision": "estimated precision", "true_precision": "true precision", "coverage": "coverage"}
    traces += [go.Scatter(x=x, y=[r[k] for r in sweep], mode="lines", name=name)
               for k, name in names.items() if sweep and k in sweep[0]]
    fig = go.Figure(traces)
    fig.update_layout(title="Precision and coverage by threshold", height=330, xaxis_title="threshold",
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def main() -> None:
    st.title("Review")
    desk = Desk(ui.get_studio(), ui.workspace_or_stop(), ui.reviewer())
    view = desk.studio.review(desk.name)
    generate_panel(desk, expanded=view is None)
    if labeling_job_to_watch(desk):
        job_panel(desk)
    if view is None:
        st.stop()
    show_messages()
    rows = view.rows
    st.caption(f"Round {rows.round}: {len(rows):,} pseudo-labels from the {rows.model} of run {rows.run_id}")
    later_round_caveat(desk, rows.run_id)
    threshold_panel(desk)
    # Every tab is drawn, though the browser re-renders them at each of the grid's reruns: a grid left
    # undrawn would lose the keys it has not sent yet, and its filters. Opening a tab reruns the
    # page, so it shows what the other tabs decided meanwhile (the grid's decisions rerun nothing).
    grid_tab, q_tab, v_tab, cal_tab = st.tabs(["Pseudo-labels", "Labeling queue", "Validation labels", "Calibration"],
                                              key="review-tab", on_change="rerun")
    with grid_tab:
        grid(desk)
    with q_tab:
        queue_tab(desk, view)
    with v_tab:
        validation_tab(desk, lambda: current_thresholds(len(view.class_names)), zoom_image, remember_zoom)
    with cal_tab:
        calibration_tab(view)


main()
