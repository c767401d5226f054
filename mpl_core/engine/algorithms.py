"""One training step of each algorithm (supervised, pseudo_label, uda, mpl) and their registry.

Pure functions of tensors and modules: no I/O, no global state, no host syncs (metrics come
back as detached tensors; the loop calls `.item()` only when it logs). Each step updates
the models through their `Learner`s and returns its metrics. ALGORITHM_REGISTRY says, for each
name in config.ALGORITHMS, which step to run and what the loop must prepare for it.

Where MPL here differs from the paper (Pham et al., CVPR 2021) and the official code:
- The teacher's feedback coefficient follows the first-order derivation by default:
  h = CE_before - CE_after (the student's labeled loss before minus after its update on the
  pseudo-labels), so a pseudo-label that helped the student is reinforced. The official code
  and the popular PyTorch port compute CE_after - CE_before. `feedback_sign` picks
  "derivation", "official" or "off" (no feedback: a UDA teacher distilled into the student);
  `feedback_baseline` subtracts a moving average of h (a REINFORCE baseline).
- The student learns from the teacher's argmax on the *weak* view by default
  (`pseudo_label_view = "weak"`, as the PyTorch port trains its student): the teacher is right
  more often there, and the student ended closer to its teacher (docs/results.md, "Settings tried
  toward 80%"). The feedback term reinforces that same label through the teacher's strong-view
  logits, the only view with a graph in separate view batches; the port feeds back on the
  strong-view argmax instead. `pseudo_label_view = "strong"` is the official code's choice: the
  student learns the strong view's argmax and the feedback uses the same labels.
- The paper samples the pseudo-label from the teacher's distribution in its derivation; like
  both public implementations we use the argmax (lower variance).
- `view_batches` picks how each model sees its views: "joint" (as the official code) puts them in
  one batch, so BatchNorm normalises them together; "separate" (as ports that call the model once
  per view) gives each view its own pass and skips the graph of the passes whose outputs are only
  used detached: a quarter fewer FLOPs, and per-view batch statistics. The default, "auto", is
  chosen by the device before a run (engine/defaults.py): separate on a CPU, joint on CUDA.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from mpl_core.config import AlgorithmConfig
from mpl_core.errors import MPLStudioError


@dataclass
class Batch:
    x_l: torch.Tensor  # (B, C, H, W) weak view of the labeled images, float in [0, 1]
    y_l: torch.Tensor  # (B,) labels
    u_weak: torch.Tensor  # (muB, C, H, W) weak view of the unlabeled images
    u_strong: torch.Tensor  # (muB, C, H, W) strong view of the same images
    # Mixup (Zhang et al. 2018): x_l is lam * x + (1 - lam) * another labeled image, whose label is
    # y_mix; None when the batch is not mixed. lam (B,) per image.
    y_mix: torch.Tensor | None = None
    lam: torch.Tensor | None = None


@dataclass
class Learner:
    """A model with its optimizer and learning-rate schedule."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    def update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()


@dataclass
class FeedbackState:
    """Running state of MPL's feedback: the moving-average baseline of h."""
    baseline: torch.Tensor | None = None


def ramp(step: int, ramp_steps: int) -> float:
    """Linear warm-up of the unlabeled weight from 0 to 1 over ramp_steps."""
    return 1.0 if ramp_steps <= 0 else min(1.0, (step + 1) / ramp_steps)


def consistency_loss(logits_weak: torch.Tensor, logits_strong: torch.Tensor, cfg: AlgorithmConfig):
    """UDA: sharpened weak-view targets, masked by confidence, cross-entropy on the strong view.

    Returns (loss, mask) with mask (muB,) float: which samples passed the threshold.
    """
    soft = torch.softmax(logits_weak.detach().float() / cfg.temperature, dim=-1)
    mask = (torch.softmax(logits_weak.detach().float(), -1).amax(-1) >= cfg.threshold).float()
    per_sample = -(soft * F.log_softmax(logits_strong.float(), dim=-1)).sum(-1)
    return (per_sample * mask).mean(), mask


def supervised_step(student: Learner, batch: Batch, cfg: AlgorithmConfig, step: int) -> dict:
    """Labeled data only, weak views: the baseline every other algorithm must beat."""
    logits = student.model(batch.x_l).float()
    if batch.lam is None:
        loss = F.cross_entropy(logits, batch.y_l)
    else:
        loss = (batch.lam * F.cross_entropy(logits, batch.y_l, reduction="none")
                + (1 - batch.lam) * F.cross_entropy(logits, batch.y_mix, reduction="none")).mean()
    student.update(loss)
    return {"loss": loss.detach()}


