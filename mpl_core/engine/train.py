"""The training loop: one plain loop, a progress hook and a stop/pause control.

    result = train(cfg, dataset, split, out_dir="runs/x", on_progress=print)

Runs the chosen algorithm for `cfg.train.steps` steps (MPL then fine-tunes the student on the
labeled data), evaluates on the validation split as it goes, checkpoints every
`checkpoint_every` steps and resumes from the newest checkpoint in out_dir.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from mpl_core.config import ModelConfig, RunConfig
from mpl_core.data.dataset import Dataset, channel_stats
from mpl_core.data.splits import Split
from mpl_core.engine import checkpoint as ckpt
from mpl_core.engine import distributed as dist_
from mpl_core.engine.algorithms import SINGLE_MODEL_STEPS, Batch, FeedbackState, Learner, mpl_step, supervised_step
from mpl_core.engine.augment import make_batch
from mpl_core.engine.ema import ModelEMA
from mpl_core.engine.inference import accuracy, autocast_for, bf16_autocast_applies
from mpl_core.engine.models import build_model, resolve_model_name
from mpl_core.engine.sampling import IndexSampler, to_device
from mpl_core.errors import MPLStudioError

LOG_EVERY = 10  # steps between progress reports (each costs one host sync)


# DDP's switch for "do not broadcast buffers before every forward" was renamed in recent torch.
_NO_FORWARD_BUFFER_SYNC = ({"forward_sync_buffers": False}
                           if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                           else {"broadcast_buffers": False})


class TrainingDiverged(MPLStudioError):
    """A loss became NaN or infinite."""


@dataclass
class TrainControl:
    """Stop and pause flags another thread may set; the loop checks them between steps."""
    stop: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=lambda: _set_event())  # cleared = paused

    def wait_if_paused(self) -> None:
        while not self.resume.wait(0.1):
            if self.stop.is_set():
                return


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
    history: list[dict] = field(default_factory=list)  # one dict of floats per logged step
    models: dict[str, nn.Module] = field(default_factory=dict)  # the trained student, teacher, ema (on the device)


@dataclass
class _State:
    step: int
    student: Learner
    teacher: Learner | None
    ema: ModelEMA | None
    feedback: FeedbackState
    index_gen: torch.Generator  # CPU: which samples go in each batch
    aug_gen: torch.Generator  # on the device: augmentation choices
    phase: str = "train"
    finetune_step: int = 0
    best: dict = field(default_factory=dict)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MPLStudioError("a CUDA device was asked for but none is available; use --device cpu")
    return torch.device(name)


def device_label(device: torch.device, amp: bool = False) -> str:
    """e.g. "cuda (NVIDIA H100, bf16)", "cpu (2 threads)"; under torchrun "8 processes × cuda (...)".

    amp: whether the job asked for bf16 autocast; the label says bf16 only where it applies."""
    ctx = dist_.current()
    procs = f"{ctx.world_size} processes × " if ctx else ""
    bf16 = ", bf16" if bf16_autocast_applies(device, amp) else ""
    if device.type == "cuda":
        return f"{procs}cuda ({torch.cuda.get_device_name(device)}{bf16})"
    return f"{procs}cpu ({torch.get_num_threads()} threads{bf16})"


def resolve_model_config(cfg: RunConfig, dataset: Dataset, split: Split) -> ModelConfig:
    """Fill the model config from the data: classes, channels, size, normalisation."""
    pool = dataset.train.images[torch.cat([split.labeled, split.unlabeled])]
    mean, std = channel_stats(pool)
    m = dataclasses.replace(cfg.model, num_classes=dataset.num_classes, in_channels=dataset.in_channels,
                            image_size=dataset.image_size, mean=mean, std=std)
    return dataclasses.replace(m, name=resolve_model_name(m))


def _param_groups(model: nn.Module, weight_decay: float):
    """No weight decay on BatchNorm and biases (as in the official code)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _cosine_with_warmup(total: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
    return factor


def make_learner(model: nn.Module, lr: float, cfg: RunConfig, total: int, warmup: int) -> Learner:
    t = cfg.train
    opt = torch.optim.SGD(_param_groups(model, t.weight_decay), lr=lr, momentum=t.momentum, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine_with_warmup(total, warmup))
    return Learner(model, opt, sched)


def _init_state(cfg: RunConfig, model_cfg: ModelConfig, device: torch.device, rank: int = 0) -> _State:
    """Fresh models and generators. Every rank builds the same weights; each draws its own batches
    and augmentations (seeds offset by rank; rank 0's are those of a single-process run)."""
    t = cfg.train
    # Seeded weight init without touching the caller's global RNG; later draws use the generators below.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        student = build_model(model_cfg).to(device, memory_format=torch.channels_last)
        teacher = None
        if cfg.algorithm.name == "mpl":
            teacher = make_learner(build_model(model_cfg).to(device, memory_format=torch.channels_last),
                                   t.lr, cfg, t.steps, t.warmup_steps)
    offset = rank * dist_.RANK_SEED_STRIDE
    aug_gen = torch.Generator(device=device).manual_seed(t.seed + 1 + offset)
    return _State(0, make_learner(student, t.lr, cfg, t.steps, t.warmup_steps), teacher,
                  ModelEMA(student, t.ema_decay) if t.ema_decay > 0 else None, FeedbackState(),
                  torch.Generator().manual_seed(t.seed + offset), aug_gen)


def _sample_batch(state: _State, images: torch.Tensor, labels: torch.Tensor, sampler: IndexSampler,
                  cfg: RunConfig, flip: bool, with_unlabeled: bool = True) -> Batch:
    """Draw a labeled and an unlabeled batch (with replacement) and make their views."""
    t, device = cfg.train, images.device
    li = to_device(sampler.labeled(t.batch_size, state.index_gen), device)
    ui = to_device(sampler.unlabeled(t.batch_size * t.mu, state.index_gen), device) if with_unlabeled else None
    return make_batch(images, labels, li, ui, state.aug_gen, flip=flip)


def _eval_model(state: _State) -> nn.Module:
    return state.ema.model if state.ema is not None else state.student.model


# --- checkpoints ---------------------------------------------------------------------------------

def _state_tensors(state: _State) -> tuple[dict, dict]:
    tensors, meta = {}, {}
    learners = {"student": state.student, "teacher": state.teacher}
    for name, learner in learners.items():
        if learner is None:
            continue
        ckpt.flatten_state(f"{name}.model", learner.model.state_dict(), tensors, meta)
        ckpt.flatten_state(f"{name}.optimizer", learner.optimizer.state_dict(), tensors, meta)
        ckpt.flatten_state(f"{name}.scheduler", learner.scheduler.state_dict(), tensors, meta)
    if state.ema is not None:
        ckpt.flatten_state("ema.model", state.ema.model.state_dict(), tensors, meta)
    tensors["rng.index"] = state.index_gen.get_state()
    tensors["rng.augment"] = state.aug_gen.get_state()
    if state.feedback.baseline is not None:
        tensors["feedback.baseline"] = state.feedback.baseline.detach().cpu().reshape(1)
    return tensors, meta


def save_state(out_dir: Path, state: _State, cfg: RunConfig, model_cfg: ModelConfig, dataset: Dataset,
               metrics: dict, rank_rngs: list[tuple] | None = None) -> Path:
    """Write a checkpoint; rank_rngs (several processes) are every rank's generator states, saved
    so that each rank resumes its own batch and augmentation draws."""
    tensors, meta = _state_tensors(state)
    for r, (index_state, aug_state) in enumerate(rank_rngs or []):
        if r > 0:
            tensors[f"rng.rank{r}.index"], tensors[f"rng.rank{r}.augment"] = index_state, aug_state
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise TrainingDiverged(f"weights became NaN/inf ({bad[0]}); not saving over the last good checkpoint. "
                               "Lower the learning rate and resume")
    info = {"config": cfg.to_dict(), "model": dataclasses.asdict(model_cfg), "step": state.step,
            "phase": state.phase, "finetune_step": state.finetune_step, "best": state.best,
            "class_names": dataset.class_names, "dataset": dataset.name, "metrics": metrics, "state_meta": meta,
            "world_size": len(rank_rngs) if rank_rngs else 1}
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(out_dir, state.step + state.finetune_step), tensors, info)
    ckpt.prune_checkpoints(out_dir, keep=2)
    return path


