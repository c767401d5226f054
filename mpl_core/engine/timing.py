"""How long a run will take on this machine, from a few of its own steps timed before it starts.

    timing = time_steps(cfg, dataset, split)        # seconds: a short probe on this device
    estimate = estimate_run(cfg, timing, dataset, split)
    estimate.total_s                                # set-up + steps + fine-tune steps + evaluations

The probe is train() itself, reporting every step, on the run's models, batches and device. It
trains from scratch whatever the run starts from (the same arithmetic a step, and no download),
evaluates nothing and saves nothing, and stops itself once it has timed about `seconds` of steps
past the first WARM_STEPS, whose extra time (the first kernels, allocations) counts as set-up. A
fine-tuning algorithm's fine-tune step, a supervised step of the student alone on a labeled batch,
is timed by a second, shorter probe; an evaluation by a forward pass over a few validation images.
bench/time_estimate.py compares the estimate with the real run (docs/speed.md).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch

from mpl_core.config import RunConfig
from mpl_core.data.dataset import Dataset
from mpl_core.data.splits import Split
from mpl_core.engine.algorithms import get_algorithm
from mpl_core.engine.defaults import for_device
from mpl_core.engine.inference import predict_logits
from mpl_core.engine.models import role_model
from mpl_core.engine.train import LOG_EVERY, Progress, TrainControl, pick_device, train

PROBE_S = 4.0  # seconds of main-phase steps a probe times (past the warm-up): a step's time varies by 5-10%
FINETUNE_PROBE_S = 1.0  # ... and of fine-tune steps: a few percent of a run (MPL: 100 of 700 steps, each ~1/10)
MIN_TIMED_STEPS = 3  # a probe times at least this many steps, however slow
MAX_STEPS = 200  # ... and at most this many past the warm-up, however quick
WARM_STEPS = 2  # the first steps run slower (kernels chosen, memory allocated): their excess is set-up
EVAL_IMAGES = 256  # images of the timed evaluation pass


@dataclass(frozen=True)
class StepTiming:
    """What a probe measured: seconds of each part of a run on this machine."""
    set_up_s: float  # from train()'s start to its first step, plus the first steps' warm-up
    step_s: float  # seconds a main-phase step
    finetune_step_s: float  # seconds a fine-tune step; 0 where the algorithm does not fine-tune
    eval_image_s: float  # seconds an image of an evaluation pass of the student
    teacher_eval_image_s: float  # ... of the teacher; 0 without one
    steps: int  # main-phase steps timed (past the warm-up)
    device: str  # where the probe ran (train.device_label)
    probe_s: float = 0.0  # the probe's own wall time


@dataclass(frozen=True)
class RunEstimate:
    """A run's expected wall time, in parts (seconds)."""
    set_up_s: float
    steps_s: float  # the main phase's steps
    finetune_s: float  # the fine-tune phase's steps
    eval_s: float  # validation passes as the run goes, and the final validation and test passes

    @property
    def total_s(self) -> float:
        return self.set_up_s + self.steps_s + self.finetune_s + self.eval_s


def time_steps(cfg: RunConfig, dataset: Dataset, split: Split, *, seconds: float | None = None,
               control: TrainControl | None = None) -> StepTiming:
    """Time a few steps of cfg's run on dataset and split here (see the module's docstring): about
    seconds (None: PROBE_S) + FINETUNE_PROBE_S + set-ups. control: its stop flag ends the probe early
    (a job that starts meanwhile); its threads as a job's."""
    t0, seconds = time.perf_counter(), PROBE_S if seconds is None else seconds
    quiet = dataclasses.replace(split, val=split.val[:0])  # no evaluation inside the probes ...
    bare = dataclasses.replace(dataset, test=None)  # ... nor at their end
    probe = probe_config(cfg, dataset.image_size)
    main = _timed_phase(probe, bare, quiet, seconds, control)
    if control is not None and control.stop.is_set():  # cut short: what was timed, nothing more
        return StepTiming(main.set_up_s, main.step_s, 0.0, 0.0, 0.0, main.steps, main.device)
    finetune_s = 0.0
    if get_algorithm(cfg.algorithm.name).finetune and cfg.train.finetune_steps > 0:
        finetune_s = _timed_phase(finetune_probe_config(probe), bare, quiet, FINETUNE_PROBE_S, control).step_s
    device, pool = pick_device(cfg.train.device), split.val if len(split.val) else split.labeled
    student = main.models.get("ema", main.models["student"])
    evals = [eval_image_seconds(m, dataset, pool, device, cfg.train.amp) if m is not None else 0.0
             for m in (student, main.models.get("teacher"))]
    return StepTiming(main.set_up_s, main.step_s, finetune_s, evals[0], evals[1], main.steps, main.device,
                      time.perf_counter() - t0)


def probe_config(cfg: RunConfig, image_size: int) -> RunConfig:
    """cfg as a probe trains it: the models "auto" and the weights would give at this image size,
    from scratch; no evaluation or checkpoint; room for MAX_STEPS past the warm-up."""
    sized = dataclasses.replace(cfg.model, image_size=image_size)
    teacher, student = role_model(sized, "teacher")[0], role_model(sized, "student")[0]
    model = dataclasses.replace(cfg.model, name=teacher, student=student if student != teacher else "",
                                weights="none", student_weights="", init_from="")
    t = dataclasses.replace(cfg.train, steps=WARM_STEPS + MAX_STEPS, finetune_steps=0, eval_every=0,
                            checkpoint_every=0)
    return dataclasses.replace(cfg, model=model, train=t)


