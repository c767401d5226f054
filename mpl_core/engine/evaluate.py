"""A run's accuracies: on the validation split while it trains, on the test set when it ends.

Every rank evaluates the whole validation split (not its shard), so all ranks log the same numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from mpl_core.data.dataset import Dataset
from mpl_core.engine.inference import accuracy
from mpl_core.engine.state import TrainState


def current_model(state: TrainState) -> nn.Module:
    """The model a user gets now, as its checkpoint gives it (engine/state.py, _saved_model): the EMA student
    while one is kept, which a run without a fine-tune phase (supervised, UDA, pseudo-label) keeps to
    the end; the fine-tuned student once the fine-tune has folded the EMA into it."""
    return state.ema.model if state.ema is not None else state.student.model


def handed_role(student_val: float, teacher_val: float | None) -> str:
    """The model a run hands back: its student, unless its teacher is ahead on the validation split
    (never the test set). In the paper the student is the method's output and ends above the
    teacher; at small budgets ours may not (docs/algorithms.md), and a user then gets the better one."""
    if teacher_val is None or math.isnan(teacher_val) or math.isnan(student_val):
        return "student"
    return "teacher" if teacher_val > student_val else "student"


@dataclass(frozen=True)
class Evaluator:
    """Accuracy of a run's models on its validation split and the dataset's test set."""
    dataset: Dataset
    val: torch.Tensor  # indices of the validation images in dataset.train
    device: torch.device
    amp: bool  # bf16 autocast where it applies, as in training

    def val_acc(self, model: nn.Module) -> float:
        if len(self.val) == 0:
            return float("nan")
        return accuracy(model, self.dataset.train.images[self.val], self.dataset.train.labels[self.val],
                        self.device, amp=self.amp)

    def val_metrics(self, state: TrainState) -> dict:
        """What a log step adds when it evaluates: val_acc, and teacher_val_acc with a teacher."""
        out = {"val_acc": self.val_acc(current_model(state))}
        if state.teacher is not None:
            out["teacher_val_acc"] = self.val_acc(state.teacher.model)
        return out

    def final_metrics(self, state: TrainState) -> dict:
        """The run's result: val_acc, the kept metrics (state.best), where the test set has labels
        test_acc, and with a teacher teacher_val_acc (teacher_test_acc) and which of the two the run
        hands back (hands_back, chosen on validation: see handed_role)."""
        model, test = current_model(state), self.dataset.test
        m = {"val_acc": self.val_acc(model), **state.best}
        if state.teacher is not None:
            m["teacher_val_acc"] = self.val_acc(state.teacher.model)
        m["hands_back"] = handed_role(m["val_acc"], m.get("teacher_val_acc"))
        if test is not None and (test.labels >= 0).all():
            m["test_acc"] = accuracy(model, test.images, test.labels, self.device, amp=self.amp)
            if state.teacher is not None:
                m["teacher_test_acc"] = accuracy(state.teacher.model, test.images, test.labels, self.device,
                                                 amp=self.amp)
        return m
