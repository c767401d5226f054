"""The training loop: one plain loop per phase, a progress hook and a stop/pause control.

    result = train(cfg, dataset, split, out_dir="runs/x", on_progress=print)

Runs the chosen algorithm for `cfg.train.steps` steps (MPL then fine-tunes the student on the
labeled data), evaluates on the validation split as it goes, checkpoints every
`checkpoint_every` steps and resumes from the newest checkpoint in out_dir. Elsewhere: what a
step computes and what each algorithm needs (algorithms.py), the run's state and checkpoints
(state.py), DDP and torch.compile (parallel.py), accuracies (evaluate.py).
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from mpl_core.config import ModelConfig, RunConfig, TrainConfig
from mpl_core.data.dataset import Dataset, channel_stats
from mpl_core.data.splits import Split
from mpl_core.engine import distributed as dist_
from mpl_core.engine.algorithms import Algorithm, Batch, get_algorithm, supervised_step
from mpl_core.engine.augment import make_batch
from mpl_core.engine.defaults import for_device, with_sound_bf16
from mpl_core.engine.evaluate import Evaluator
from mpl_core.engine.inference import bf16_autocast_applies
from mpl_core.engine.models import check_input_size, resolve_model_name
from mpl_core.engine.parallel import ModelWrappers, shard_split
from mpl_core.engine.sampling import IndexSampler, to_device
from mpl_core.engine.state import (
    Checkpointer,
    TrainingDiverged,
    TrainState,
    check_compatible,
    finetune_learner,
    init_state,
    load_resume_state,
    read_start,
    restore_state,
)
from mpl_core.errors import MPLStudioError

LOG_EVERY = 10  # steps between progress reports (each costs one host sync)


@dataclass
class TrainControl:
    """Stop and pause flags another thread may set; the loop checks them between steps."""
    stop: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=lambda: _set_event())  # cleared = paused
    # The CPU threads the run should use now, asked between steps (None: as set at the start). The
    # app lets a job take every core while no one is using its pages, and all but one otherwise.
    threads: Callable[[], int] | None = None
    # Seconds after train() starts at which it stops stepping, as if stopped (None: no limit): runs of
    # several algorithms on the same wall-time budget (bench/accuracy.py --budget-seconds).
    deadline_s: float | None = None

    def wait_if_paused(self) -> None:
        while not self.resume.wait(0.1):
            if self.stop.is_set():
                return

    def apply_threads(self) -> None:
        """Called from the training thread: under OpenMP a thread's team size is its own setting
        (torch also keeps the number as the default for threads that start later)."""
        wanted = self.threads() if self.threads else 0
        if wanted > 0 and wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)


def _set_event() -> threading.Event:
    e = threading.Event()
    e.set()
    return e


@dataclass
class Progress:
    phase: str  # "train", "finetune" or "done"
    step: int  # steps done in this phase
    total: int  # steps in this phase
    metrics: dict[str, float]  # latest losses, h, accuracies (val_* when evaluated)
    images_per_s: float
    eta_s: float
    device: str


@dataclass
class TrainResult:
    step: int
    stopped: bool  # True if the stop flag ended training early
    metrics: dict[str, float]  # final accuracies: test_acc, val_acc, teacher_test_acc, ...
    checkpoint: Path | None
    train_s: float = 0.0  # from train()'s start to its last step: set-up included, the final evaluation not
    finetune_step: int = 0  # fine-tune steps done (MPL), beside `step` of the main phase
    history: list[dict] = field(default_factory=list)  # one dict of floats per logged step
    models: dict[str, nn.Module] = field(default_factory=dict)  # the trained student, teacher, ema (on the device)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MPLStudioError("a CUDA device was asked for but none is available; use --device cpu")
    return torch.device(name)


def device_label(device: torch.device, amp: bool = False, views: str = "") -> str:
    """e.g. "cuda (NVIDIA H100, bf16, joint view batches)", "cpu (2 threads, fp32)"; under torchrun
    "8 processes × cuda (...)".

    amp: whether the job asked for bf16 autocast; the label says bf16 only where it applies.
    views: MPL's view batching, where it matters (engine/defaults.py chooses it by device)."""
    ctx = dist_.current()
    procs = f"{ctx.world_size} processes × " if ctx else ""
    how = ", bf16" if bf16_autocast_applies(device, amp) else ", fp32"
    how += f", {views} view batches" if views else ""
    if device.type == "cuda":
        return f"{procs}cuda ({torch.cuda.get_device_name(device)}{how})"
    threads = torch.get_num_threads()
    return f"{procs}cpu ({threads} thread{'s' if threads != 1 else ''}{how})"


