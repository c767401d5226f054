"""The semi-supervised split: labeled, validation and unlabeled indices into the training pool.

The test set is a separate `ImageSet` and never enters a split: it is not pseudo-labeled,
reviewed or used for tuning. Splits are seeded and depend only on (labels, config).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mpl_core.config import DataConfig
from mpl_core.data.dataset import Dataset
from mpl_core.errors import MPLStudioError


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
        labeled, val = _split_labeled(labels, dataset.num_classes, cfg.val_fraction, gen)
        unlabeled = torch.nonzero(labels < 0).flatten()
    if cfg.max_unlabeled and len(unlabeled) > cfg.max_unlabeled:
        keep = torch.randperm(len(unlabeled), generator=gen)[: cfg.max_unlabeled]
        unlabeled = unlabeled[keep.sort().values]
    if len(labeled) == 0:
        raise MPLStudioError("the split has no labeled images: add images under labeled/<class>/")
    if len(unlabeled) == 0:
        raise MPLStudioError("the split has no unlabeled images: add images under unlabeled/")
    return Split(labeled.sort().values, val.sort().values, unlabeled.sort().values)


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


def _split_labeled(labels, num_classes, val_fraction, gen):
    """Own images: hold out val_fraction of each class (at least 1 if it has 2 or more images)."""
    labeled, val = [], []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        perm = members[torch.randperm(len(members), generator=gen)]
        n_val = int(round(len(perm) * val_fraction))
        if val_fraction > 0 and len(perm) >= 2:
            n_val = min(max(n_val, 1), len(perm) - 1)
        else:
            n_val = 0
        val.append(perm[:n_val])
        labeled.append(perm[n_val:])
    return torch.cat(labeled), torch.cat(val)
