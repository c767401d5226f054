"""Home: what MPL Studio does, the workspace in use, and a one-click demo of the whole loop."""
import plotly.graph_objects as go
import streamlit as st

import ui
from mpl_core import (
    DEMO_BUDGET_S,
    DEMO_TARGET_PRECISION,
    DEMO_VAL_PER_CLASS,
    builtin_dataset_status,
    demo_data,
    demo_plan,
)

st.title("MPL Studio")
st.markdown(
    "1. **Label a few images** — or start from Fashion-MNIST with 10 labels per class.\n"
    "2. **Meta Pseudo Labels** trains a teacher and a student on everything else, live in this browser.\n"
    "3. **Review the teacher's pseudo-labels** — threshold, accept, reject, relabel — "
    "and retrain on what you approved."
)
studio = ui.get_studio()
name = st.session_state.get("workspace")
if not name:
    status = builtin_dataset_status()
    if status["found"]:
        st.info(f"No workspace yet. Start with the built-in Fashion-MNIST (10 labels per class to train on, "
                f"{DEMO_VAL_PER_CLASS} held out to estimate the precision of pseudo-labels), or pick other data "
                "on the Data page.", icon=":material/info:")
    else:
        st.warning("Fashion-MNIST is not installed (`apt-get install dataset-fashion-mnist`); it will be "
                   "downloaded on first use if this machine has network.")
    if st.button("Create the Fashion-MNIST demo workspace", type="primary", icon=":material/add:"):
        with ui.user_errors(), st.spinner("Loading Fashion-MNIST..."):
            studio.create("fashion-demo", demo_data())
            ui.open_workspace("fashion-demo")
            st.rerun()
    st.stop()

with ui.user_errors():
    summary = studio.summary(name)
    sizes = summary["sizes"]
    st.subheader(f"Workspace: {name}")
    c = st.columns(4)
    c[0].metric("Dataset", summary["dataset"])
    c[1].metric("Labeled", f"{sizes['labeled']:,}", help="labels training may use")
    c[2].metric("Validation", f"{sizes['val']:,}", help="held-out labels for calibration")
    c[3].metric("Unlabeled pool", f"{sizes['unlabeled']:,}")

st.subheader("Demo: the whole loop in one click")
st.markdown("Trains on the labels alone (supervised, for comparison), then MPL (quick-demo preset; on "
            "Fashion-MNIST one to three minutes in all on a 2-core CPU while no one uses the app), pseudo-labels the "
            f"pool, accepts what the teacher labels with an estimated precision of {DEMO_TARGET_PRECISION:.0%} "
            "or more (where no threshold reaches it, the best estimate), and trains a new model on those "
            f"labels: from scratch where the machine is quick enough to end within {DEMO_BUDGET_S / 60:.0f} "
            "minutes, else by fine-tuning the MPL teacher. On a built-in dataset a simulated reviewer, who "
            "answers with the dataset's hidden labels, then checks 100 pseudo-labels (likely mistakes first) and "
            "the retrained model trains on, half of each batch from the labels people gave: what 100 decisions "
            "of a person add. Every gain it shows is measured from the best model before that step, chosen on "
            "the validation images.")
busy = ui.job_active(name)
if st.button("Run the demo", type="primary", icon=":material/play_arrow:", disabled=busy):
    with ui.user_errors():
        studio.start(name, "demo", **demo_plan().start_args())
        st.rerun()


