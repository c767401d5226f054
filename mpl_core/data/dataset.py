"""Datasets as in-memory uint8 tensors: `Dataset` is a training pool and an optional test set,
each an `ImageSet` of (N, C, H, W) uint8 images, int64 labels (-1 where nobody knows the label)
and stable string ids. Images stay uint8 on the host and are augmented on the training device
in whole batches (see engine/augment.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageSet:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64, -1 = unknown
    ids: list[str]  # stable per-sample ids, e.g. "train/000123" or "unlabeled/cat_01.png"

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: torch.Tensor) -> "ImageSet":
        idx = idx.long()
        return ImageSet(self.images[idx], self.labels[idx], [self.ids[i] for i in idx.tolist()])


@dataclass
class Dataset:
    name: str
    class_names: list[str]
    train: ImageSet  # pool the split draws labeled, validation and unlabeled samples from
    test: ImageSet | None  # only ever measured on
    fully_labeled: bool  # True for benchmarks: every pool label is known, the split hides most
    flip: bool = True  # whether horizontal flips are label-preserving
    report: object | None = None  # ImportReport for own images
    media: object | None = None  # own images: their ImageCache (thumbnails, source files)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])


def channel_stats(images_u8: torch.Tensor, max_samples: int = 10000) -> tuple[tuple, tuple]:
    """Per-channel mean and std in [0, 1] units, from up to max_samples images."""
    x = images_u8[:max_samples].float().div(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def select_classes(dataset: Dataset, class_ids: list[int]) -> Dataset:
    """A dataset restricted to some classes, relabeled 0..len(class_ids)-1 (ids unchanged)."""
    remap = torch.full((dataset.num_classes,), -1, dtype=torch.int64)
    remap[torch.tensor(class_ids)] = torch.arange(len(class_ids))

    def restrict(s: ImageSet | None) -> ImageSet | None:
        if s is None:
            return None
        keep = torch.nonzero((s.labels >= 0) & (remap[s.labels.clamp_min(0)] >= 0)).flatten()
        sub = s.subset(keep)
        return ImageSet(sub.images, remap[sub.labels], sub.ids)

    return Dataset(f"{dataset.name}[{','.join(map(str, class_ids))}]", [dataset.class_names[i] for i in class_ids],
                   restrict(dataset.train), restrict(dataset.test), dataset.fully_labeled, dataset.flip)
