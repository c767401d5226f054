"""Batched inference: class probabilities and accuracy of a model over uint8 images."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn as nn

from mpl_core.engine.augment import to_float


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX tiles or AVX512-BF16).

    Without them oneDNN emulates bf16 by converting to fp32 and back, which is slower than plain
    fp32, so CPU autocast is only worth it here. torch exposes the checks only as private helpers;
    a torch without them counts as "no".
    """
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def bf16_autocast_applies(device: torch.device, enabled: bool = True) -> bool:
    """bf16 autocast runs on CUDA and on CPUs with native bf16; elsewhere it would cost time."""
    if not enabled:
        return False
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast where it applies (see bf16_autocast_applies); a no-op elsewhere."""
    if bf16_autocast_applies(device, enabled):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_logits(model: nn.Module, images_u8: torch.Tensor, device: torch.device, *,
                   batch_size: int = 1024, amp: bool = True, indices: torch.Tensor | None = None,
                   on_batch: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Logits (N, K) in float32 on the CPU, for (N, C, H, W) uint8 images, in eval mode.

    indices: only these rows, gathered a batch at a time (a memory-mapped pool is never copied whole).
    on_batch(done, total) is called after each batch (progress bars, stop checks).
    """
    was_training = model.training
    model.eval()
    outs = []
    try:
        n = len(images_u8) if indices is None else len(indices)
        for start in range(0, n, batch_size):
            rows = images_u8[start: start + batch_size] if indices is None else \
                images_u8[indices[start: start + batch_size]]
            x = to_float(rows.to(device, non_blocking=True))
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast_for(device, amp):
                outs.append(model(x).float().cpu())
            if on_batch:
                on_batch(min(start + batch_size, n), n)
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
