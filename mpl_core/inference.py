"""Batched inference: class probabilities and accuracy of a model over uint8 images."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn as nn

from .augment import to_float


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU bf16 is slower than fp32 on most CPUs)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_logits(model: nn.Module, images_u8: torch.Tensor, device: torch.device, *,
                   batch_size: int = 1024, amp: bool = True,
                   on_batch: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Logits (N, K) in float32 on the CPU, for (N, C, H, W) uint8 images, in eval mode.

    on_batch(done, total) is called after each batch (progress bars, stop checks).
    """
    was_training = model.training
    model.eval()
    outs = []
    try:
        for start in range(0, len(images_u8), batch_size):
            x = to_float(images_u8[start: start + batch_size].to(device, non_blocking=True))
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, amp):
                outs.append(model(x).float().cpu())
            if on_batch:
                on_batch(min(start + batch_size, len(images_u8)), len(images_u8))
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0, 0)


def accuracy(model: nn.Module, images_u8: torch.Tensor, labels: torch.Tensor, device: torch.device,
             **kwargs) -> float:
    """Top-1 accuracy in [0, 1]; nan for an empty set."""
    if len(labels) == 0:
        return float("nan")
    logits = predict_logits(model, images_u8, device, **kwargs)
    return (logits.argmax(-1) == labels).float().mean().item()