def resolve_model_config(cfg: RunConfig, dataset: Dataset, split: Split, saved: dict | None = None) -> ModelConfig:
    """Fill the model config from the data: classes, channels, size, normalisation. saved: the model config
    of the checkpoint a run resumes from, whose model "auto" keeps (what "auto" means has changed before)."""
    everyone = torch.cat([split.labeled, split.unlabeled])
    sample = everyone[torch.linspace(0, len(everyone) - 1, min(len(everyone), 10000)).long()]
    mean, std = channel_stats(dataset.train.images[sample])  # a spread sample: a cached pool stays on disk
    m = dataclasses.replace(cfg.model, num_classes=dataset.num_classes, in_channels=dataset.in_channels,
                            image_size=dataset.image_size, mean=mean, std=std)
    if not get_algorithm(cfg.algorithm.name).teacher:
        m = dataclasses.replace(m, student="", student_weights="")  # one model: the one named
    kept = (saved or {}).get("name") if m.name == "auto" else None
    m = dataclasses.replace(m, name=kept or resolve_model_name(m))
    check_input_size(m)
    return m


# --- the loop ------------------------------------------------------------------------------------

def train(cfg: RunConfig, dataset: Dataset, split: Split, *, out_dir: str | Path | None = None,
          on_progress: Callable[[Progress], None] | None = None, control: TrainControl | None = None,
          resume: bool = True, log_every: int = LOG_EVERY) -> TrainResult:
    """Train as cfg says; resumes from out_dir's newest checkpoint when resume is True. log_every: steps
    between progress reports (a timing probe, engine/timing.py, reports every step)."""
    cfg.validate()
    t_start = time.perf_counter()
    algo, ctx = get_algorithm(cfg.algorithm.name), dist_.current()
    rank, device = (ctx.rank, ctx.device()) if ctx else (0, pick_device(cfg.train.device))
    out = Path(out_dir) if out_dir else None
    resumed = load_resume_state(out if resume else None, device, ctx)
    # "auto" settings made concrete (a resumed run keeps its own): the checkpoints record what ran
    cfg = for_device(cfg, device, resumed[1]["config"] if resumed is not None else None)
    model_cfg = resolve_model_config(cfg, dataset, split, resumed[1]["model"] if resumed is not None else None)
    cfg = with_sound_bf16(cfg, model_cfg, device, ("teacher", "student") if algo.teacher else ("student",))
    t = cfg.train
    saver = Checkpointer(out, cfg, model_cfg, dataset, ctx)
    saving = dist_.broadcast_object(out is not None, ctx)  # rank 0 decides; the others join its checkpoints
    if resumed is not None:
        check_compatible(resumed[1], cfg, model_cfg)
    # Pretrained weights only for a fresh run: a checkpoint brings its own (and needs no network).
    state = init_state(cfg, model_cfg, device, rank, pretrained=resumed is None,
                       start=_student_start(model_cfg, ctx) if resumed is None else None)
    if resumed is not None:
        restore_state(state, *resumed, cfg, rank)
    data = _Data.build(dataset, split, device, ctx, t)
    models, evaluator = ModelWrappers(ctx, device, t.compile), Evaluator(dataset, split.val, device, t.amp)
    stop = _Stop.for_run(control or TrainControl(), ctx, t_start)
    views = cfg.algorithm.view_batches if algo.teacher else ""  # shown in the device label
    log = _Log(t, device, ctx.world_size if ctx else 1, evaluator, stop, on_progress, views, t_start, log_every)

    if state.phase == "train":
        log.start_phase("train", state.step, t.steps, t.batch_size * (1 + t.mu if algo.unlabeled else 1))
        while state.step < t.steps and not stop.before_step():
            batch = get_batch(state, data, t, algo.unlabeled, cfg.algorithm.labeled_view, cfg.algorithm.mixup)
            metrics = main_step(state, batch, algo, cfg, models)
            state.step += 1
            log.after_step(state, state.step, metrics)
            if saving and _checkpoint_due(t, state.step, t.steps):
                saver.save(state, {})
        if state.step >= t.steps:
            _end_main_phase(state, algo, cfg, evaluator)

    if state.phase == "finetune" and not stop.requested():
        log.start_phase("finetune", state.finetune_step, t.finetune_steps, t.batch_size)
        while state.finetune_step < t.finetune_steps and not stop.before_step():
            metrics = finetune_step(state, get_batch(state, data, t, with_unlabeled=False), cfg, models)
            state.finetune_step += 1
            log.after_step(state, state.finetune_step, metrics)
            if saving and _checkpoint_due(t, state.finetune_step, t.finetune_steps):
                saver.save(state, {})
        if state.finetune_step >= t.finetune_steps:
            end_finetune(state, evaluator, ctx)
            state.phase = "done"

    stopped, train_s = stop.requested() and state.phase != "done", time.perf_counter() - t_start
    metrics = evaluator.final_metrics(state)
    path = saver.save(state, metrics) if saving else None
    if on_progress:
        on_progress(_last_progress(state, stopped, t, metrics, device_label(device, t.amp, views)))
    return TrainResult(state.step, stopped, metrics, path, train_s, state.finetune_step, log.history,
                       _trained_models(state))


