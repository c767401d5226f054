"""The semi-supervised split: labeled, validation and unlabeled indices into the training pool.

The test set is a separate `ImageSet` and never enters a split: it is not pseudo-labeled,
reviewed or used for tuning. Splits are seeded and depend only on (labels, config); pool images
that people labeled for validation then move from the pool to validation (with_validation_labels).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from mpl_core.config import DataConfig
from mpl_core.data.dataset import Dataset, ImageSet
from mpl_core.errors import MPLStudioError

# Own images: each class keeps at least this many of its labels to train on, and holds out up to
# val_per_class of the rest for validation. Ten is what the built-in datasets train on by default
# (labels_per_class, the budget MPL is measured at). A folder with fewer keeps them all to train on:
# two validation images a class gave a 90% interval from 39.6% to 86.8%, nothing to act on. Its
# validation labels come from the pool instead (the Review page's validation queue labels a random
# sample of it, which is also what the estimate is about: see with_validation_labels).
MIN_TRAIN_PER_CLASS = 10


@dataclass
class Split:
    labeled: torch.Tensor  # (L,) indices into dataset.train: the labels training may use
    val: torch.Tensor  # (V,) held-out labeled indices: calibration and model selection
    unlabeled: torch.Tensor  # (U,) indices whose labels training never sees
    # (T,) the labeled indices whose labels people gave (the given labels, reviewers' relabels and
    # hand labels), not the accepted pseudo-labels: a retrain may draw them more often (trusted_share)
    trusted: torch.Tensor | None = None

    def unlabeled_stream(self) -> torch.Tensor:
        """Images the unlabeled losses train on: the pool and the validation images, labels unused.

        Consistency training fits the model to the images it sees; if validation images were
        left out, the model would be calibrated differently on them than on the pool, and the
        precision estimated from them would be optimistic for the pool's pseudo-labels.
        """
        return torch.cat([self.unlabeled, self.val])

    def sizes(self) -> dict[str, int]:
        return {"labeled": len(self.labeled), "val": len(self.val), "unlabeled": len(self.unlabeled)}


def make_split(dataset: Dataset, cfg: DataConfig) -> Split:
    """Pick the split for `dataset` as `cfg` says; the same seed gives the same split."""
    gen = torch.Generator().manual_seed(cfg.seed)
    labels = dataset.train.labels
    if dataset.fully_labeled:
        labeled, val, unlabeled = _hide_labels(labels, dataset.num_classes, cfg, gen)
    else:
        labeled, val = _split_labeled(labels, dataset.num_classes, cfg, gen)
        unlabeled = torch.nonzero(labels < 0).flatten()
    if cfg.max_unlabeled and len(unlabeled) > cfg.max_unlabeled:
        keep = torch.randperm(len(unlabeled), generator=gen)[: cfg.max_unlabeled]
        unlabeled = unlabeled[keep.sort().values]
    if len(labeled) == 0:
        raise MPLStudioError("the split has no labeled images: add images under labeled/<class>/")
    if len(unlabeled) == 0:
        raise MPLStudioError("the split has no unlabeled images: add images under unlabeled/")
    return Split(labeled.sort().values, val.sort().values, unlabeled.sort().values)


def with_validation_labels(dataset: Dataset, split: Split, idx, labels) -> tuple[Dataset, Split]:
    """The dataset and split with pool images that people labeled for validation (the validation
    queue) moved out of the pool into the validation split, under the labels they gave; the pool's
    other labels (hidden, or unknown) stay as they were. Indices outside the pool are ignored."""
    idx, labels = torch.as_tensor(idx, dtype=torch.int64), torch.as_tensor(labels, dtype=torch.int64)
    keep = torch.isin(idx, split.unlabeled) & (labels >= 0)
    idx, labels = idx[keep], labels[keep]
    if len(idx) == 0:
        return dataset, split
    train = dataset.train
    given = train.labels.clone()
    given[idx] = labels
    moved = Split(split.labeled, torch.cat([split.val, idx]).sort().values,
                  split.unlabeled[~torch.isin(split.unlabeled, idx)], split.trusted)
    return dataclasses.replace(dataset, train=ImageSet(train.images, given, train.ids)), moved


def _hide_labels(labels, num_classes, cfg: DataConfig, gen):
    """Benchmark datasets: keep labels_per_class (+ val_per_class) per class, hide the rest."""
    labeled, val, rest = [], [], []
    need = cfg.labels_per_class + cfg.val_per_class
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        if len(members) < need:
            raise MPLStudioError(f"class {c} has {len(members)} images, fewer than the {need} asked for "
                                 "(labels_per_class + val_per_class): ask for fewer")
        perm = members[torch.randperm(len(members), generator=gen)]
        labeled.append(perm[: cfg.labels_per_class])
        val.append(perm[cfg.labels_per_class: need])
        rest.append(perm[need:])
    return torch.cat(labeled), torch.cat(val), torch.cat(rest)


def _split_labeled(labels, num_classes, cfg: DataConfig, gen):
    """Own images: hold out val_per_class of each class where it keeps MIN_TRAIN_PER_CLASS to train
    on, fewer where it has fewer labels (none at MIN_TRAIN_PER_CLASS or under); with val_fraction > 0
    (workspaces made before this rule keep theirs), that share of each class instead."""
    labeled, val = [], []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        perm = members[torch.randperm(len(members), generator=gen)]
        n_val = held_out(len(perm), cfg)
        val.append(perm[:n_val])
        labeled.append(perm[n_val:])
    return torch.cat(labeled), torch.cat(val)


def held_out(n: int, cfg: DataConfig) -> int:
    """How many of a class's n labeled own images the split holds out for validation."""
    if cfg.val_fraction > 0:  # the former rule: a share, at least 1 of a class with 2 or more
        return min(max(int(round(n * cfg.val_fraction)), 1), n - 1) if n >= 2 else 0
    return max(0, min(cfg.val_per_class, n - MIN_TRAIN_PER_CLASS))