@st.fragment(run_every=ui.POLL_S)
def demo_panel() -> None:
    job = studio.job(name)
    if job is None or job.kind != "demo":
        return
    ui.job_status_block(name)
    s = job.status()
    r = s.result
    if s.state == "done" and "after_test_acc" in r:
        c = st.columns(4)
        c[0].metric("Best model before the retrain", ui.pct(best_before_test(r)),
                    help=f"{r.get('retrain_gain_over') or 'the MPL student'}: of the models the given labels had "
                         "given so far, the one ahead on the validation split (never chosen on test)"
                         + teacher_note(r))
        c[1].metric("After the retrain", ui.pct(r.get("after_test_acc")), delta=gain_delta(r.get("retrain_gain")),
                    help=f"gain over {r.get('retrain_gain_over') or 'the model before'}; " + retrain_note(r))
        c[2].metric("Labels given", f"{r['labels_given']:,}")
        c[3].metric("Pseudo-labels accepted", f"{r['accepted']:,}", help=f"confidence ≥ {r['threshold']:.2f}")
        if "est_precision" in r:
            p = st.columns(4)
            p[0].metric("Precision of the accepted labels, estimated", ui.pct(r["est_precision"]),
                        help=f"from the {r['val_support']} validation images that pass the same threshold")
            p[1].metric("90% interval", ui.interval(r["est_low"], r["est_high"]))
            if r.get("true_precision") is not None:
                p[2].metric("True precision", ui.pct(r["true_precision"]), help=truth_note(r))
        if r.get("target_reached") is False:
            st.info(f"No threshold reached an estimated {r['target_precision']:.0%} precision, so the demo "
                    f"accepted above {r['threshold']:.3f}: the best estimate with at least 100 validation "
                    "images behind it.", icon=":material/info:")
        if r.get("after_review_test_acc") is not None:
            q = st.columns(4)
            q[0].metric(f"After {r['reviewed']} simulated review decisions", ui.pct(r["after_review_test_acc"]),
                        delta=gain_delta(r.get("review_gain")),
                        help=f"gain over {r.get('review_gain_over') or 'the model before'}; " + review_note(r)
                             + " " + review_time_note(r["reviewed"]))
            q[1].metric("Pseudo-labels corrected by the review", f"{r['review_relabeled']:,}")
        if r.get("stages"):
            st.plotly_chart(accuracy_figure(r["stages"]))
        st.success(story_line(r))


def best_before_test(r: dict) -> float | None:
    """The test accuracy of the model the retrain's gain is measured from (the MPL student's in a story
    without stages)."""
    return r.get("retrain_gain_over_test_acc", r.get("before_test_acc"))


def story_line(r: dict) -> str:
    """The demo in one sentence, its gain measured from the best model the labels had given."""
    gain = r.get("retrain_gain")
    over = (f", {ui.points(gain)} over {r['retrain_gain_over']}, the best model before it on validation"
            if gain is not None and r.get("retrain_gain_over") else "")
    return (f"With {r['labels_given']} hand labels, the teacher labeled {r['pseudo_labels']:,} images; "
            f"{r['accepted']:,} above {r['threshold']:.2f} were accepted and the retrained model reaches "
            f"{ui.pct(r['after_test_acc'])} on the test set{over}.")


def review_time_note(decisions: int) -> str:
    """What those decisions would cost a person here, at the pace this workspace's reviewers measured."""
    team = studio.team_pace(name)
    seconds = team.seconds_for(decisions)
    if seconds is None:
        return (f"How long {decisions} decisions take a person is not known here yet: once someone has reviewed "
                "on the Review page, which times each decision, this says it.")
    return (f"At the pace measured from this workspace's reviewers, {team.summary()}: {decisions} decisions "
            f"take about {ui.fmt_eta(seconds)}.")


def review_note(r: dict) -> str:
    """What the review round was: the Rounds page's default round again, or the retrain going on."""
    how = "a second round from scratch" if r.get("review_from") == "scratch" else "the retrained model, trained further"
    return (f"{how}, after an oracle accepted or corrected the pending pseudo-labels most likely to be wrong; "
            "half of each batch from the labels people gave, the oracle's decisions among them.")


def truth_note(r: dict) -> str:
    """Where the truth fell against the interval, and how often that happens."""
    where = {True: ": inside the 90% interval", False: ": outside the 90% interval, as it is about one time in ten",
             None: ""}[r.get("truth_inside")]
    return (f"from the dataset's hidden labels{where}. On Fashion-MNIST, over many validation sets drawn alike, "
            "the interval held the truth 92 to 94% of the time (docs/results.md, Calibration)")