# --- the loop's helpers --------------------------------------------------------------------------

def _last_progress(state: TrainState, stopped: bool, t: TrainConfig, metrics: dict, device: str) -> Progress:
    """The run's end for the progress hook: its numbers only (not hands_back or finetune_kept)."""
    numbers = {k: v for k, v in metrics.items() if isinstance(v, float)}
    return Progress("done" if not stopped else state.phase, state.step, t.steps, numbers, 0.0, 0.0, device)


def _student_start(model_cfg: ModelConfig, ctx) -> tuple[dict, dict] | None:
    """The earlier run's student or teacher (init_role) that init_from names, read by rank 0 and sent
    to the others (as a checkpoint to resume is): only rank 0 needs the file."""
    if not model_cfg.init_from:
        return None
    if ctx is None:
        return read_start(model_cfg.init_from, model_cfg.init_role)
    return dist_.broadcast_object(read_start(model_cfg.init_from, model_cfg.init_role) if ctx.is_main else None,
                                  ctx)


@dataclass(frozen=True)
class _Data:
    """The training images and labels on the device, and the sampler of this rank's share of them."""
    images: torch.Tensor
    labels: torch.Tensor
    sampler: IndexSampler
    flip: bool  # horizontal flips are a valid augmentation of this dataset

    @classmethod
    def build(cls, dataset: Dataset, split: Split, device: torch.device, ctx: dist_.DistContext | None,
              t: TrainConfig) -> _Data:
        sampler = IndexSampler.build(shard_split(split, dataset.train.labels, ctx), dataset.train.labels,
                                     t.balance_classes, t.trusted_share)
        images = dataset.train.images
        if fits_on(device, images):
            images = images.to(device)
        return cls(images, dataset.train.labels.to(images.device), sampler, dataset.flip)


def fits_on(device: torch.device, images: torch.Tensor, share: float = 0.5) -> bool:
    """Whether the pool can sit on the device: on a GPU, at most `share` of its free memory; a CPU
    reads a cached pool through its memory map (the kernel keeps the pages it can)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() <= share * free


def get_batch(state: TrainState, data: _Data, t: TrainConfig, with_unlabeled: bool = True,
              labeled_view: str = "weak", mixup: bool = False) -> Batch:
    """Draw a labeled and an unlabeled batch (with replacement) and make their views on the device."""
    device = state.aug_gen.device
    li = data.sampler.labeled(t.batch_size, state.index_gen)
    ui = data.sampler.unlabeled(t.batch_size * t.mu, state.index_gen) if with_unlabeled else None
    if data.images.device.type == device.type:
        li, ui = to_device(li, device), to_device(ui, device) if ui is not None else None
        return make_batch(data.images, data.labels, li, ui, state.aug_gen, flip=data.flip, labeled_view=labeled_view,
                          mixup=mixup)
    # A pool too large for the GPU stays on the host: gather the step's images there, send them over.
    rows = li if ui is None else torch.cat([li, ui])
    images = data.images[rows].pin_memory().to(device, non_blocking=True)
    labels = data.labels[rows].to(device, non_blocking=True)
    at = torch.arange(len(rows), device=device)
    return make_batch(images, labels, at[:len(li)], None if ui is None else at[len(li):], state.aug_gen,
                      flip=data.flip, labeled_view=labeled_view, mixup=mixup)


def main_step(state: TrainState, batch: Batch, algo: Algorithm, cfg: RunConfig, models: ModelWrappers) -> dict:
    """One step of the algorithm at state.step; then the ranks' buffers agree and the EMA follows."""
    a = cfg.algorithm
    several = algo.several_forwards(a)
    student = models.wrap(state.student, several)
    with models.step_context(cfg.train.amp):
        if algo.teacher:
            metrics = algo.step(models.wrap(state.teacher, several), student, batch, a, state.step, state.feedback,
                                models.mean_across())
        else:
            metrics = algo.step(student, batch, a, state.step)
    models.sync_buffers(state.student, state.teacher)
    if state.ema is not None:
        state.ema.update(state.student.model, state.step)
    return metrics


