"""How a step runs its models: wrapped in DDP under torchrun, compiled when asked, each rank on its shard.

    wrappers = ModelWrappers(ctx, device, compile=cfg.train.compile)
    with wrappers.step_context(amp):
        supervised_step(wrappers.wrap(state.student), batch, cfg.algorithm, step)
    wrappers.sync_buffers(state.student, state.teacher)

The wrappers share the parameters and the optimizer with the plain module; checkpoints, the EMA
and evaluation keep using the plain module, so nothing outside the step sees a wrapper.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from mpl_core.data.splits import Split
from mpl_core.engine import distributed as dist_
from mpl_core.engine.algorithms import Learner
from mpl_core.engine.inference import autocast_for

# DDP's switch for "do not broadcast buffers before every forward" was renamed in recent torch.
_NO_FORWARD_BUFFER_SYNC = ({"forward_sync_buffers": False}
                           if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                           else {"broadcast_buffers": False})


@dataclass
class ModelWrappers:
    """The DDP and/or compiled wrappers of one run's models, made on first use and kept for the run."""
    ctx: dist_.DistContext | None  # the process group under torchrun; None alone
    device: torch.device
    compile: bool = False  # cfg.train.compile
    _cache: dict = field(default_factory=dict)  # (id(module), by hand) -> its wrapper

    def wrap(self, learner: Learner | None, several_forwards: bool = False) -> Learner | None:
        """The learner the step runs. several_forwards: the step calls the model more than once
        before its backward, which DDP refuses; under torchrun the gradients are then averaged by
        hand after the backward (GradMeanLearner) instead of by DDP."""
        if learner is None or (self.ctx is None and not self.compile):
            return learner
        by_hand = self.ctx is not None and several_forwards
        key = (id(learner.model), by_hand)
        if key not in self._cache:
            model = learner.model
            if self.ctx is not None and not by_hand:
                # Buffers are synced once per step by sync_buffers rather than before every forward.
                ids = [self.device.index] if self.device.type == "cuda" else None
                model = DistributedDataParallel(model, device_ids=ids, **_NO_FORWARD_BUFFER_SYNC)
            if self.compile:
                if not self._cache:
                    # Dynamo caches graphs per code object, shared by every model of a class, and past
                    # its recompile limit it silently runs eagerly: after a few runs in one app
                    # process a compiled run would no longer be. Each run starts from a fresh cache
                    # (one job at a time; compiled kernels stay cached on disk).
                    torch._dynamo.reset()
                model = torch.compile(model, dynamic=False)  # a graph per batch shape: three per MPL step
            self._cache[key] = model
        if by_hand:
            return GradMeanLearner(self._cache[key], learner.optimizer, learner.scheduler, self.ctx)
        return dataclasses.replace(learner, model=self._cache[key])

    def step_context(self, amp: bool):
        """What a step runs under: bf16 autocast where it applies, and the compile fallback."""
        stack = contextlib.ExitStack()
        stack.enter_context(autocast_for(self.device, amp))
        stack.enter_context(self._compile_fallback())
        return stack

    def _compile_fallback(self):
        """Where torch.compile cannot compile (no C++ compiler, an unsupported op), run eagerly."""
        if not self.compile:
            return contextlib.nullcontext()
        import torch._dynamo.config
        return torch._dynamo.config.patch(suppress_errors=True)

    def mean_across(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Averages a tensor over the ranks (MPL's feedback); None alone."""
        return (lambda t: dist_.mean(t, self.ctx)) if self.ctx else None

    def sync_buffers(self, *learners: Learner | None) -> None:
        """Once per step, the ranks' buffers (BatchNorm statistics) to their mean: the DDP wrappers are
        told not to broadcast rank 0's before every forward (see distributed.sync_buffers)."""
        if self.ctx is not None:
            for learner in learners:
                if learner is not None:
                    dist_.sync_buffers(learner.model, self.ctx)


@dataclass
class GradMeanLearner(Learner):
    """A learner whose update averages the gradients over the ranks between backward and step."""
    ctx: dist_.DistContext | None = None

    def update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        dist_.mean_grads(self.model, self.ctx)
        self.optimizer.step()
        self.scheduler.step()


def shard_split(split: Split, labels: torch.Tensor, ctx: dist_.DistContext | None) -> Split:
    """The part of the split this rank draws its batches from (the whole split in one process).

    Labeled images are dealt out class by class, so every rank sees every class it can; the
    unlabeled stream (pool + validation images) is dealt out in turn. Evaluation still uses the
    whole validation split on every rank."""
    if ctx is None:
        return split
    labeled = dist_.shard(split.labeled, ctx, keys=labels[split.labeled])
    # every rank draws from all the trusted labels: a few hundred, which dealt out would leave a
    # rank some classes short, or none at all (draws are with replacement, each rank its own stream)
    return Split(labeled, dist_.shard(split.val, ctx) if len(split.val) >= ctx.world_size else split.val[:0],
                 dist_.shard(split.unlabeled, ctx), split.trusted)