def pseudo_label_step(student: Learner, batch: Batch, cfg: AlgorithmConfig, step: int) -> dict:
    """Threshold self-training, done correctly: targets are the model's own argmax on the weak
    view, detached; only samples above the threshold count; the loss is on the strong view;
    the unlabeled weight ramps up. (This is FixMatch's recipe.)"""
    b, n_u = len(batch.x_l), len(batch.u_weak)
    logits = student.model(torch.cat([batch.x_l, batch.u_weak, batch.u_strong]))
    logits_l, logits_uw, logits_us = logits.float().split([b, n_u, n_u])
    probs = torch.softmax(logits_uw.detach(), -1)
    conf, targets = probs.max(-1)
    mask = (conf >= cfg.threshold).float()
    loss_l = F.cross_entropy(logits_l, batch.y_l)
    loss_u = (F.cross_entropy(logits_us, targets, reduction="none") * mask).mean()
    loss = loss_l + cfg.unlabeled_weight * ramp(step, cfg.unlabeled_ramp_steps) * loss_u
    student.update(loss)
    return {"loss": loss.detach(), "loss_labeled": loss_l.detach(), "loss_unlabeled": loss_u.detach(),
            "mask_rate": mask.mean()}


def uda_step(student: Learner, batch: Batch, cfg: AlgorithmConfig, step: int) -> dict:
    """UDA with one model: labeled CE plus the consistency loss (this is MPL's teacher alone)."""
    b, n_u = len(batch.x_l), len(batch.u_weak)
    logits = student.model(torch.cat([batch.x_l, batch.u_weak, batch.u_strong]))
    logits_l, logits_uw, logits_us = logits.float().split([b, n_u, n_u])
    loss_l = F.cross_entropy(logits_l, batch.y_l, label_smoothing=cfg.label_smoothing)
    loss_u, mask = consistency_loss(logits_uw, logits_us, cfg)
    loss = loss_l + cfg.unlabeled_weight * ramp(step, cfg.unlabeled_ramp_steps) * loss_u
    student.update(loss)
    return {"loss": loss.detach(), "loss_labeled": loss_l.detach(), "loss_unlabeled": loss_u.detach(),
            "mask_rate": mask.mean()}


def feedback_coefficient(loss_before: torch.Tensor, loss_after: torch.Tensor, cfg: AlgorithmConfig,
                         state: FeedbackState) -> tuple[torch.Tensor, torch.Tensor]:
    """MPL's h from the student's labeled loss before/after its update; returns (h, h_used).

    h_used is h with the sign convention applied and the moving-average baseline removed.
    """
    h = (loss_before - loss_after).detach()  # > 0: the pseudo-labels helped the student
    if cfg.feedback_sign == "off":
        return h, torch.zeros_like(h)
    signed = h if cfg.feedback_sign == "derivation" else -h
    if cfg.feedback_baseline > 0:
        if state.baseline is None:
            state.baseline = torch.zeros_like(signed)
        used = signed - state.baseline
        state.baseline = cfg.feedback_baseline * state.baseline + (1 - cfg.feedback_baseline) * signed
        return h, used
    return h, signed


def pseudo_labels(t_logits_uw: torch.Tensor, t_logits_us: torch.Tensor, cfg: AlgorithmConfig) -> torch.Tensor:
    """(muB,) MPL's hard pseudo-labels: the teacher's argmax on the view cfg.pseudo_label_view names."""
    return (t_logits_uw if cfg.pseudo_label_view == "weak" else t_logits_us).detach().argmax(-1)