def _end_main_phase(state: TrainState, algo: Algorithm, cfg: RunConfig, evaluator: Evaluator) -> None:
    """On to the fine-tune where the algorithm has one (and steps for it), else done."""
    state.phase = "finetune" if algo.finetune and cfg.train.finetune_steps > 0 else "done"
    if state.phase == "finetune":
        start_finetune(state, cfg, evaluator)


def start_finetune(state: TrainState, cfg: RunConfig, evaluator: Evaluator) -> None:
    """Fine-tune the (EMA) student on labeled data with a small constant learning rate."""
    if state.ema is not None:
        state.student.model.load_state_dict(state.ema.model.state_dict())
        state.ema = None
    state.best["val_acc_before_finetune"] = evaluator.val_acc(state.student.model)
    state.before_finetune = {k: v.detach().to("cpu", copy=True) for k, v in state.student.model.state_dict().items()}
    state.student = finetune_learner(state.student.model, cfg)


def end_finetune(state: TrainState, evaluator: Evaluator, ctx: dist_.DistContext | None = None) -> None:
    """Keep the fine-tune only where it did not lower the student's validation accuracy. The paper
    fine-tunes on thousands of labels; on ten a class it overfits them (docs/results.md, "Students and
    teachers": -2.0 points on quick-demo), so the student then returns to its weights before it.
    metrics: finetune_kept (True, False, or absent where it could not be judged: a run resumed during its
    fine-tune, whose weights before it are not in the checkpoint). Under torchrun rank 0 decides for all:
    each rank's bf16 evaluation may differ in the last digit, and the ranks' students must stay one."""
    before, kept = state.best.get("val_acc_before_finetune"), state.before_finetune
    state.before_finetune = None
    judged = kept is not None and before is not None and not math.isnan(before)
    better = judged and not evaluator.val_acc(state.student.model) < before
    judged, better = dist_.broadcast_object((judged, better), ctx)
    if not judged:
        return
    state.best["finetune_kept"] = better
    if not better:
        state.student.model.load_state_dict(kept)


def finetune_step(state: TrainState, batch: Batch, cfg: RunConfig, models: ModelWrappers) -> dict:
    """One supervised step of the student at state.finetune_step."""
    with models.step_context(cfg.train.amp):
        metrics = supervised_step(models.wrap(state.student), batch, cfg.algorithm, state.finetune_step)
    models.sync_buffers(state.student, state.teacher)
    return {"finetune_loss": metrics["loss"]}


def _checkpoint_due(t: TrainConfig, n: int, total: int) -> bool:
    """Every checkpoint_every steps of a phase, but not at its end: the final save (or the next
    phase's checkpoints) covers that."""
    return bool(t.checkpoint_every) and n % t.checkpoint_every == 0 and n < total


