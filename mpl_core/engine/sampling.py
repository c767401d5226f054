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
class IndexSampler:
    labeled_pool: torch.Tensor  # (L,) labeled indices this process draws from
    stream: torch.Tensor  # (U,) unlabeled stream: the pool and the validation images
    by_class: torch.Tensor | None = None  # labeled indices grouped by class (balanced draws only)
    starts: torch.Tensor | None = None  # where each class begins in by_class
    counts: torch.Tensor | None = None  # how many of each class

    @classmethod
    def build(cls, split: Split, labels: torch.Tensor, balance: bool) -> "IndexSampler":
        """labels: the dataset's labels (any device; read once here)."""
        sampler = cls(split.labeled.cpu(), split.unlabeled_stream().cpu())
        if balance:
            y = labels.cpu()[sampler.labeled_pool]
            order = torch.argsort(y, stable=True)
            classes, counts = torch.unique_consecutive(y[order], return_counts=True)
            sampler.by_class, sampler.counts = sampler.labeled_pool[order], counts
            sampler.starts = torch.cumsum(counts, 0) - counts
        return sampler

    def labeled(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """n labeled indices with replacement; balanced: a class uniformly among those present,
        then a member of it uniformly (accepted pseudo-labels crowd into the easy classes)."""
        if self.by_class is None:
            return self.labeled_pool[torch.randint(len(self.labeled_pool), (n,), generator=gen)]
        pick = torch.randint(len(self.counts), (n,), generator=gen)
        offset = (torch.rand(n, generator=gen) * self.counts[pick]).long().clamp_max(self.counts[pick] - 1)
        return self.by_class[self.starts[pick] + offset]

    def unlabeled(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return self.stream[torch.randint(len(self.stream), (n,), generator=gen)]


def to_device(idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type != "cuda":
        return idx.to(device)
    return idx.pin_memory().to(device, non_blocking=True)