def gain_delta(gain: float | None) -> str | None:
    """A metric's delta: the gain in points, none where there was no model before to measure from."""
    return None if gain is None else ui.points(gain)


def teacher_note(r: dict) -> str:
    """The models the given labels gave: labels alone, the MPL student and its teacher."""
    parts = [f"labels alone (supervised) {ui.pct(r['supervised_test_acc'])}"] if "supervised_test_acc" in r else []
    parts.append(f"MPL student {ui.pct(r.get('before_test_acc'))}")
    if r.get("teacher_test_acc") is not None:
        started = ", which the retrain fine-tuned" if r.get("retrain_from") == "teacher" else ""
        parts.append(f"its teacher, which labeled the pool{started}, {ui.pct(r['teacher_test_acc'])}")
    return ". On the test set: " + "; ".join(parts)


def retrain_note(r: dict) -> str:
    """How the retrain trained, and why: a round from scratch where it was projected to fit the budget."""
    how = {"scratch": "a new model trained from scratch", "teacher": "the MPL teacher fine-tuned",
           "student": "the MPL student fine-tuned"}.get(r.get("retrain_from"), "a model trained")
    note = f"{how} on the given and accepted labels"
    if r.get("retrain_from") == "scratch" and r.get("retrain_steps"):
        note += f" for {r['retrain_steps']:,} steps"
    if r.get("trusted_share"):
        note += f", {r['trusted_share']:.0%} of each batch from the labels people gave"
    if r.get("mixup"):
        note += ", with mixup (each image blended with another, and their labels alike)"
    if r.get("projected_s") is not None:
        fits = "within" if r["projected_s"] <= r["budget_s"] else "beyond"
        rounds = "two rounds from scratch were" if r.get("projected_rounds") == 2 else "a round from scratch was"
        note += (f"; {rounds} projected to end the demo at {r['projected_s']:.0f} s, {fits} "
                 f"its {r['budget_s']:.0f} s")
    return note


# labels alone, the MPL student, its teacher (greys: before any pseudo-label), the retrain, the review round
STAGE_COLORS = {"labels alone": "#b8c2cc", "MPL student": "#9aa5b1", "MPL teacher": "#7f8c99",
                "retrained on": "#4c78a8", "retrained after": "#2a9d8f"}


def short_name(name: str) -> str:
    """A stage's name short enough for a bar's label: "retrained on 34,365 ..." -> "retrained"."""
    return name.split(" on ")[0].split(" after ")[0].split(" (")[0]


def accuracy_figure(stages: list[dict]) -> go.Figure:
    """The demo at a glance: test accuracy of each model, labels alone first, each bar with its gain
    over the best model before its step (chosen on validation). Stages without a test accuracy (data
    without a labeled test split) are left out, not drawn at 0."""
    stages = [s for s in stages if s["test_acc"] is not None]
    if not stages:
        return go.Figure()
    accs = [100 * s["test_acc"] for s in stages]
    text = [f"{a:.1f}%" + (f"<br>{100 * s['gain']:+.1f} vs {short_name(s['best_before'])}"
                           if s.get("gain") is not None else "") for a, s in zip(accs, stages)]
    names = [s["name"].replace(" on ", "<br>on ").replace(" after ", "<br>after ") for s in stages]
    colors = [next((c for start, c in STAGE_COLORS.items() if s["name"].startswith(start)), "#4c78a8")
              for s in stages]
    fig = go.Figure(go.Bar(x=names, y=accs, text=text, textposition="outside", marker_color=colors,
                           textfont_size=12, cliponaxis=False))
    low = max(0.0, min(accs) - 10)
    fig.update_layout(title="Test accuracy at each step of the demo: labels alone, + unlabeled images (MPL), "
                            "+ accepted pseudo-labels, + review", yaxis_title="test accuracy (%)",
                      yaxis_range=[low, min(100.0, max(accs) + 8)], height=400, margin=dict(t=50, b=10),
                      title_font_size=14)
    return fig


demo_panel()