def finetune_probe_config(probe: RunConfig) -> RunConfig:
    """A probe config whose main-phase step costs what probe's fine-tune step does: a supervised
    step of its student on a labeled batch (weak view, no mixup, no EMA)."""
    student = probe.model.student or probe.model.name
    return dataclasses.replace(
        probe, model=dataclasses.replace(probe.model, name=student, student=""),
        algorithm=dataclasses.replace(probe.algorithm, name="supervised", mixup=False, labeled_view="weak"),
        train=dataclasses.replace(probe.train, ema_decay=0.0))


class _Phase(NamedTuple):
    set_up_s: float
    step_s: float  # nan where nothing was timed (stopped from outside)
    steps: int  # steps timed
    models: dict  # the probe's trained models (TrainResult.models)
    device: str


def _timed_phase(probe: RunConfig, dataset: Dataset, split: Split, seconds: float,
                 control: TrainControl | None) -> _Phase:
    """probe's main phase, stopped once `seconds` of steps past WARM_STEPS are timed (at least
    MIN_TIMED_STEPS), or when control's stop flag is set."""
    own = TrainControl(threads=control.threads if control else None)
    marks: dict[int, float] = {}  # step -> time.perf_counter() at its end
    device = [""]

    def on_progress(p: Progress) -> None:
        if control is not None and control.stop.is_set():
            own.stop.set()
        if p.phase != "train":
            return
        marks[p.step], device[0] = time.perf_counter(), p.device
        past = p.step - WARM_STEPS
        if past >= MIN_TIMED_STEPS and (marks[p.step] - marks[WARM_STEPS] >= seconds or past >= MAX_STEPS):
            own.stop.set()

    t0 = time.perf_counter()
    result = train(probe, dataset, split, on_progress=on_progress, control=own, log_every=1)
    last = max(marks, default=0)
    if last <= WARM_STEPS:
        return _Phase(time.perf_counter() - t0, float("nan"), 0, result.models, device[0])
    step_s = (marks[last] - marks[WARM_STEPS]) / (last - WARM_STEPS)
    set_up = max(0.0, marks[WARM_STEPS] - t0 - WARM_STEPS * step_s)
    return _Phase(set_up, step_s, last - WARM_STEPS, result.models, device[0])


def eval_image_seconds(model: torch.nn.Module, dataset: Dataset, pool: torch.Tensor, device: torch.device,
                       amp: bool) -> float:
    """Seconds an image of an evaluation pass takes this model: timed over up to EVAL_IMAGES of pool,
    after a first small pass (its kernels are chosen then)."""
    rows = pool[:EVAL_IMAGES]
    if len(rows) == 0:
        return 0.0
    images = dataset.train.images
    predict_logits(model, images, device, amp=amp, indices=rows[:8])
    t0 = time.perf_counter()
    predict_logits(model, images, device, amp=amp, indices=rows)
    return (time.perf_counter() - t0) / len(rows)


def estimate_run(cfg: RunConfig, timing: StepTiming, dataset: Dataset, split: Split) -> RunEstimate:
    """cfg's run on dataset and split, at the probe's times: set-up, its steps and fine-tune steps,
    and the evaluations (the validation split at every eval_every steps, and of the student at the
    fine-tune's start and end; validation and test sets at the end) of the models train() evaluates."""
    t, algo = cfg.train, get_algorithm(cfg.algorithm.name)
    finetune_steps = t.finetune_steps if algo.finetune else 0
    val = len(split.val)
    test = len(dataset.test) if dataset.test is not None and bool((dataset.test.labels >= 0).all()) else 0
    both = timing.eval_image_s + timing.teacher_eval_image_s  # a pass evaluates the student and any teacher
    passes = eval_passes(t.steps, t.eval_every) + eval_passes(finetune_steps, t.eval_every)
    eval_s = passes * val * both + (val + test) * both + (2 * val * timing.eval_image_s if finetune_steps else 0.0)
    return RunEstimate(timing.set_up_s, t.steps * timing.step_s, finetune_steps * timing.finetune_step_s, eval_s)


def eval_passes(steps: int, eval_every: int) -> int:
    """How many validation passes a phase of `steps` makes: at the log steps (every LOG_EVERY) that
    are multiples of eval_every, and at its last step."""
    if not eval_every or steps <= 0:
        return 0
    every = math.lcm(LOG_EVERY, eval_every)
    return steps // every + (1 if steps % every else 0)


def timing_key(cfg: RunConfig, image_size: int) -> tuple:
    """What sets the time of cfg's steps on data of this image size: two configs with the same key
    step alike, whatever their steps, seeds, rates or start weights."""
    probe = probe_config(for_device(cfg, pick_device(cfg.train.device)), image_size)
    m, a, t = probe.model, probe.algorithm, probe.train
    return (image_size, m.name, m.student, m.width if "cnn" in (m.name, m.student) else 0, a.name, a.view_batches,
            a.mixup, a.labeled_view, t.batch_size, t.mu, t.amp, t.device, t.compile)