def mpl_step(teacher: Learner, student: Learner, batch: Batch, cfg: AlgorithmConfig, step: int,
             state: FeedbackState, mean_across: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """One Meta Pseudo Labels step: student learns from the teacher, teacher learns from both
    its own UDA loss and the student's feedback.

    mean_across (several processes): averages a tensor over ranks, so that h is the student's
    change of loss on the whole labeled batch, as one process with the global batch computes it,
    and every rank keeps the same feedback baseline."""
    t_logits_l, t_logits_uw, t_logits_us = _teacher_logits(teacher, batch, cfg)
    t_loss_l = F.cross_entropy(t_logits_l, batch.y_l, label_smoothing=cfg.label_smoothing)
    t_loss_u, mask = consistency_loss(t_logits_uw, t_logits_us, cfg)
    t_loss_uda = t_loss_l + cfg.unlabeled_weight * ramp(step, cfg.unlabeled_ramp_steps) * t_loss_u
    pseudo = pseudo_labels(t_logits_uw, t_logits_us, cfg)

    # Student: learn from the pseudo-labels; measure its labeled loss before and after.
    s_logits_l, s_logits_us = _student_logits(student, batch, cfg)
    s_loss_before = F.cross_entropy(s_logits_l.detach(), batch.y_l)
    s_loss = F.cross_entropy(s_logits_us, pseudo)
    student.update(s_loss)
    with torch.no_grad():
        s_loss_after = F.cross_entropy(student.model(batch.x_l).float(), batch.y_l)
    if mean_across is not None:
        s_loss_before, s_loss_after = mean_across(torch.stack([s_loss_before, s_loss_after])).unbind()

    # Teacher: UDA loss plus h * CE(T(x_strong), y_hat) (REINFORCE-style, first order).
    h, h_used = feedback_coefficient(s_loss_before, s_loss_after, cfg, state)
    t_loss_mpl = h_used * F.cross_entropy(t_logits_us, pseudo)
    t_loss = t_loss_uda + t_loss_mpl
    teacher.update(t_loss)
    return {"t_loss": t_loss.detach(), "t_loss_labeled": t_loss_l.detach(), "t_loss_uda": t_loss_u.detach(),
            "t_loss_mpl": t_loss_mpl.detach(), "s_loss": s_loss.detach(), "s_loss_labeled": s_loss_after,
            "h": h, "mask_rate": mask.mean()}


def _teacher_logits(teacher: Learner, batch: Batch, cfg: AlgorithmConfig):
    """The teacher's (labeled, weak, strong) logits, float32.

    "joint" (the official code): one forward over all views, (B + 2muB, K); BatchNorm normalises
    them together, so the backward pass also runs through the weak view. "separate" (the ports):
    a forward per view, the weak one without a graph, since only its detached targets are used:
    fewer FLOPs, each view normalised on its own.
    """
    if _views(cfg) == "separate":
        logits_l = teacher.model(batch.x_l)
        with torch.no_grad():
            logits_uw = teacher.model(batch.u_weak)
        return logits_l.float(), logits_uw.float(), teacher.model(batch.u_strong).float()
    b, n_u = len(batch.x_l), len(batch.u_weak)
    logits = teacher.model(torch.cat([batch.x_l, batch.u_weak, batch.u_strong]))
    return logits.float().split([b, n_u, n_u])


def _student_logits(student: Learner, batch: Batch, cfg: AlgorithmConfig):
    """The student's (labeled, strong) logits, float32; the labeled ones only measure its loss."""
    if _views(cfg) == "separate":
        with torch.no_grad():
            logits_l = student.model(batch.x_l)
        return logits_l.float(), student.model(batch.u_strong).float()
    b, n_u = len(batch.x_l), len(batch.u_strong)
    logits = student.model(torch.cat([batch.x_l, batch.u_strong]))
    return logits.float().split([b, n_u])


# --- the registry ---------------------------------------------------------------------------------

def _one_forward(cfg: AlgorithmConfig) -> bool:
    return False


def _separate_views(cfg: AlgorithmConfig) -> bool:
    return _views(cfg) == "separate"


def _views(cfg: AlgorithmConfig) -> str:
    if cfg.view_batches == "auto":  # a programming error, not a user's: train() resolves it first
        raise ValueError('view_batches "auto" must be resolved first: call engine.defaults.for_device(cfg, device) '
                         "before a step")
    return cfg.view_batches


@dataclass(frozen=True)
class Algorithm:
    """What the training loop needs to know about an algorithm, so that it never tests its name."""
    name: str  # as in config.ALGORITHMS and the saved configs
    step: Callable[..., dict]  # (student, batch, cfg, step); with a teacher mpl_step's arguments
    teacher: bool = False  # trains a teacher beside the student: built, saved, evaluated and stepped too
    unlabeled: bool = True  # each step draws batch_size * mu unlabeled images beside the labeled ones
    finetune: bool = False  # after the main phase the student fine-tunes on labeled data (finetune_steps)
    # Whether a main-phase step calls a model more than once before its backward (DDP allows one
    # forward per backward, so under torchrun the gradients are then averaged by hand).
    several_forwards: Callable[[AlgorithmConfig], bool] = _one_forward


ALGORITHM_REGISTRY: dict[str, Algorithm] = {}


def register_algorithm(algorithm: Algorithm) -> Algorithm:
    ALGORITHM_REGISTRY[algorithm.name] = algorithm
    return algorithm


def get_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHM_REGISTRY:
        raise MPLStudioError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHM_REGISTRY)}")
    return ALGORITHM_REGISTRY[name]


# In config.ALGORITHMS's order (a test keeps the two equal; config cannot import the engine).
register_algorithm(Algorithm("supervised", supervised_step, unlabeled=False))
register_algorithm(Algorithm("pseudo_label", pseudo_label_step))
register_algorithm(Algorithm("uda", uda_step))
register_algorithm(Algorithm("mpl", mpl_step, teacher=True, finetune=True, several_forwards=_separate_views))
