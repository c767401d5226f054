"""Train: pick the algorithm and a preset, start / pause / resume / stop, watch it learn live."""
import pandas as pd
import streamlit as st

import ui
from mpl_core import (
    ALGORITHMS,
    FEEDBACK_SIGNS,
    FROM_SCRATCH,
    MODEL_NAMES,
    PRESETS,
    PSEUDO_LABEL_VIEWS,
    VIEW_BATCHES,
    MPLStudioError,
    build_run_config,
    run_gains,
)

WEIGHTS = {"ImageNet weights (torchvision)": "imagenet", FROM_SCRATCH: "none", "a file under the data folder": "file"}

st.title("Train")
studio = ui.get_studio()
name = ui.workspace_or_stop()
busy = ui.job_active(name)


def start_weights_lines(model: str, student: str, weights: str, path: str) -> None:
    """What the chosen models start from, and whether it is at hand (cached, downloadable or not), before Start."""
    try:
        chosen = weights if weights != "file" else studio.weights_file(path)
        statuses = studio.start_weights(name, model=model, student="" if student == "same" else student,
                                        weights=chosen)
    except MPLStudioError as exc:
        st.warning(ui.plain(str(exc)), icon=":material/warning:")
        return
    for status in statuses:
        if status.ready:
            st.caption(ui.plain(status.message))
        else:
            st.warning(ui.plain(status.message), icon=":material/cloud_off:")


# Outside the form, so that the line on the start weights follows the choice.
default = studio.default_start(name)
m = st.columns(4)
model = m[0].selectbox("Model", ["auto", *MODEL_NAMES],
                       help="auto: a small CNN for 28 px, WRN-28-2 up to 32 px, ResNet-18 above; from scratch up to "
                            "64 px (own images on a CPU) the small CNN, which steps 3 times as fast there. MPL's "
                            "teacher, and its student unless you pick another")
student = m[1].selectbox("Student model (MPL)", ["same", *MODEL_NAMES],
                         help="a smaller model to deploy, e.g. a ResNet-50 teacher and a MobileNetV3 student")
weights = m[2].selectbox("Start from", list(WEIGHTS), index=list(WEIGHTS.values()).index(default.weights),
                         help=f"torchvision models: ImageNet weights (downloaded once into the data folder's "
                              f"weights/), {FROM_SCRATCH}, or a .safetensors / torch.save file. {FROM_SCRATCH} is "
                              "the default where ImageNet weights are neither there nor downloadable")
weights_path = m[3].text_input("Weights file (under the data folder)", placeholder="weights/resnet18.safetensors")
if default.note and WEIGHTS[weights] == "none":  # why the default is from scratch, and how to get the weights
    st.info(ui.plain(default.note), icon=":material/cloud_off:")
else:
    start_weights_lines(model, student, WEIGHTS[weights], weights_path)

with st.container():  # not a form: the run-time line below follows each choice
    c = st.columns(3)
    algorithm = c[0].selectbox("Algorithm", ALGORITHMS, index=ALGORITHMS.index("mpl"),
                               help="mpl = Meta Pseudo Labels; the others are baselines (pseudo_label is "
                                    "FixMatch's recipe). Which leads at the same wall time, and where a "
                                    "baseline wins: docs/results.md, \"The same wall time for every algorithm\"")
    preset = c[1].selectbox("Preset", list(PRESETS), index=list(PRESETS).index("quick-demo"),
                            help="How many steps; how long they take here is timed below, before Start. On a "
                                 "2-core CPU: smoke, seconds; quick-demo, 1 to 3 minutes on Fashion-MNIST, about 8 "
                                 "on own images at 64 px with the small CNN from scratch and about 23 with ResNet-18 "
                                 "(one thread of a busy CPU); cpu-10min, about 10 minutes on Fashion-MNIST, several "
                                 "times that on own images; gpu: for a GPU")
    steps = c[2].number_input("Steps (0 = the preset's)", 0, 1_000_000, 0)
    with st.expander("Advanced"):
        a = st.columns(4)
        threshold = a[0].number_input("Confidence threshold (0 = the algorithm's default)", 0.0, 1.0, 0.0, 0.05,
                                      help="defaults: 0.6 for UDA/MPL consistency, 0.95 for pseudo-labeling")
        pseudo_view = a[0].selectbox("MPL student learns the teacher's label for", PSEUDO_LABEL_VIEWS,
                                     help="weak (default): the lightly augmented view, where the teacher is right "
                                          "more often; strong: the heavily augmented one, as the official code")
        sign = a[1].selectbox("MPL feedback sign", FEEDBACK_SIGNS, help="derivation (default) or the official code's")
        views = a[1].selectbox("MPL view batches", VIEW_BATCHES,
                               help="auto (default): separate on a CPU, joint on CUDA. joint: each model sees all "
                                    "its views in one batch, as the official code; separate: a pass per view, a "
                                    "quarter fewer computations")
        lr = a[2].number_input("Learning rate", 0.0001, 1.0, 0.05, format="%.4f")
        seed = a[3].number_input("Seed", 0, 2**31 - 1, 0)
        d = st.columns(3)
        device = d[0].selectbox("Device", ["auto", "cpu", "cuda"], help="auto = the GPU when there is one")
        compiled = d[1].checkbox("Compile the model (torch.compile)",
                                 help="About a minute of compiling at the start, then 10-20% faster steps on a CPU; "
                                      "worth it for long runs")
        amp = d[2].checkbox("bf16 mixed precision", value=True,
                            help="bf16 autocast on a GPU, and on CPUs that compute bf16 natively (AMX or "
                                 "AVX512-BF16: 1.6-2.7x faster steps there); other CPUs train in fp32 either way, "
                                 "since emulated bf16 is 2-2.5x slower there")


