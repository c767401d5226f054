"""A run's state (models, optimizers, EMA, generators, step) and its trip to and from a checkpoint.

    state = init_state(cfg, model_cfg, device)         # fresh, seeded
    restore_state(state, *load_resume_state(out, device, ctx), cfg)
    Checkpointer(out, cfg, model_cfg, dataset, ctx).save(state, metrics)
    model, info = load_model("runs/x/ckpt-0001000.safetensors")

Everything random lives in the state's own generators (never the global RNG), and every one of
them is saved, so a resumed run draws exactly what the uninterrupted one would have.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from mpl_core.config import ModelConfig, RunConfig, with_legacy_values
from mpl_core.data.dataset import Dataset
from mpl_core.engine import checkpoint as ckpt
from mpl_core.engine import distributed as dist_
from mpl_core.engine.algorithms import FeedbackState, Learner, get_algorithm
from mpl_core.engine.ema import ModelEMA
from mpl_core.engine.models import build_model, role_model
from mpl_core.errors import MPLStudioError


class TrainingDiverged(MPLStudioError):
    """A loss became NaN or infinite."""


@dataclass
class TrainState:
    """Everything a checkpoint holds; the loop changes it, step by step."""
    step: int  # main-phase steps done
    student: Learner
    teacher: Learner | None  # algorithms with a teacher (MPL) only
    ema: ModelEMA | None  # ema_decay > 0, until the fine-tune folds it into the student
    feedback: FeedbackState
    index_gen: torch.Generator  # CPU: which samples go in each batch
    aug_gen: torch.Generator  # on the device: augmentation choices
    phase: str = "train"  # "train", "finetune" or "done"
    finetune_step: int = 0
    best: dict = field(default_factory=dict)  # metrics kept from earlier phases (val_acc_before_finetune)
    # The student's weights as the fine-tune started (on the CPU), kept to return to where the fine-tune
    # lowers validation accuracy (train.end_finetune); not checkpointed: a run resumed mid-fine-tune keeps it
    before_finetune: dict | None = None


# --- learners ------------------------------------------------------------------------------------

def _param_groups(model: nn.Module, weight_decay: float, lr: float, body_scale: float):
    """No weight decay on BatchNorm and biases (as in the official code); a pretrained body at
    body_scale times the learning rate of its new head (see engine/backbones.py)."""
    head = model.head_parameters() if getattr(model, "pretrained_body", False) else None
    groups: dict[tuple[bool, bool], list] = {}
    for p in model.parameters():
        groups.setdefault((p.ndim > 1, head is not None and id(p) not in head), []).append(p)
    return [{"params": groups.get((decay, body), []), "weight_decay": weight_decay if decay else 0.0,
             "lr": lr * (body_scale if body else 1.0)}
            for decay, body in ((True, False), (False, False), (True, True), (False, True))
            if (decay, body) in groups or not body]


def _cosine_with_warmup(total: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.0, 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
    return factor


def make_learner(model: nn.Module, lr: float, cfg: RunConfig, total: int, warmup: int) -> Learner:
    """Nesterov SGD with a linear warm-up then a cosine decay to zero at `total` steps."""
    t = cfg.train
    opt = torch.optim.SGD(_param_groups(model, t.weight_decay, lr, t.pretrained_lr_scale), lr=lr,
                          momentum=t.momentum, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine_with_warmup(total, warmup))
    return Learner(model, opt, sched)


def finetune_learner(model: nn.Module, cfg: RunConfig) -> Learner:
    """SGD at the constant fine-tuning learning rate."""
    learner = make_learner(model, cfg.train.finetune_lr, cfg, 1, 0)
    learner.scheduler = torch.optim.lr_scheduler.LambdaLR(learner.optimizer, lambda _: 1.0)
    return learner


# --- fresh ---------------------------------------------------------------------------------------

def init_state(cfg: RunConfig, model_cfg: ModelConfig, device: torch.device, rank: int = 0,
               pretrained: bool = True, start: tuple[dict, dict] | None = None) -> TrainState:
    """Fresh models and generators. Every rank builds the same weights; each draws its own batches
    and augmentations (seeds offset by rank; rank 0's are those of a single-process run).
    pretrained: load torchvision models' weights (False when a checkpoint will be restored).
    start: an earlier run's model (read_start) that this run's student starts from."""
    t = cfg.train
    # Seeded weight init without touching the caller's global RNG; later draws use the generators below.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(t.seed)
        # A student started from an earlier run needs no downloaded weights under its own.
        student = build_model(model_cfg, role="student", pretrained=pretrained and start is None)
        if start is not None:
            load_student(student, start)
        student = student.to(device, memory_format=torch.channels_last)
        teacher = None
        if get_algorithm(cfg.algorithm.name).teacher:
            model = build_model(model_cfg, role="teacher", pretrained=pretrained)
            teacher = make_learner(model.to(device, memory_format=torch.channels_last),
                                   t.lr, cfg, t.steps, t.warmup_steps)
    offset = rank * dist_.RANK_SEED_STRIDE
    aug_gen = torch.Generator(device=device).manual_seed(t.seed + 1 + offset)
    return TrainState(0, make_learner(student, t.lr, cfg, t.steps, t.warmup_steps), teacher,
                      ModelEMA(student, t.ema_decay) if t.ema_decay > 0 else None, FeedbackState(),
                      torch.Generator().manual_seed(t.seed + offset), aug_gen)


# --- saved ---------------------------------------------------------------------------------------

def state_tensors(state: TrainState) -> tuple[dict, dict]:
    """(tensors, JSON meta) of the state, flattened for one safetensors file."""
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


def save_state(out_dir: Path, state: TrainState, cfg: RunConfig, model_cfg: ModelConfig, dataset: Dataset,
               metrics: dict, rank_rngs: list[tuple] | None = None) -> Path:
    """Write a checkpoint; rank_rngs (several processes) are every rank's generator states, saved
    so that each rank resumes its own batch and augmentation draws."""
    tensors, meta = state_tensors(state)
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


@dataclass(frozen=True)
class Checkpointer:
    """Where and how a run saves: rank 0 writes; under torchrun every rank must call save, since
    rank 0 gathers every rank's generators into the checkpoint."""
    out: Path | None  # None on the ranks other than 0
    cfg: RunConfig
    model_cfg: ModelConfig
    dataset: Dataset
    ctx: dist_.DistContext | None = None

    def save(self, state: TrainState, metrics: dict) -> Path | None:
        if self.ctx is None:
            return save_state(self.out, state, self.cfg, self.model_cfg, self.dataset, metrics)
        rngs = dist_.gather_objects((state.index_gen.get_state(), state.aug_gen.get_state()), self.ctx)
        if not self.ctx.is_main or self.out is None:
            return None
        return save_state(self.out, state, self.cfg, self.model_cfg, self.dataset, metrics, rngs)


# --- restored ------------------------------------------------------------------------------------

def load_resume_state(out: Path | None, device: torch.device,
                      ctx: dist_.DistContext | None) -> tuple[dict, dict] | None:
    """(tensors, info) of out's newest checkpoint, or None. Under torchrun rank 0 reads it and sends
    it to the others, so only rank 0 needs the output folder."""
    if ctx is None:
        path = ckpt.latest_checkpoint(out) if out else None
        return ckpt.load_checkpoint(path, device) if path else None
    path = ckpt.latest_checkpoint(out) if out and ctx.is_main else None
    return dist_.broadcast_object(ckpt.load_checkpoint(path, "cpu") if path else None, ctx)


def check_compatible(info: dict, cfg: RunConfig, model_cfg: ModelConfig | None = None) -> None:
    """Refuse to resume a checkpoint trained on other data, with another algorithm, or with other
    models or inputs than model_cfg (the models this run would build now)."""
    saved, current = with_legacy_values(info["config"]), cfg.to_dict()
    for section, key in (("algorithm", "name"), ("algorithm", "pseudo_label_view"), ("model", "name"),
                         ("model", "student"), ("model", "weights"), ("data", "dataset"), ("data", "seed"),
                         ("data", "image_size"), ("train", "batch_size"), ("train", "mu")):
        ours = current[section][key]
        was = saved.get(section, {}).get(key, ours)
        if was != ours and not (section, key, cfg.model.name) == ("model", "name", "auto"):
            raise MPLStudioError(f"the checkpoint in this folder was trained with {section}.{key}="
                                 f"{was!r}; use another output folder or the same setting")
    if model_cfg is None:
        return
    was, now = info["model"], dataclasses.asdict(model_cfg)
    for key in ("name", "student", "in_channels", "image_size", "num_classes"):
        if was.get(key, now[key] if key == "student" else None) != now[key]:
            raise MPLStudioError(f"the checkpoint's model has {key}={was.get(key)!r} and this run's would have "
                                 f"{now[key]!r} (the data's training size or the model changed since); "
                                 "start a new run")


def restore_state(state: TrainState, tensors: dict, info: dict, cfg: RunConfig, rank: int = 0) -> None:
    """Load a checkpoint into a fresh state (built by init_state with the same config)."""
    meta = info["state_meta"]
    if info["phase"] in ("finetune", "done") and get_algorithm(cfg.algorithm.name).finetune:
        # The fine-tune switched the student to its own optimizer and folded the EMA into it.
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


def _device_of(state: TrainState) -> torch.device:
    return next(state.student.model.parameters()).device


def resolve_which(which: str, info: dict) -> str:
    """ "auto" as the model a checkpoint's run hands back (its final metrics' hands_back; else the
    student, as in checkpoints saved before it was recorded or mid-run)."""
    return (info.get("metrics") or {}).get("hands_back", "student") if which == "auto" else which


def load_model(path: str | Path, which: str = "student", device: str | torch.device = "cpu"):
    """(model, info) from a checkpoint; which = "student" (EMA weights if kept), "teacher", or "auto":
    the one the run hands back (its final metrics' hands_back, chosen on validation; else the student)."""
    tensors, info = ckpt.load_checkpoint(path)
    which = resolve_which(which, info)
    model = build_model(saved_model_config(info), role="teacher" if which == "teacher" else "student")
    model.load_state_dict(_saved_model(tensors, info, which, path))
    # channels_last as in training: the inputs arrive in it, and a model in the default layout
    # converts every activation (pseudo-labeling 59,400 Fashion-MNIST images: 28 s against 16-17 s)
    return model.to(device, memory_format=torch.channels_last).eval(), info


def read_start(path: str | Path, which: str = "student") -> tuple[dict, dict]:
    """(state dict, its checkpoint's model description) of the student (EMA weights if kept) or the
    teacher saved at path (a folder means its newest checkpoint): for a run that fine-tunes an
    earlier run's model."""
    path = checkpoint_file(path)
    tensors, info = ckpt.load_checkpoint(path)
    name, _ = role_model(saved_model_config(info), which)
    return _saved_model(tensors, info, which, path), {"file": path.name, "which": which, **info["model"],
                                                      "name": name}


def saved_model_config(info: dict) -> ModelConfig:
    """The ModelConfig a checkpoint's info records (its teacher's and student's models)."""
    m = info["model"]
    return ModelConfig(**{**m, "mean": tuple(m["mean"]), "std": tuple(m["std"])})


def load_student(model: nn.Module, start: tuple[dict, dict]) -> None:
    """Load read_start's weights into a fresh student of this run."""
    state, was = start
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # other layers or shapes: another model, width or number of classes
        raise MPLStudioError(f"{was['file']} holds a {was['which']} {was['name']} of width {was.get('width')} "
                             f"for {was['num_classes']} classes, which does not fit this run's model; start it "
                             "from scratch or with the same model") from exc


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file given as itself or as the folder a run wrote to (its newest checkpoint)."""
    path = Path(path)
    found = ckpt.latest_checkpoint(path) if path.is_dir() else path if path.is_file() else None
    if found is None:
        raise MPLStudioError(f"no checkpoint at {path} to start from: give a checkpoint file or a run's folder")
    return found


def _saved_model(tensors: dict, info: dict, which: str, path: str | Path) -> dict:
    """The state dict of a checkpoint's student (EMA weights if kept) or teacher."""
    prefix = {"student": "ema.model" if any(k.startswith("ema.model.") for k in tensors) else "student.model",
              "teacher": "teacher.model"}[which]
    if not any(k.startswith(prefix + ".") for k in tensors):
        algorithm = info["config"]["algorithm"]["name"]
        raise MPLStudioError(f"{Path(path).name} has no {which} model (algorithm {algorithm})")
    return ckpt.module_state(prefix, tensors)
