"""Review: decisions on pseudo-labels by sample or by threshold, and the training set they make.

Decisions are per sample and outlive pseudo-label rounds: an accepted sample keeps the label it
was accepted with when the teacher later changes its mind. Bulk decisions by threshold touch
only samples nobody has decided yet unless asked, so a bulk accept never overwrites a person's
relabel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from mpl_core.data.dataset import Dataset, ImageSet
from mpl_core.data.splits import Split
from mpl_core.errors import MPLStudioError
from mpl_core.workspace.calibration import ThresholdIndex, calibration_from_validation
from mpl_core.workspace.store import ACTIONS, HUMAN_LABEL_ACTIONS, PseudoLabelRows
from mpl_core.workspace.workspace import Workspace

PENDING = "pending"
STATUSES = (PENDING,) + ACTIONS


def decision_state(rows: PseudoLabelRows, decisions: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per pseudo-label row: the status ('pending' or the action in force) and the label that
    decision set (-1 for pending and rejected rows)."""
    status = np.full(len(rows), PENDING, dtype=object)
    final = np.full(len(rows), -1, dtype=np.int64)
    if len(decisions["idx"]) and len(rows):
        pos = np.clip(np.searchsorted(rows.idx, decisions["idx"]), 0, len(rows) - 1)
        hit = rows.idx[pos] == decisions["idx"]
        status[pos[hit]] = decisions["action"][hit]
        keep = hit & (decisions["action"] != "reject")
        final[pos[keep]] = decisions["label"][keep]
    return status, final


def status_of(rows: PseudoLabelRows, decisions: dict) -> np.ndarray:
    """Per pseudo-label row: 'pending' or the action in force for its sample."""
    return decision_state(rows, decisions)[0]


def select_by_threshold(rows: PseudoLabelRows, decisions: dict | None, *, above=None, below=None,
                        classes: list[int] | None = None, include_decided: bool = False,
                        status: np.ndarray | None = None) -> np.ndarray:
    """Row positions with confidence >= above (or < below), in the given predicted classes.

    above / below is one threshold or one per class; `status` (from decision_state) saves
    re-reading the decisions when the caller already has it.
    """
    if (above is None) == (below is None):
        raise MPLStudioError("give exactly one of a lower bound (accept above) or an upper bound (reject below)")
    bound = np.asarray(above if above is not None else below, dtype=np.float64)
    if bound.ndim and len(bound) <= int(rows.label.max(initial=-1)):
        raise MPLStudioError("give one threshold or one per class")
    if ((bound < 0.0) | (bound > 1.0)).any():
        raise MPLStudioError(f"the threshold must be between 0 and 1, got {bound.tolist()}")
    per_row = bound[rows.label] if bound.ndim else bound
    mask = rows.confidence >= per_row if above is not None else rows.confidence < per_row
    if classes is not None:
        mask &= np.isin(rows.label, classes)
    if not include_decided:
        mask &= (status if status is not None else status_of(rows, decisions)) == PENDING
    return np.nonzero(mask)[0]


def decide_rows(ws: Workspace, rows: PseudoLabelRows, positions, action: str, who: str,
                label: int | Sequence[int] | None = None, expect: str | None = None, seen: bool = False) -> int:
    """Record `action` for the given row positions, all in one store transaction (one undo step);
    accept/reject record the predicted label, relabel/manual `label`: one class for every row or
    one per row. With `expect`, only rows still in that state are decided; `seen`: by a person
    looking at each image, not in bulk by a threshold (see Store.decide). Returns how many."""
    positions = np.asarray(positions, dtype=np.int64)
    if action in HUMAN_LABEL_ACTIONS:
        labels = _human_labels(label, len(positions), ws.dataset().num_classes, action)
    else:
        labels = rows.label[positions].tolist()
    samples = [(rows.sample_ids[p], int(rows.idx[p])) for p in positions.tolist()]
    return ws.store.decide(samples, action, labels, who, expect=expect, seen=seen)