def finetune_learner(model: nn.Module, cfg: RunConfig) -> Learner:
    """SGD at the constant fine-tuning learning rate."""
    learner = make_learner(model, cfg.train.finetune_lr, cfg, 1, 0)
    learner.scheduler = torch.optim.lr_scheduler.LambdaLR(learner.optimizer, lambda _: 1.0)
    return learner


def _restore(state: _State, tensors: dict, info: dict, cfg: RunConfig, rank: int = 0) -> None:
    meta = info["state_meta"]
    if info["phase"] in ("finetune", "done") and cfg.algorithm.name == "mpl":
        state.student, state.ema = finetune_learner(state.student.model, cfg), None
    for name in ("student", "teacher"):
        learner = getattr(state, name)
        if learner is None:
            continue
        learner.model.load_state_dict(ckpt.module_state(f"{name}.model", tensors))
        learner.optimizer.load_state_dict(ckpt.unflatten_state(f"{name}.optimizer", tensors, meta))
        learner.scheduler.load_state_dict(ckpt.unflatten_state(f"{name}.scheduler", tensors, meta))
    if state.ema is not None:
        state.ema.model.load_state_dict(ckpt.module_state("ema.model", tensors))
    prefix = "rng" if rank == 0 else f"rng.rank{rank}"
    if f"{prefix}.index" in tensors:
        state.index_gen.set_state(tensors[f"{prefix}.index"])
        state.aug_gen.set_state(tensors[f"{prefix}.augment"])
    else:  # saved by fewer processes: a fresh stream for this rank, still seeded
        seed = cfg.train.seed + rank * dist_.RANK_SEED_STRIDE + info["step"]
        state.index_gen.manual_seed(seed)
        state.aug_gen.manual_seed(seed + 1)
    if "feedback.baseline" in tensors:
        state.feedback.baseline = tensors["feedback.baseline"].reshape(()).to(_device_of(state))
    state.step, state.phase = info["step"], info["phase"]
    state.finetune_step, state.best = info.get("finetune_step", 0), info.get("best", {})


