"""MPL written the straightforward way, fp32, in two forms the public code uses:

- `reference_mpl_step`: one forward pass per view and per model (the way several ports write it);
- `reference_mpl_step_joint`: one forward per model over the concatenated views, with gradients
  through all of them, as the official code and the popular PyTorch port (kekmodel/MPL-pytorch)
  compute it.

The same mathematics as `algorithms.mpl_step` (same losses, same sign option, same argmax
pseudo-labels on the view `pseudo_label_view` names); they exist to check the fast step against (tests) and as the
baselines of `bench/throughput.py`.

With BatchNorm in training mode the two forms differ by design: separate passes normalise each
view with its own batch statistics, one concatenated pass with the statistics of all views. With
BatchNorm in eval mode (or without it) they compute the same numbers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mpl_core.config import AlgorithmConfig
from mpl_core.engine.algorithms import (
    Batch,
    FeedbackState,
    Learner,
    consistency_loss,
    feedback_coefficient,
    pseudo_labels,
    ramp,
)


def reference_mpl_step(teacher: Learner, student: Learner, batch: Batch, cfg: AlgorithmConfig, step: int,
                       state: FeedbackState) -> dict:
    t_logits = teacher.model(batch.x_l), teacher.model(batch.u_weak), teacher.model(batch.u_strong)
    losses = _teacher_losses(*t_logits, batch, cfg, step)
    s_loss_before = F.cross_entropy(student.model(batch.x_l).detach(), batch.y_l)
    s_loss = F.cross_entropy(student.model(batch.u_strong), losses["pseudo"])
    student.update(s_loss)
    s_loss_after = F.cross_entropy(student.model(batch.x_l).detach(), batch.y_l)
    return _feedback(teacher, t_logits[2], losses, s_loss, s_loss_before, s_loss_after, cfg, state)


def reference_mpl_step_joint(teacher: Learner, student: Learner, batch: Batch, cfg: AlgorithmConfig, step: int,
                             state: FeedbackState) -> dict:
    """What the official code and the port compute in a step: the teacher sees [labeled, weak,
    strong] in one batch and the student [labeled, strong], each with a graph through every view;
    the student's labeled loss after its update is a forward without a graph. (The port trains the
    student on the weak view's argmax; here, as in `mpl_step`, it is the view `pseudo_label_view`
    names: the same passes and FLOPs either way.)"""
    b, n_u = len(batch.x_l), len(batch.u_weak)
    t_logits = teacher.model(torch.cat([batch.x_l, batch.u_weak, batch.u_strong])).split([b, n_u, n_u])
    losses = _teacher_losses(*t_logits, batch, cfg, step)
    s_logits_l, s_logits_us = student.model(torch.cat([batch.x_l, batch.u_strong])).split([b, n_u])
    s_loss_before = F.cross_entropy(s_logits_l.detach(), batch.y_l)
    s_loss = F.cross_entropy(s_logits_us, losses["pseudo"])
    student.update(s_loss)
    with torch.no_grad():
        s_loss_after = F.cross_entropy(student.model(batch.x_l), batch.y_l)
    return _feedback(teacher, t_logits[2], losses, s_loss, s_loss_before, s_loss_after, cfg, state)


def _teacher_losses(t_logits_l, t_logits_uw, t_logits_us, batch: Batch, cfg: AlgorithmConfig, step: int) -> dict:
    """The teacher's UDA loss and its hard pseudo-labels (argmax on the strong or the weak view)."""
    t_loss_l = F.cross_entropy(t_logits_l, batch.y_l, label_smoothing=cfg.label_smoothing)
    t_loss_u, mask = consistency_loss(t_logits_uw, t_logits_us, cfg)
    t_loss_uda = t_loss_l + cfg.unlabeled_weight * ramp(step, cfg.unlabeled_ramp_steps) * t_loss_u
    return {"t_loss_l": t_loss_l, "t_loss_u": t_loss_u, "mask": mask, "t_loss_uda": t_loss_uda,
            "pseudo": pseudo_labels(t_logits_uw, t_logits_us, cfg)}


def _feedback(teacher: Learner, t_logits_us, losses: dict, s_loss, s_loss_before, s_loss_after,
              cfg: AlgorithmConfig, state: FeedbackState) -> dict:
    """The teacher's update: its UDA loss plus h times its loss on its own pseudo-labels."""
    h, h_used = feedback_coefficient(s_loss_before, s_loss_after, cfg, state)
    t_loss_mpl = h_used * F.cross_entropy(t_logits_us, losses["pseudo"])
    t_loss = losses["t_loss_uda"] + t_loss_mpl
    teacher.update(t_loss)
    return {"t_loss": t_loss.detach(), "t_loss_labeled": losses["t_loss_l"].detach(),
            "t_loss_uda": losses["t_loss_u"].detach(), "t_loss_mpl": t_loss_mpl.detach(), "s_loss": s_loss.detach(),
            "s_loss_labeled": s_loss_after, "h": h, "mask_rate": losses["mask"].mean()}
