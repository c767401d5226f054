"""Shared pieces of the app's pages: the Studio singleton, the workspace picker, job panels.

Streamlit code only; everything it shows comes from mpl_core.studio.Studio.
"""
from __future__ import annotations

import html
import re
from contextlib import contextmanager

import pandas as pd
import plotly.express as px
import streamlit as st

from mpl_core.data import default_data_root
from mpl_core.errors import MPLStudioError
from mpl_core.studio import Studio

POLL_S = 1.0  # how often live panels refresh


@st.cache_resource
def get_studio() -> Studio:
    """One Studio per server process: every browser tab sees the same jobs."""
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
        "Your name (recorded with decisions)", value=st.session_state.get("reviewer", "reviewer"), max_chars=64)


def open_workspace(name: str) -> None:
    """Make `name` the open workspace from the next run on. The sidebar's picker already exists in
    this run and cannot be changed now, so the choice waits for the sidebar of the next run."""
    st.session_state["workspace"] = name
    st.session_state["workspace_next"] = name


def workspace_or_stop() -> str:
    name = st.session_state.get("workspace")
    if not name:
        st.info("Create a workspace first: pick the data on the Data page.", icon=":material/info:")
        st.page_link("pages/data.py", label="Go to Data", icon=":material/dataset:")
        st.stop()
    return name


def job_active(name: str) -> bool:
    """Whether this app's job for the workspace is still running (start buttons are disabled then)."""
    job = get_studio().job(name)
    return job is not None and job.status().active


def reviewer() -> str:
    return (st.session_state.get("reviewer") or "reviewer").strip() or "reviewer"


def fmt_eta(seconds: float) -> str:
    if seconds <= 0 or seconds != seconds:
        return "-"
    m, s = divmod(int(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def pct(v) -> str:
    return "-" if v is None or v != v else f"{v * 100:.1f}%"


def job_status_block(name: str, controls: bool = True) -> None:
    """State, progress bar with ETA, device, message and pause/resume/stop of the workspace's job."""
    job = get_studio().job(name)
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
    if controls and s.active:
        c1, c2, c3 = st.columns(3)
        if s.state == "paused":
            c1.button("Resume", on_click=job.resume, icon=":material/play_arrow:", key=f"resume-{name}")
        else:
            c1.button("Pause", on_click=job.pause, icon=":material/pause:", key=f"pause-{name}")
        c2.button("Stop", on_click=job.stop, icon=":material/stop:", key=f"stop-{name}")


def curves(rows: list[dict]) -> None:
    """Live training curves: losses, validation accuracy, the feedback signal h, images/s."""
    if not rows:
        st.caption("Curves appear after the first logged steps.")
        return
    df = pd.DataFrame(rows)
    df["x"] = df["step"] + df["phase"].map({"train": 0, "finetune": df.loc[df.phase == "train", "step"].max()
                                           if (df.phase == "train").any() else 0}).fillna(0)
    panels = [("Losses", [c for c in ("t_loss", "s_loss", "loss", "u_loss", "finetune_loss") if c in df]),
              ("Validation accuracy", [c for c in ("val_acc", "teacher_val_acc") if c in df]),
              ("Teacher feedback h", [c for c in ("h",) if c in df]),
              ("Images/s", [c for c in ("images_per_s",) if c in df])]
    panels = [(t, cols) for t, cols in panels if cols]
    for (title, cols), col in zip(panels, st.columns(len(panels))):
        long = df.melt(id_vars=["x"], value_vars=cols, var_name="series").dropna()
        fig = px.line(long, x="x", y="value", color="series", title=title, height=260)
        fig.update_layout(margin=dict(l=10, r=10, t=40, b=10), legend_title_text="", xaxis_title="step")
        col.plotly_chart(fig, key=f"curve-{title}")
