"""Which images go in each batch: indices drawn on the CPU, sent to the device without a host sync.

    sampler = IndexSampler.build(split, dataset.train.labels, balance=False)
    li = sampler.labeled(32, gen)            # CPU indices into dataset.train
    li = to_device(li, device)               # pinned, non-blocking on CUDA

The draws use a CPU generator so that checkpoints can save and restore it on any device. What
is fixed for a run (the unlabeled stream, the labeled images grouped by class) is built once,
not per step. On CUDA a plain `.to(device)` of a pageable tensor waits for the GPU to finish
all queued work; copying from pinned memory with non_blocking lets the host queue the next
step while the GPU still runs this one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mpl_core.data.splits import Split


@dataclass
class LabeledPool:
    """Labeled indices to draw from with replacement: uniformly, or class-balanced (a class
    uniformly among those present, then a member of it uniformly; accepted pseudo-labels crowd
    into the easy classes)."""
    indices: torch.Tensor  # (L,)
    by_class: torch.Tensor | None = None  # the indices grouped by class (balanced draws only)
    starts: torch.Tensor | None = None  # where each class begins in by_class
    counts: torch.Tensor | None = None  # how many of each class

    @classmethod
    def build(cls, indices: torch.Tensor, labels: torch.Tensor, balance: bool) -> "LabeledPool":
        pool = cls(indices.cpu())
        if balance and len(pool.indices):
            y = labels.cpu()[pool.indices]
            order = torch.argsort(y, stable=True)
            _, counts = torch.unique_consecutive(y[order], return_counts=True)
            pool.by_class, pool.counts = pool.indices[order], counts
            pool.starts = torch.cumsum(counts, 0) - counts
        return pool

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        if self.by_class is None:
            return self.indices[torch.randint(len(self.indices), (n,), generator=gen)]
        pick = torch.randint(len(self.counts), (n,), generator=gen)
        offset = (torch.rand(n, generator=gen) * self.counts[pick]).long().clamp_max(self.counts[pick] - 1)
        return self.by_class[self.starts[pick] + offset]


@dataclass
class IndexSampler:
    labeled_pool: LabeledPool  # every labeled index this process draws from
    stream: torch.Tensor  # (U,) unlabeled stream: the pool and the validation images
    trusted: LabeledPool | None = None  # the labels people gave, drawn for trusted_share of each batch
    trusted_share: float = 0.0  # 0 wherever trusted is None (build)

    @classmethod
    def build(cls, split: Split, labels: torch.Tensor, balance: bool, trusted_share: float = 0.0) -> "IndexSampler":
        """labels: the dataset's labels (any device; read once here). trusted_share is ignored where
        the split names no trusted labels."""
        trusted = None
        if trusted_share > 0 and split.trusted is not None and len(split.trusted):
            trusted = LabeledPool.build(split.trusted, labels, balance)
        return cls(LabeledPool.build(split.labeled, labels, balance), split.unlabeled_stream().cpu(), trusted,
                   trusted_share if trusted is not None else 0.0)

    def labeled(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """n labeled indices with replacement: round(n * trusted_share) of them from the trusted
        labels, the rest from all labels (trusted ones included)."""
        k = round(n * self.trusted_share)
        if k == 0:
            return self.labeled_pool.draw(n, gen)
        return torch.cat([self.trusted.draw(k, gen), self.labeled_pool.draw(n - k, gen)])

    def unlabeled(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return self.stream[torch.randint(len(self.stream), (n,), generator=gen)]


def to_device(idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type != "cuda":
        return idx.to(device)
    return idx.pin_memory().to(device, non_blocking=True)
