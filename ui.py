"""Shared pieces of the app's pages: the Studio singleton, the workspace picker, job panels.

Streamlit code only; everything it shows comes from mpl_core.Studio.
"""
from __future__ import annotations

import gc
import html
import re
import threading
from contextlib import contextmanager

import plotly.graph_objects as go
import streamlit as st

from mpl_core import MPLStudioError, Studio, default_data_root, handed_back, run_gains

POLL_S = 1.0  # how often live panels refresh

DEFAULT_REVIEWER = "reviewer"  # the name decisions are recorded under until a person gives theirs


@st.cache_resource
def get_studio() -> Studio:
    """One Studio per server process: every browser tab sees the same jobs."""
    # The libraries are imported by now and live as long as the process: move their objects out of
    # the collector's reach, so its occasional full collections walk only what the app allocates.
    gc.freeze()
    return Studio(default_data_root())


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def plain(text: str) -> str:
    """User text (class names, paths) for places Streamlit renders as markdown: labels, captions,
    messages. Every markdown character is escaped, so a class called `**x** [y](z)` shows as typed."""
    return _MARKDOWN.sub(r"\\\1", str(text))


def chart_text(text: str) -> str:
    """User text for plotly, which renders a subset of HTML (links, tags) in names and ticks."""
    return html.escape(str(text))


@contextmanager
def user_errors():
    """Show an error a user can fix as a message on the page, not a traceback."""
    try:
        yield
    except MPLStudioError as exc:
        st.error(plain(str(exc)), icon=":material/error:")


def sidebar() -> None:
    """Workspace picker and reviewer name, kept in the URL so a reload keeps them."""
    studio = get_studio()
    studio.touch()  # every full run is a person's doing; jobs leave a core for the pages meanwhile
    names = [w["name"] for w in studio.workspaces()]
    wanted = st.session_state.get("workspace") or st.query_params.get("ws")
    if (chosen := st.session_state.pop("workspace_next", None)) in names:
        st.session_state["workspace_picker"] = chosen  # set before the widget is made: allowed
    if names:
        index = names.index(wanted) if wanted in names else 0
        choice = st.sidebar.selectbox("Workspace", names, index=index, key="workspace_picker")
        st.session_state["workspace"] = choice
        st.query_params["ws"] = choice
    else:
        st.session_state["workspace"] = None
        st.sidebar.caption("No workspace yet: create one on the Data page.")
    st.session_state["reviewer"] = st.sidebar.text_input(
        "Your name (recorded with decisions)", value=st.session_state.get("reviewer", DEFAULT_REVIEWER), max_chars=64)


def open_workspace(name: str) -> None:
    """Make `name` the open workspace from the next run on. The sidebar's picker already exists in
    this run and cannot be changed now, so the choice waits for the sidebar of the next run."""
    st.session_state["workspace"] = name
    st.session_state["workspace_next"] = name


def workspace_or_stop() -> str:
    name = st.session_state.get("workspace")
    if not name:
        st.info("Create a workspace first: pick the data on the Data page.", icon=":material/info:")
        st.page_link("app_pages/data.py", label="Go to Data", icon=":material/dataset:")
        st.stop()
    return name


def job_active(name: str) -> bool:
    """Whether a job runs on the workspace, from this app or another process (start buttons are
    disabled then)."""
    job = get_studio().job(name)
    return (job is not None and job.status().active) or get_studio().outside_job(name) is not None


def import_progress(bar):
    """on_progress(done, total) for an image import, drawn on an st.progress bar (this script's thread)."""
    def update(done: int, total: int) -> None:
        bar.progress(done / max(1, total), text=f"Importing images: {done:,} of {total:,}")
    return update


def reviewer() -> str:
    return (st.session_state.get("reviewer") or DEFAULT_REVIEWER).strip() or DEFAULT_REVIEWER


