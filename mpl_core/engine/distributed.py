"""Several processes training one model: the torchrun environment and the few collectives MPL needs.

    torchrun --nproc_per_node=4 -m mpl_core train --dataset cifar10 --out runs/c10

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init` joins the
process group from them (NCCL when the processes train on GPUs, gloo on the CPU). Every rank
runs the same training loop on its own shard of the data; DistributedDataParallel averages the
gradients. Rank 0 owns the files: it alone reads and writes checkpoints, result files and the
workspace store, and sends what the others need (the resume state, the job's plan) over the
process group, so the other ranks never touch the disk except to read the dataset.

Without torchrun (WORLD_SIZE unset or 1) `current()` is None and nothing here is used.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from mpl_core.errors import MPLStudioError

RANK_SEED_STRIDE = 1_000_003  # rank r draws batches and augmentations from seed + r * stride
TIMEOUT = datetime.timedelta(minutes=30)  # a rank waiting longer than this for the others fails


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str  # "nccl" or "gloo"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "auto") -> DistContext | None:
    """Join the process group torchrun describes (once per process); None when not under torchrun.

    device "auto" trains on GPUs when there are as many on this machine as local processes
    (one GPU each), else on the CPU; "cpu" forces gloo on the CPU; "cuda" requires the GPUs.
    """
    if not launched_by_torchrun():
        return None
    if dist.is_initialized():
        return current()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.startswith("cuda") and gpus < local_world:
        raise MPLStudioError(f"{local_world} processes on this machine need {local_world} GPUs, and it has {gpus}; "
                             "pass --nproc_per_node with at most that many, or --device cpu")
    use_gpu = device != "cpu" and gpus >= local_world
    if use_gpu:
        torch.cuda.set_device(local_rank)  # before the group: NCCL binds each rank to its GPU
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    return current()


def current() -> DistContext | None:
    """The process group this process is in, or None when it trains alone."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                       dist.get_backend())


def shutdown(ok: bool = True) -> None:
    """Leave the process group. After success, wait for every rank first: a rank that tore the
    group down while another's last message was still in flight would abort it. After a failure,
    do not wait (the others may be stuck in a collective that will never complete): the process
    exits non-zero and torchrun stops the rest."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if ok:
        ctx = current()
        dist.barrier(device_ids=[ctx.local_rank] if ctx and ctx.backend == "nccl" else None)
        dist.destroy_process_group()


# --- collectives ---------------------------------------------------------------------------------

def broadcast_object(obj, ctx: DistContext | None):
    """Rank 0's obj on every rank (picklable; stays inside our own process group)."""
    if ctx is None:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=_object_device(ctx))
    return box[0]


def gather_objects(obj, ctx: DistContext | None) -> list | None:
    """Every rank's obj, in rank order, on rank 0; None on the other ranks."""
    if ctx is None:
        return [obj]
    out = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_gather_objects(obj, ctx: DistContext | None) -> list:
    if ctx is None:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def mean(t: torch.Tensor, ctx: DistContext | None) -> torch.Tensor:
    """The mean of t over ranks (a new tensor; no host sync). gloo has no AVG, so SUM / world."""
    if ctx is None:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def mean_grads(module: nn.Module, ctx: DistContext | None) -> None:
    """Average the parameters' gradients over the ranks, one all-reduce per dtype: data parallelism
    by hand, for steps that call a model more than once before its backward (which DDP refuses)."""
    if ctx is None:
        return
    for p in module.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)  # every rank must send the same layout
    _agree([p.grad for p in module.parameters()], ctx)


def sync_buffers(module: nn.Module, ctx: DistContext | None) -> None:
    """Make every rank's buffers equal: BatchNorm's running statistics become their mean over the
    ranks, integer buffers (batch counters) rank 0's. One collective per dtype.

    DDP averages gradients, but each rank's BatchNorm updates its running statistics from its own
    batch. Averaging them after each step keeps every rank's model (and EMA) identical and lets the
    statistics see every rank's images; copying rank 0's instead would estimate them from rank 0's
    shard alone, which matters when a fine-tune sees only a few labeled images per rank.
    """
    if ctx is not None:
        _agree(list(module.buffers()), ctx)


def _agree(tensors: list[torch.Tensor], ctx: DistContext) -> None:
    """In place on every rank: floating tensors become their mean over the ranks, others rank 0's.
    The tensors of each dtype travel flattened together, in one collective."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for dtype, group in by_dtype.items():
        flat = torch.cat([t.reshape(-1) for t in group])
        if dtype.is_floating_point:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat /= ctx.world_size
        else:
            dist.broadcast(flat, src=0)
        offset = 0
        for t in group:
            t.copy_(flat[offset: offset + t.numel()].view_as(t))
            offset += t.numel()


def _object_device(ctx: DistContext) -> torch.device:
    return ctx.device() if ctx.backend == "nccl" else torch.device("cpu")


# --- data ----------------------------------------------------------------------------------------

def shard(indices: torch.Tensor, ctx: DistContext | None, keys: torch.Tensor | None = None) -> torch.Tensor:
    """This rank's share of indices: every world_size-th after sorting by keys (e.g. the class),
    so each rank's labeled shard holds every class that has at least world_size images."""
    if ctx is None or len(indices) == 0:  # nothing to share (e.g. a retrain that accepted the whole pool)
        return indices
    order = torch.argsort(keys, stable=True) if keys is not None else torch.arange(len(indices))
    mine = indices[order][ctx.rank:: ctx.world_size]
    if len(mine) == 0:
        raise MPLStudioError(f"{len(indices)} images cannot be shared among {ctx.world_size} processes; "
                             "use fewer processes or more images")
    return mine.sort().values


def contiguous_shard(n: int, ctx: DistContext | None) -> slice:
    """This rank's contiguous slice of range(n) (inference: rank 0 concatenates the slices in order)."""
    if ctx is None:
        return slice(0, n)
    bounds = torch.linspace(0, n, ctx.world_size + 1).round().long().tolist()
    return slice(bounds[ctx.rank], bounds[ctx.rank + 1])