def chosen_config():
    """The run the settings above describe: what Start starts, and what the run-time line is of."""
    chosen = WEIGHTS[weights] if WEIGHTS[weights] != "file" else studio.weights_file(weights_path)
    return build_run_config(preset, algorithm=algorithm, steps=int(steps) or None, model=model,
                            student=None if student == "same" else student, weights=chosen,
                            threshold=float(threshold) if threshold > 0 else None, feedback_sign=sign,
                            view_batches=views, pseudo_label_view=pseudo_view, lr=float(lr), seed=int(seed),
                            device=device, compile=bool(compiled), amp=bool(amp))


def show_run_time(known) -> None:
    """How long the run would take here, and where the figure comes from (a RunTime)."""
    if known.state == "failed":
        st.warning(ui.plain(known.line()), icon=":material/warning:")
    else:
        icon = ":material/hourglass_top:" if known.state in PENDING else ":material/timer:"
        st.info(ui.plain(known.line()), icon=icon)


PENDING = ("timing", "waiting")  # a probe runs, or a job does: the line is polled until it is known


@st.fragment(run_every=ui.POLL_S)
def run_time_poll(cfg) -> None:
    """The line while it is pending; once known, the whole page draws it (and stops polling)."""
    known = studio.run_time(name, cfg)
    show_run_time(known)
    if known.state not in PENDING:
        st.rerun()


try:
    settings = chosen_config()
except MPLStudioError:
    settings = None  # the line on the start weights, or Start, says what is wrong
if settings is not None:
    known = studio.run_time(name, settings)
    if known.state in PENDING:
        run_time_poll(settings)
    else:
        show_run_time(known)
compare = algorithm != "supervised" and st.checkbox(
    "First train on the labels alone, for comparison", value=True,
    help="A supervised run on the same labels, model and number of steps, in a run of its own (a small share of "
         "the time above). Where this run's model ends below it on validation, the run says so and names it.")
if st.button("Start training", type="primary", disabled=busy, icon=":material/play_arrow:"):
    with ui.user_errors():
        studio.start(name, "train", cfg=chosen_config(), labels_alone=compare)
        st.rerun()

resumable = [r for r in studio.runs(name) if r["status"] in ("stopped", "interrupted", "failed")]
if resumable and not busy:
    with st.expander(f"Resume a run ({len(resumable)} can continue from a checkpoint)"):
        pick = ui.pick_run("Run", resumable, with_status=True)
        if st.button("Resume", icon=":material/replay:"):
            with ui.user_errors():
                studio.start(name, "resume", run_id=int(pick))
                st.rerun()

if not busy:
    with st.expander("Add a run trained elsewhere (torchrun on several GPUs, another machine)"):
        st.caption("Copy the run's folder (what `torchrun ... -m mpl_core train --out FOLDER` wrote) under the data "
                   "folder and give its path here, relative to the data folder. The newest checkpoint becomes a run "
                   "of this workspace, with its curves, ready to pseudo-label and review.")
        path = st.text_input("Checkpoint or run folder", placeholder="runs/cifar10-8gpu")
        if st.button("Add as a run", icon=":material/add:"):
            with ui.user_errors():
                run_id = studio.attach_checkpoint(name, path)
                st.success(f"Added as run {run_id}.")


@st.fragment(run_every=ui.POLL_S)
def live() -> None:
    ui.job_status_block(name)
    runs = [r for r in studio.runs(name) if r["kind"] in ("train", "retrain")]
    if not runs:
        return
    job = studio.job(name)
    current = job.status().run_id if job is not None and job.status().run_id else runs[-1]["id"]
    st.caption(f"Curves of run {current}")
    ui.curves(studio.metric_rows(name, current), key=(name, current))


live()

runs = studio.runs(name)
if runs:
    st.subheader("Runs in this workspace")
    gains = run_gains(runs)
    st.dataframe(pd.DataFrame([{"run": r["id"], "kind": r["kind"], "algorithm": r["config"]["algorithm"]["name"],
                                "status": r["status"], **ui.handed_columns(r, gains),
                                "student test accuracy": r["metrics"].get("test_acc"),
                                "teacher test accuracy": r["metrics"].get("teacher_test_acc"),
                                "processes": r["metrics"].get("processes", 1),
                                "message": r["message"]} for r in runs]),
                 hide_index=True, column_config={
                     "test accuracy": st.column_config.ProgressColumn(
                         min_value=0.0, max_value=1.0, format="percent", help="of the model the run hands back"),
                     "student test accuracy": st.column_config.NumberColumn(format="percent"),
                     "teacher test accuracy": st.column_config.NumberColumn(format="percent"),
                     "gain over the best before": st.column_config.NumberColumn(
                         format="%+.2f points", help="test accuracy of the model the run hands back, minus that of the "
                                                "earlier finished run ahead on validation")})