def fmt_eta(seconds: float) -> str:
    if seconds <= 0 or seconds != seconds:
        return "-"
    m, s = divmod(int(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def interval(low, high) -> str:
    """'90.2–95.4%' for a 90% interval; '-' where there is none."""
    if low is None or high is None or low != low or high != high:
        return "-"
    return f"{low * 100:.1f}–{high * 100:.1f}%"


def pct(v) -> str:
    """0.716 -> '71.6%'; '-' for None or NaN."""
    return "-" if v is None or v != v else f"{v * 100:.1f}%"


def points(v) -> str:
    """A difference of two rates: 0.028 -> '+2.8 points'."""
    return "-" if v is None or v != v else f"{v * 100:+.1f} points"


def handed_columns(run: dict, gains: dict) -> dict:
    """A runs table's columns on the model a run hands back: which, its test accuracy, and its gain in
    points over the best earlier run on validation (gains: results.run_gains of the runs)."""
    role, _, test = handed_back(run["metrics"])
    return {"hands back": role if run["status"] == "done" else None, "test accuracy": test,
            "gain over the best before": gain_points(gains.get(run["id"]))}


def gain_points(stage) -> float | None:
    """A run's gain over the best run before it (results.Stage), in points for a table; None without one."""
    return None if stage is None or stage.gain is None else round(100 * stage.gain, 2)


def run_label(run: dict, with_status: bool = False) -> str:
    """'run 3 · train · mpl · test 71.6%' (the model it hands back; or its status and message instead)."""
    parts = [f"run {run['id']}", run["kind"], run["config"]["algorithm"]["name"]]
    parts += [run["status"], run["message"]] if with_status else [f"test {pct(handed_back(run['metrics'])[2])}"]
    return " · ".join(p for p in parts if p)


def pick_run(label: str, runs: list[dict], with_status: bool = False, container=st, **kwargs) -> int:
    """A selectbox of runs (newest first) by run_label; returns the chosen run's id."""
    by_id = {r["id"]: r for r in runs}
    return container.selectbox(label, list(reversed(by_id)), format_func=lambda i: run_label(by_id[i], with_status),
                               **kwargs)


def job_status_block(name: str, controls: bool = True) -> None:
    """State, progress bar with ETA, device, message and pause/resume/stop of the workspace's job."""
    job = get_studio().job(name)
    outside = get_studio().outside_job(name)
    if outside is not None:
        outside_job_block(outside)
        return
    if job is None:
        st.caption("No job started from this app for this workspace yet.")
        return
    s = job.status()
    label = {"train": "Training", "retrain": "Retrain round", "pseudo_label": "Pseudo-labeling",
             "demo": "Demo"}.get(s.kind, s.kind)
    run = f" · run {s.run_id}" if s.run_id else ""
    st.markdown(f"**{label}{run}** — {s.state}" + (f" · {s.phase}" if s.phase and s.active else ""))
    if s.active:
        st.progress(s.fraction, text=f"{s.step}/{s.total} · {s.images_per_s:,.0f} images/s · "
                                     f"ETA {fmt_eta(s.eta_s)} · {s.device or 'starting'}")
    for note in s.notes:  # e.g. the batch was halved after running out of GPU memory
        st.warning(plain(note), icon=":material/memory:")
    if s.state == "failed":
        st.error(plain(s.error or s.message), icon=":material/error:")
    elif s.message:
        st.caption(s.message)
    if s.state == "done" and s.kind in ("train", "retrain") and s.run_id:
        run_result_block(name, s.run_id, (name, s.run_id, id(job)))
    if controls and s.active:
        c1, c2, c3 = st.columns(3)
        if s.state == "paused":
            c1.button("Resume", on_click=job.resume, icon=":material/play_arrow:", key=f"resume-{name}")
        else:
            c1.button("Pause", on_click=job.pause, icon=":material/pause:", key=f"pause-{name}")
        c2.button("Stop", on_click=job.stop, icon=":material/stop:", key=f"stop-{name}")


def run_result_block(name: str, run_id: int, key: tuple) -> None:
    """What a finished run gave, where its status says "done": the accuracy of the model it hands
    back and of the other one (teacher or student), and its gain over the best model before it.
    key: the job's identity; a finished run's numbers never change, so the store is read once for it,
    not at every poll of the status block."""
    cache = st.session_state.setdefault("_run_results", {})
    if key not in cache:
        runs = get_studio().runs(name)
        run = next((r for r in runs if r["id"] == run_id), None)
        if run is None or run["status"] != "done":
            return
        cache[key] = run, run_gains(runs).get(run_id)
    run, stage = cache[key]
    m = run["metrics"]
    role, val, test = handed_back(m)
    split = "test" if test is not None else "validation"  # own images may have no labeled test split
    c = st.columns(3)
    c[0].metric(f"Hands back: the {role}, {split} accuracy", pct(test if test is not None else val),
                help=f"validation accuracy {pct(val)}; the model `evaluate` measures and every gain is counted "
                     "from (the checkpoint keeps both; a round fine-tunes the one its Start from names)")
    if "teacher_val_acc" in m:
        other = "student" if role == "teacher" else "teacher"
        _, o_val, o_test = handed_back({**m, "hands_back": other})
        c[1].metric(f"Its {other}, {split} accuracy", pct(o_test if split == "test" else o_val),
                    help=f"validation accuracy {pct(o_val)}")
    if stage is not None and stage.best_before is not None:
        c[2].metric("Gain over the best model before", points(stage.gain) if stage.gain is not None else "-",
                    help=f"{split} accuracy against {stage.best_before}, the earlier finished run ahead on validation")
    if run["message"]:  # e.g. below the labels alone on validation (service/work.with_labels_alone)
        st.warning(plain(run["message"]), icon=":material/trending_down:")
    if role == "teacher":
        st.info(f"The student ended behind its teacher on validation ({pct(m.get('val_acc'))} against "
                f"{pct(m.get('teacher_val_acc'))}), so this run hands back the teacher.", icon=":material/info:")


def outside_job_block(job: dict) -> None:
    """A job another process runs here (the command line, torchrun): shown, not controlled."""
    st.info(f"A job started outside the app is running: {plain(job['description'])}. It is stopped where it "
            "was started (Ctrl-C); its run resumes from the last checkpoint.", icon=":material/terminal:")
    if job["total"]:
        st.progress(min(1.0, job["step"] / job["total"]),
                    text=f"run {job['run_id']} · {job['phase']} · step {job['step']}/{job['total']} (as last logged)")


_CURVES: dict[tuple, tuple[int, list]] = {}  # (workspace, run) -> (rows drawn, figures)
_CURVES_LOCK = threading.Lock()
PANELS = [("Losses", ("t_loss", "s_loss", "loss", "u_loss", "finetune_loss")),
          ("Validation accuracy", ("val_acc", "teacher_val_acc")),
          ("Teacher feedback h", ("h",)), ("Images/s", ("images_per_s",))]


def curves(rows: list[dict], key: tuple | None = None) -> None:
    """Live training curves: losses, validation accuracy, the feedback signal h, images/s.

    Every open Train page polls once a second, so the figures are built once per new metrics
    row and shared by all sessions (key = workspace and run), with plain graph objects:
    plotly express took 140 ms a refresh, which eight viewers turned into a busy core."""
    if not rows:
        st.caption("Curves appear after the first logged steps.")
        return
    with _CURVES_LOCK:
        cached = _CURVES.get(key) if key is not None else None
    if cached is not None and cached[0] == len(rows):
        figures = cached[1]
    else:
        figures = _curve_figures(rows)
        if key is not None:
            with _CURVES_LOCK:
                _CURVES[key] = (len(rows), figures)
    for (title, fig), col in zip(figures, st.columns(len(figures))):
        col.plotly_chart(fig, key=f"curve-{title}")


def _curve_figures(rows: list[dict]) -> list[tuple[str, go.Figure]]:
    offset = max((r["step"] for r in rows if r["phase"] == "train"), default=0)
    x = [r["step"] + (offset if r["phase"] == "finetune" else 0) for r in rows]
    figures = []
    for title, names in PANELS:
        traces = []
        for series in names:
            points = [(xi, r[series]) for xi, r in zip(x, rows) if r.get(series) is not None and r[series] == r[series]]
            if points:
                xs, ys = zip(*points)
                traces.append(go.Scatter(x=xs, y=ys, mode="lines", name=series))
        if traces:
            fig = go.Figure(traces)
            fig.update_layout(title=title, height=260, margin=dict(l=10, r=10, t=40, b=10), xaxis_title="step",
                              legend=dict(orientation="h", y=-0.25))
            figures.append((title, fig))
    return figures
