"""Rounds: retrain on the reviewed labels and compare rounds; pseudo-labels against the truth."""
import pandas as pd
import plotly.express as px
import streamlit as st

import ui
from mpl_core import (
    ALGORITHMS,
    FINETUNE_ROUND_LR,
    PRESETS,
    RETRAIN_LR,
    RETRAIN_MIXUP,
    RETRAIN_STEPS_FACTOR,
    RETRAIN_TRUSTED_SHARE,
    MPLStudioError,
    build_retrain_config,
    run_gains,
)

st.title("Rounds")
studio = ui.get_studio()
name = ui.workspace_or_stop()
busy = ui.job_active(name)
source = studio.fine_tune_source(name)
with st.form("retrain"):
    st.markdown("A retrain round trains on the given labels, the accepted pseudo-labels and your "
                "relabels and hand labels. Rejected samples are left out. Your relabels, hand labels and the "
                "pseudo-labels you accepted one by one (not those accepted above a threshold) count as "
                "your labels.")
    c = st.columns([1, 1, 2])
    algorithm = c[0].selectbox("Algorithm", ALGORITHMS, index=ALGORITHMS.index("supervised"),
                               help="supervised trains on the reviewed labels only; mpl/uda also use the rest")
    preset = c[1].selectbox("Preset", list(PRESETS), index=list(PRESETS).index("quick-demo"))
    starts = {"Scratch": {}}
    for role in ("teacher", "student") if source is not None else ():
        if role in source["starts"]:
            starts[f"Run {source['run_id']}'s {role} (fine-tune)"] = source["starts"][role]
    start = c[2].radio("Start from", list(starts), horizontal=True,
                       help="Scratch is the most accurate (the round length and mixup below). Fine-tuning a "
                            "model of the run that made the pseudo-labels (supervised rounds: the preset's steps at "
                            f"learning rate {FINETUNE_ROUND_LR:g}, without mixup) takes a fifth of the time and "
                            "gave about 1.5 points less; of an MPL run's models, the teacher, ahead of its student "
                            "at short budgets, is the better start (docs/results.md).")
    share = st.slider("Share of each batch from your labels", 0.0, 0.9, RETRAIN_TRUSTED_SHARE, 0.05,
                      help="The labels people gave (the given ones, your relabels and hand labels, and the "
                           "pseudo-labels you accepted one by one or a page at a time, not those accepted above "
                           "a threshold) are a few "
                           "hundred among tens of thousands of accepted pseudo-labels; this share of every "
                           "labeled batch is drawn from them, so that the round learns from your decisions. "
                           "0 draws from all labels alike. Supervised rounds only (the one measured).")
    c = st.columns([1, 1, 2])
    factor = c[0].select_slider("Round length from scratch", sorted({3, 6, 12, RETRAIN_STEPS_FACTOR}),
                                RETRAIN_STEPS_FACTOR,
                                format_func=lambda n: f"{n}× the preset's steps",
                                help="Supervised rounds from scratch only (a fine-tuning round keeps its preset's "
                                     "steps). With mixup, longer rounds keep paying: on the "
                                     "demo's data 76.9%, 77.8% and 78.0% at 3, 6 and 12 times the steps, in about "
                                     "25, 45 and 85 s with the quick-demo preset on a 2-core CPU with native bf16 "
                                     "(docs/results.md).")
    mixup = c[1].checkbox("Mixup", RETRAIN_MIXUP,
                          help="Supervised rounds from scratch only (a fine-tuning round trains without it): "
                               "each image is blended with another and the round "
                               "learns both labels in that proportion, so it does not learn the wrong accepted "
                               "pseudo-labels by heart (+0.7 points at 6× the steps), and the round learns at "
                               f"rate {RETRAIN_LR:g}, twice the usual (+0.5 more; without mixup it keeps the "
                               "preset's).")
    go = st.form_submit_button("Start a retrain round", type="primary", disabled=busy, icon=":material/replay:")