def _device_of(state: _State) -> torch.device:
    return next(state.student.model.parameters()).device


def load_model(path: str | Path, which: str = "student", device: str | torch.device = "cpu"):
    """(model, info) from a checkpoint; which = "student" (EMA weights if kept), "teacher"."""
    tensors, info = ckpt.load_checkpoint(path)
    model_cfg = ModelConfig(**{**info["model"], "mean": tuple(info["model"]["mean"]),
                               "std": tuple(info["model"]["std"])})
    prefix = {"student": "ema.model" if any(k.startswith("ema.model.") for k in tensors) else "student.model",
              "teacher": "teacher.model"}[which]
    if not any(k.startswith(prefix + ".") for k in tensors):
        algorithm = info["config"]["algorithm"]["name"]
        raise MPLStudioError(f"{Path(path).name} has no {which} model (algorithm {algorithm})")
    model = build_model(model_cfg)
    model.load_state_dict(ckpt.module_state(prefix, tensors))
    return model.to(device).eval(), info


# --- the loop ------------------------------------------------------------------------------------

def train(cfg: RunConfig, dataset: Dataset, split: Split, *, out_dir: str | Path | None = None,
          on_progress: Callable[[Progress], None] | None = None, control: TrainControl | None = None,
          resume: bool = True) -> TrainResult:
    """Train as cfg says; resumes from out_dir's newest checkpoint when resume is True."""
    cfg.validate()
    control = control or TrainControl()
    ctx = dist_.current()
    device = ctx.device() if ctx else pick_device(cfg.train.device)
    model_cfg = resolve_model_config(cfg, dataset, split)
    state = _init_state(cfg, model_cfg, device, ctx.rank if ctx else 0)
    out = Path(out_dir) if out_dir else None
    saving = dist_.broadcast_object(out is not None, ctx)  # rank 0 decides; the others join its checkpoints
    resumed = _load_resume_state(out if resume else None, device, ctx)
    if resumed is not None:
        tensors, info = resumed
        _check_compatible(info, cfg)
        _restore(state, tensors, info, cfg, ctx.rank if ctx else 0)
    images = dataset.train.images.to(device)
    labels = dataset.train.labels.to(device)
    history: list[dict] = []
    run = _Run(cfg, dataset, split, device, images, labels, state, out, model_cfg, on_progress, control, history,
               ctx=ctx, saving=saving, sampler=IndexSampler.build(_shard_split(split, dataset.train.labels, ctx),
                                                                  dataset.train.labels, cfg.train.balance_classes))
    if state.phase == "train":
        run.main_phase()
    if state.phase == "finetune" and not run.stop_requested():
        run.finetune_phase()
    stopped = run.stop_requested() and state.phase != "done"
    metrics = run.final_metrics()
    path = run.checkpoint(metrics) if saving else None
    if on_progress:
        on_progress(Progress("done" if not stopped else state.phase, state.step, cfg.train.steps, metrics,
                             0.0, 0.0, device_label(device, cfg.train.amp)))
    models = {"student": state.student.model, "teacher": state.teacher.model if state.teacher else None,
              "ema": state.ema.model if state.ema else None}
    return TrainResult(state.step, stopped, metrics, path, history, {k: m for k, m in models.items() if m is not None})