def _human_labels(label, n: int, num_classes: int, action: str) -> list[int]:
    """One class per row from one class or a list of them; any class out of range refuses them all."""
    if label is None:
        raise MPLStudioError(f"{action} needs a class between 0 and {num_classes - 1}")
    given = np.asarray(label, dtype=object).reshape(-1).tolist()
    if len(given) == 1:
        given = given * n
    if len(given) != n:
        raise MPLStudioError(f"give one class for all {n} rows or one per row, not {len(given)}")
    try:
        labels = [int(v) for v in given]
    except (TypeError, ValueError):
        labels = [-1]
    if any(not 0 <= v < num_classes for v in labels):
        raise MPLStudioError(f"{action} needs a class between 0 and {num_classes - 1}")
    return labels


@dataclass
class ReviewedSet:
    dataset: Dataset  # the pool with only the labels training may use (others -1)
    split: Split  # labeled = given + accepted + human labels, trusted = given + human + seen accepts
    counts: dict  # given, accepted (of which confirmed: seen by a person), human, rejected
    read_at: float = 0.0  # when the decisions were read (the store's clock): what a round trained on


def reviewed_training_set(ws: Workspace) -> ReviewedSet:
    """Labeled + accepted pseudo-labels + relabeled/manual labels; rejected ones stay unlabeled.

    The pool's true labels (known for built-in datasets) are hidden: a retrain sees exactly the
    labels a person would have, never the benchmark's answers.
    """
    ds, split = ws.dataset_and_split()  # validation: the given labels and those of the validation queue
    labels = torch.full_like(ds.train.labels, -1)
    for part in (split.labeled, split.val):
        labels[part] = ds.train.labels[part]
    read_at = ws.store.now()
    dec = ws.store.current_decisions()
    in_pool = np.isin(dec["idx"], split.unlabeled.numpy())
    use = in_pool & (dec["action"] != "reject")
    chosen = torch.from_numpy(dec["idx"][use])
    labels[chosen] = torch.from_numpy(dec["label"][use])
    pool_left = split.unlabeled[~torch.isin(split.unlabeled, chosen)]
    human = np.isin(dec["action"], HUMAN_LABEL_ACTIONS) & in_pool
    # An accept a person made looking at the image is their label as much as a relabel is; one
    # made in bulk by a threshold only repeats the teacher, so it is not drawn among people's labels.
    confirmed = in_pool & (dec["action"] == "accept") & dec["seen"]
    trusted = torch.cat([split.labeled, torch.from_numpy(dec["idx"][human | confirmed])]).sort().values
    new_split = Split(torch.cat([split.labeled, chosen]).sort().values, split.val, pool_left, trusted)
    counts = {"given": len(split.labeled), "accepted": int((in_pool & (dec["action"] == "accept")).sum()),
              "confirmed": int(confirmed.sum()), "human": int(human.sum()),
              "rejected": int((in_pool & (dec["action"] == "reject")).sum())}
    train = ImageSet(ds.train.images, labels, ds.train.ids)
    reviewed = Dataset(ds.name, ds.class_names, train, ds.test, fully_labeled=False, flip=ds.flip)
    return ReviewedSet(reviewed, new_split, counts, read_at)


def threshold_index(ws: Workspace, round_: int | None = None) -> ThresholdIndex:
    """A ThresholdIndex over a round of pseudo-labels (the newest by default), with the true labels
    beside it where the dataset knows them (built-in datasets), for checking the estimate."""
    rows = ws.store.pseudo_labels(round_)
    if rows is None:
        raise MPLStudioError("no pseudo-labels yet: generate them from a trained model first")
    ds = ws.dataset()
    truth = ds.train.labels.numpy()[rows.idx] if ds.fully_labeled else None
    return ThresholdIndex(rows.label, rows.confidence, ds.num_classes,
                          calibration_from_validation(rows.validation), truth, rows.validation)