@dataclass
class _Stop:
    """Stop and pause checks between steps. Alone: the control's flags. Under torchrun: the stop the
    ranks agreed at the last log step (see _log_row), so that no rank leaves the loop while the
    others wait for it in a collective; for the same reason no rank pauses there."""
    control: TrainControl
    ctx: dist_.DistContext | None
    deadline: float | None = None  # time.perf_counter() at which to stop (control.deadline_s), alone only
    agreed: bool = False  # torchrun: some rank's stop flag was set at a log step

    @classmethod
    def for_run(cls, control: TrainControl, ctx: dist_.DistContext | None, t_start: float) -> _Stop:
        """The run's stop checks; control.deadline_s counts from t_start, for one process only."""
        if ctx is not None and control.deadline_s is not None:  # the ranks would not agree when to stop
            raise MPLStudioError("a wall-time deadline is for one process; under torchrun give steps")
        return cls(control, ctx, None if control.deadline_s is None else t_start + control.deadline_s)

    def before_step(self) -> bool:
        """Wait while paused (alone); whether the loop must stop."""
        if self.ctx is None:  # under torchrun each rank keeps its threads: ranks step in lockstep
            self.control.wait_if_paused()
            self.control.apply_threads()
        return self.requested()

    def requested(self) -> bool:
        if self.ctx:
            return self.agreed
        return self.control.stop.is_set() or (self.deadline is not None and time.perf_counter() >= self.deadline)


def _log_row(metrics: dict, stop: _Stop, device: torch.device) -> dict:
    """The logged floats; under torchrun averaged over the ranks, in one collective that also
    carries every rank's stop flag: that is where the ranks agree to stop."""
    if stop.ctx is None:
        return _to_floats(metrics)
    keys = sorted(metrics)
    values = [torch.as_tensor(metrics[k], dtype=torch.float32, device=device).reshape(()) for k in keys]
    flag = torch.tensor(1.0 if stop.control.stop.is_set() else 0.0, device=device)
    mean = dist_.mean(torch.stack(values + [flag]), stop.ctx).tolist()
    stop.agreed = stop.agreed or mean[-1] > 0
    return _to_floats(dict(zip(keys, mean[:-1])))


def _to_floats(metrics: dict) -> dict:
    """The loop's one host sync per log: check every loss is finite."""
    row = {k: float(v) for k, v in metrics.items()}
    bad = [k for k, v in row.items() if not math.isfinite(v)]
    if bad:
        raise TrainingDiverged(f"{bad[0]} became {row[bad[0]]} — training stopped; the last good checkpoint "
                               "is kept. Lower the learning rate or the unlabeled weight and resume")
    return row


@dataclass
class _Log:
    """Every `every` steps (LOG_EVERY) and at a phase's last: a row of floats (validation accuracies every
    eval_every steps) into the history and a Progress to the hook, with the images/s since the
    phase started in this call and the ETA at that rate."""
    cfg: TrainConfig
    device: torch.device
    world_size: int  # processes: each trains on its own images
    evaluator: Evaluator
    stop: _Stop
    on_progress: Callable[[Progress], None] | None
    views: str  # MPL's view batching for the device label; "" where it does not apply
    t_start: float = 0.0  # time.perf_counter() when train() began: each row's "t" counts from it
    every: int = LOG_EVERY  # steps between rows
    history: list[dict] = field(default_factory=list)
    phase: str = "train"
    start: int = 0  # the phase's step when this call began it (a resume starts past 0)
    total: int = 0  # the phase's steps
    images_per_step: int = 0  # over all processes
    t0: float = 0.0

    def start_phase(self, phase: str, start: int, total: int, images_per_step: int) -> None:
        self.phase, self.start, self.total = phase, start, total
        self.images_per_step, self.t0 = images_per_step * self.world_size, time.perf_counter()

    def after_step(self, state: TrainState, n: int, metrics: dict) -> None:
        if n % self.every and n != self.total:
            return
        row = _log_row(metrics, self.stop, self.device)
        if self.cfg.eval_every and (n % self.cfg.eval_every == 0 or n == self.total):
            row.update(self.evaluator.val_metrics(state))
        rate = (n - self.start) * self.images_per_step / max(1e-9, time.perf_counter() - self.t0)
        eta = (self.total - n) * self.images_per_step / max(rate, 1e-9)
        row.update(step=n, images_per_s=rate)
        self.history.append({"phase": self.phase, "t": time.perf_counter() - self.t_start, **row})
        if self.on_progress:
            label = device_label(self.device, self.cfg.amp, self.views)  # threads may change during a run
            self.on_progress(Progress(self.phase, n, self.total, row, rate, eta, label))


def _trained_models(state: TrainState) -> dict[str, nn.Module]:
    models = {"student": state.student.model, "teacher": state.teacher.model if state.teacher else None,
              "ema": state.ema.model if state.ema else None}
    return {k: m for k, m in models.items() if m is not None}