def _load_resume_state(out: Path | None, device: torch.device, ctx) -> tuple[dict, dict] | None:
    """(tensors, info) of out's newest checkpoint, or None. Under torchrun rank 0 reads it and sends
    it to the others, so only rank 0 needs the output folder."""
    if ctx is None:
        path = ckpt.latest_checkpoint(out) if out else None
        return ckpt.load_checkpoint(path, device) if path else None
    path = ckpt.latest_checkpoint(out) if out and ctx.is_main else None
    return dist_.broadcast_object(ckpt.load_checkpoint(path, "cpu") if path else None, ctx)


def _shard_split(split: Split, labels: torch.Tensor, ctx) -> Split:
    """The part of the split this rank draws its batches from (the whole split in one process).

    Labeled images are dealt out class by class, so every rank sees every class it can; the
    unlabeled stream (pool + validation images) is dealt out in turn. Evaluation still uses the
    whole validation split on every rank."""
    if ctx is None:
        return split
    labeled = dist_.shard(split.labeled, ctx, keys=labels[split.labeled])
    return Split(labeled, dist_.shard(split.val, ctx) if len(split.val) >= ctx.world_size else split.val[:0],
                 dist_.shard(split.unlabeled, ctx))


def _check_compatible(info: dict, cfg: RunConfig) -> None:
    saved = info["config"]
    for section, key in (("algorithm", "name"), ("model", "name"), ("data", "dataset"), ("data", "seed")):
        if saved[section][key] != cfg.to_dict()[section][key] and not (section == "model" and cfg.model.name == "auto"):
            raise MPLStudioError(f"the checkpoint in this folder was trained with {section}.{key}="
                                 f"{saved[section][key]!r}; use another output folder or the same setting")