if go:
    with ui.user_errors():
        if starts[start] and algorithm != "supervised":
            raise MPLStudioError("fine-tuning a model is for supervised rounds (the one measured); choose "
                                 "supervised, or start from scratch")
        scratch = algorithm == "supervised" and not starts[start]
        studio.start(name, "retrain", cfg=build_retrain_config(
            preset, algorithm=algorithm, trusted_share=share if algorithm == "supervised" else None,
            steps_factor=factor, mixup=mixup if scratch else None,
            **(starts[start] or {"weights": studio.default_start(name).weights})))  # as the Train page's default
        st.rerun()


@st.fragment(run_every=ui.POLL_S)
def live() -> None:
    job = studio.job(name)
    if job is not None and job.kind == "retrain":
        ui.job_status_block(name)


live()

runs = studio.runs(name)
if not runs:
    st.info("No runs yet: train on the Train page.")
    st.stop()
behind = studio.review_behind_runs(name)
gains = run_gains(runs)
table = pd.DataFrame([{
    "run": r["id"], "kind": r["kind"], "algorithm": r["config"]["algorithm"]["name"], "status": r["status"],
    "labels used": r["metrics"].get("labels_used"), "accepted": r["metrics"].get("labels_accepted", 0),
    "confirmed": r["metrics"].get("labels_confirmed"),  # unknown for runs before it was counted
    "by hand": r["metrics"].get("labels_human", 0), "rejected": r["metrics"].get("labels_rejected", 0),
    "decisions before": behind[r["id"]].total, "review minutes before": behind[r["id"]].seconds / 60,
    **ui.handed_columns(r, gains),
    "best before": getattr(gains.get(r["id"]), "best_before", None)} for r in runs])
st.dataframe(table, hide_index=True, column_config={
    "confirmed": st.column_config.NumberColumn(help="of the accepted, those a person accepted looking at the "
                                               "image (not above a threshold): drawn among people's labels"),
    "decisions before": st.column_config.NumberColumn(help="decisions people made looking at the images before "
                                                      "this run read its labels, undone ones too (by threshold "
                                                      "and by the simulated reviewer not counted)"),
    "review minutes before": st.column_config.NumberColumn(
        format="%.1f", help="the time those decisions took, measured from when each was saved; a gap of over a "
                            "minute between two (more before a page decided at once) is a break and not counted"),
    "test accuracy": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent",
                                                     help="of the model the run hands back"),
    "gain over the best before": st.column_config.NumberColumn(
        format="%+.2f points", help="test accuracy minus that of the best earlier finished run, chosen on validation "
                               "(never on test): what this round added over the best model there already was")})
done = table.dropna(subset=["test accuracy"])
if len(done):
    fig = px.bar(done, x=done["run"].astype(str), y="test accuracy", color="kind", text_auto=".1%",
                 hover_data=["labels used", "algorithm"], title="Test accuracy by run", height=320)
    fig.update_layout(xaxis_title="run", yaxis_tickformat=".0%", margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(fig, key="rounds")
rounds_done = done[done["kind"] == "retrain"]
if (rounds_done["review minutes before"] > 0).any():
    fig = px.line(rounds_done, x="review minutes before", y="test accuracy", markers=True, text="run",
                  hover_data=["decisions before", "labels used"], height=320,
                  title="What the review time bought: each retrain round against the review before it")
    fig.update_traces(textposition="top center")
    fig.update_layout(xaxis_title="minutes of people's review before the round", yaxis_tickformat=".1%",
                      margin=dict(l=10, r=10, t=40, b=10))
    st.plotly_chart(fig, key="review-time")

view = studio.review(name)
if view is not None and view.truth is not None:
    st.subheader("Pseudo-labels against the truth")
    which = st.radio("Samples", ["all pseudo-labels", "accepted"], horizontal=True)
    matrix = view.confusion(None if which == "all pseudo-labels" else ["accept"])
    fig = px.imshow(matrix, x=[ui.chart_text(n) for n in view.class_names],
                    y=[ui.chart_text(n) for n in view.class_names], text_auto=True, aspect="auto",
                    color_continuous_scale="Blues", labels=dict(x="pseudo-label", y="true class", color="count"),
                    height=480)
    fig.update_layout(margin=dict(l=10, r=10, t=10, b=10))
    st.plotly_chart(fig, key="confusion")
    total = matrix.sum()
    st.caption(f"{total:,} samples; {ui.pct(matrix.trace() / total)} correct" if total else "no samples")