@dataclass
class _Run:
    cfg: RunConfig
    dataset: Dataset
    split: Split
    device: torch.device
    images: torch.Tensor
    labels: torch.Tensor
    state: _State
    out: Path | None
    model_cfg: ModelConfig
    on_progress: Callable | None
    control: TrainControl
    history: list
    ctx: dist_.DistContext | None = None  # the process group under torchrun
    saving: bool = False  # checkpoints are written (by rank 0; every rank takes part)
    sampler: IndexSampler | None = None  # draws this rank's batches
    _wrapped: dict = field(default_factory=dict)  # (id(module), by hand) -> its DDP and/or compiled wrapper
    _stop: bool = False  # the ranks agreed to stop

    def step_once(self, step: int) -> dict:
        s, a = self.state, self.cfg.algorithm
        batch = _sample_batch(s, self.images, self.labels, self.sampler, self.cfg, self.dataset.flip,
                              with_unlabeled=a.name != "supervised")
        student = self._fast(s.student)
        with autocast_for(self.device, self.cfg.train.amp), self._compile_fallback():
            if a.name == "mpl":
                mean_across = (lambda t: dist_.mean(t, self.ctx)) if self.ctx else None
                metrics = mpl_step(self._fast(s.teacher), student, batch, a, step, s.feedback, mean_across)
            else:
                metrics = SINGLE_MODEL_STEPS[a.name](student, batch, a, step)
        self._sync_buffers()
        if s.ema is not None:
            s.ema.update(s.student.model)
        return metrics

    def _fast(self, learner: Learner | None) -> Learner | None:
        """The learner the step runs: its model wrapped in DDP (several processes) and compiled
        (cfg.train.compile). The wrappers share the parameters and the optimizer; checkpoints, EMA
        and evaluation use the plain module."""
        if learner is None or (self.ctx is None and not self.cfg.train.compile):
            return learner
        by_hand = self.ctx is not None and self._several_forwards()
        key = (id(learner.model), by_hand)
        if key not in self._wrapped:
            model = learner.model
            if self.ctx is not None and not by_hand:
                # Buffers are synced once per step by _sync_buffers rather than before every forward.
                ids = [self.device.index] if self.device.type == "cuda" else None
                model = DistributedDataParallel(model, device_ids=ids, **_NO_FORWARD_BUFFER_SYNC)
            if self.cfg.train.compile:
                if not self._wrapped:
                    # Dynamo caches graphs per code object, shared by every model of a class, and past
                    # its recompile limit it silently runs eagerly: after a few runs in one app
                    # process a compiled run would no longer be. Each run starts from a fresh cache
                    # (one job at a time; compiled kernels stay cached on disk).
                    torch._dynamo.reset()
                model = torch.compile(model, dynamic=False)  # a graph per batch shape: three per MPL step
            self._wrapped[key] = model
        if by_hand:  # DDP wants one forward per backward: average the gradients after it instead
            return _GradMeanLearner(self._wrapped[key], learner.optimizer, learner.scheduler, self.ctx)
        return dataclasses.replace(learner, model=self._wrapped[key])

    def _several_forwards(self) -> bool:
        """Whether a step calls a model twice with a graph (MPL's separate view batches, main phase)."""
        return (self.cfg.algorithm.name == "mpl" and self.cfg.algorithm.view_batches == "separate"
                and self.state.phase == "train")

    def _compile_fallback(self):
        """Where torch.compile cannot compile (no C++ compiler, an unsupported op), run eagerly."""
        if not self.cfg.train.compile:
            return contextlib.nullcontext()
        import torch._dynamo.config
        return torch._dynamo.config.patch(suppress_errors=True)

    def _sync_buffers(self) -> None:
        if self.ctx is not None:
            for learner in (self.state.student, self.state.teacher):
                if learner is not None:
                    dist_.sync_buffers(learner.model, self.ctx)

    def stop_requested(self) -> bool:
        """Alone: the control's flag. Under torchrun: what the ranks agreed at the last log step, so
        that no rank leaves the loop while the others wait for it."""
        return self._stop if self.ctx else self.control.stop.is_set()

    def main_phase(self) -> None:
        s, t = self.state, self.cfg.train
        per_step = t.batch_size * (1 if self.cfg.algorithm.name == "supervised" else 1 + t.mu)
        self._loop("train", t.steps, lambda: s.step, self._advance_main, per_step)
        if s.step >= t.steps:
            s.phase = "finetune" if self.cfg.algorithm.name == "mpl" and t.finetune_steps > 0 else "done"
            if s.phase == "finetune":
                self._start_finetune()

    def _advance_main(self) -> dict:
        metrics = self.step_once(self.state.step)
        self.state.step += 1
        return metrics

    def _start_finetune(self) -> None:
        """Fine-tune the (EMA) student on labeled data with a small constant learning rate."""
        s = self.state
        if s.ema is not None:
            s.student.model.load_state_dict(s.ema.model.state_dict())
            s.ema = None
        self.state.best["val_acc_before_finetune"] = self.val_acc(s.student.model)
        s.student = finetune_learner(s.student.model, self.cfg)

    def finetune_phase(self) -> None:
        s, t = self.state, self.cfg.train
        self._loop("finetune", t.finetune_steps, lambda: s.finetune_step, self._advance_finetune, t.batch_size)
        if s.finetune_step >= t.finetune_steps:
            s.phase = "done"

    def _advance_finetune(self) -> dict:
        s = self.state
        batch = _sample_batch(s, self.images, self.labels, self.sampler, self.cfg, self.dataset.flip,
                              with_unlabeled=False)
        with autocast_for(self.device, self.cfg.train.amp), self._compile_fallback():
            metrics = supervised_step(self._fast(s.student), batch, self.cfg.algorithm, s.finetune_step)
        self._sync_buffers()
        s.finetune_step += 1
        return {"finetune_loss": metrics["loss"]}

    def _loop(self, phase: str, total: int, done: Callable[[], int], advance: Callable[[], dict],
              images_per_step: int) -> None:
        t = self.cfg.train
        start_step, t0 = done(), time.perf_counter()
        images_per_step *= self.ctx.world_size if self.ctx else 1
        while done() < total:
            if self.ctx is None:
                self.control.wait_if_paused()
            if self.stop_requested():
                break
            metrics = advance()
            n = done()
            if n % LOG_EVERY == 0 or n == total:
                row = self._log_row(metrics)
                if t.eval_every and (n % t.eval_every == 0 or n == total):
                    row.update(self.val_metrics())
                rate = (n - start_step) * images_per_step / max(1e-9, time.perf_counter() - t0)
                eta = (total - n) * images_per_step / max(rate, 1e-9)
                row.update(step=n, images_per_s=rate)
                self.history.append({"phase": phase, **row})
                if self.on_progress:
                    label = device_label(self.device, self.cfg.train.amp)
                    self.on_progress(Progress(phase, n, total, row, rate, eta, label))
            if self.saving and t.checkpoint_every and n % t.checkpoint_every == 0 and n < total:
                self.checkpoint({})

    def _log_row(self, metrics: dict) -> dict:
        """The logged floats; under torchrun averaged over ranks, with the ranks' stop flags."""
        if self.ctx is None:
            return _to_floats(metrics)
        keys = sorted(metrics)
        values = [torch.as_tensor(metrics[k], dtype=torch.float32, device=self.device).reshape(()) for k in keys]
        stop = torch.tensor(1.0 if self.control.stop.is_set() else 0.0, device=self.device)
        mean = dist_.mean(torch.stack(values + [stop]), self.ctx).tolist()
        self._stop = self._stop or mean[-1] > 0
        return _to_floats(dict(zip(keys, mean[:-1])))

    def val_acc(self, model: nn.Module) -> float:
        val = self.split.val
        if len(val) == 0:
            return float("nan")
        return accuracy(model, self.dataset.train.images[val], self.dataset.train.labels[val], self.device,
                        amp=self.cfg.train.amp)

    def current_model(self) -> nn.Module:
        """The model a user gets now: the EMA student while training, the fine-tuned one after."""
        return _eval_model(self.state) if self.state.phase == "train" else self.state.student.model

    def val_metrics(self) -> dict:
        s = self.state
        out = {"val_acc": self.val_acc(self.current_model())}
        if s.teacher is not None:
            out["teacher_val_acc"] = self.val_acc(s.teacher.model)
        return out

    def final_metrics(self) -> dict:
        s, test = self.state, self.dataset.test
        model = self.current_model()
        m = {"val_acc": self.val_acc(model), **s.best}
        if test is not None and (test.labels >= 0).all():
            m["test_acc"] = accuracy(model, test.images, test.labels, self.device, amp=self.cfg.train.amp)
            if s.teacher is not None:
                m["teacher_test_acc"] = accuracy(s.teacher.model, test.images, test.labels, self.device,
                                                 amp=self.cfg.train.amp)
        return m

    def checkpoint(self, metrics: dict) -> Path | None:
        """Save (rank 0 writes; under torchrun every rank must call this, to send its generators)."""
        if self.ctx is None:
            return save_state(self.out, self.state, self.cfg, self.model_cfg, self.dataset, metrics)
        rngs = dist_.gather_objects((self.state.index_gen.get_state(), self.state.aug_gen.get_state()), self.ctx)
        if not self.ctx.is_main or self.out is None:
            return None
        return save_state(self.out, self.state, self.cfg, self.model_cfg, self.dataset, metrics, rngs)


@dataclass
class _GradMeanLearner(Learner):
    """A learner whose update averages the gradients over the ranks between backward and step."""
    ctx: dist_.DistContext | None = None

    def update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        dist_.mean_grads(self.model, self.ctx)
        self.optimizer.step()
        self.scheduler.step()


def _to_floats(metrics: dict) -> dict:
    """The loop's one host sync per log: check every loss is finite."""
    row = {k: float(v) for k, v in metrics.items()}
    bad = [k for k, v in row.items() if not math.isfinite(v)]
    if bad:
        raise TrainingDiverged(f"{bad[0]} became {row[bad[0]]} — training stopped; the last good checkpoint "
                               "is kept. Lower the learning rate or the unlabeled weight and resume")
    return row
