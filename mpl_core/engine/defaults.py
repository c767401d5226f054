"""Settings chosen by the device: the fastest way to run a config here that learns as well.

    cfg = for_device(cfg, device)   # "auto" settings made concrete before a run; saved with it

What each choice rests on is measured in docs/speed.md and docs/results.md:

- bf16 autocast (`TrainConfig.amp`, on by default) applies on CUDA and on CPUs that compute bf16
  natively (AMX, AVX512-BF16); elsewhere it would be emulated, 2 to 2.5 times slower than fp32,
  so those CPUs train in fp32 (`inference.bf16_autocast_applies`). A run whose model has a
  strided convolution that sees a 1x1 input (torchvision models on images of 16 px) trains in fp32
  on the CPU too: there the bf16 gradient of that convolution's weights comes out NaN or inf at
  random (torch 2.14's oneDNN kernels; `with_sound_bf16`).
- MPL's view batches (`AlgorithmConfig.view_batches`, "auto" by default): "separate" on a CPU,
  where it computes a quarter fewer FLOPs than the official code's joint batches and was as
  accurate (quick-demo over 4 seeds, cpu-10min over 3), with or without native bf16; "joint" on
  CUDA, as the official code runs, where larger batches suit the device and the FLOP saving is
  unmeasured.
- channels_last and torch.compile are left as they were: channels_last is on for every device,
  and compiling took minutes on a 2-core CPU for 5% faster steps, so it stays an option
  (`--compile`). Threads: torch's default (one per core) on the command line; a job started from
  the app follows Studio.job_threads (every core while no one uses the app).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from mpl_core.config import ModelConfig, RunConfig
from mpl_core.engine.inference import bf16_autocast_applies
from mpl_core.engine.models import build_model


def default_view_batches(device: torch.device) -> str:
    return "joint" if device.type == "cuda" else "separate"


def for_device(cfg: RunConfig, device: torch.device, saved: dict | None = None) -> RunConfig:
    """cfg with its "auto" settings made concrete for this device (a copy; cfg is unchanged).

    saved: the config of the checkpoint a run resumes from; its concrete choice wins over the
    device's, so that a run started on a CPU and resumed on a GPU keeps the batching it began with."""
    if cfg.algorithm.view_batches != "auto":
        return cfg
    views = (saved or {}).get("algorithm", {}).get("view_batches", "auto")
    views = views if views != "auto" else default_view_batches(device)
    return dataclasses.replace(cfg, algorithm=dataclasses.replace(cfg.algorithm, view_batches=views))


def with_sound_bf16(cfg: RunConfig, model_cfg: ModelConfig, device: torch.device, roles: tuple[str, ...]) -> RunConfig:
    """cfg, in fp32 (train.amp off) where bf16 autocast would train one of the roles' models on this
    CPU through a strided convolution that sees a 1x1 input: on a 2-core AVX512-BF16 CPU the bf16
    gradient of such a convolution's weights (3x3, stride 2, on 256 channels) was NaN or inf in 1 to
    10 of 20 tries, and a ResNet-18 teacher on 16 px images diverged in 5 of 8 two-step MPL runs;
    fp32 never did. The checkpoints record the amp the run trained with."""
    if device.type != "cpu" or not bf16_autocast_applies(device, cfg.train.amp):
        return cfg
    with torch.random.fork_rng(devices=[]):  # building the probes draws initial weights: not from the caller's RNG
        probes = [build_model(model_cfg, role=role) for role in roles]
    if not any(_strided_conv_sees_one_pixel(model, model_cfg) for model in probes):
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, amp=False))


def _strided_conv_sees_one_pixel(model: nn.Module, cfg: ModelConfig) -> bool:
    """Whether a strided convolution with a kernel wider than 1 gets a 1x1 input at cfg's image size."""
    hits: list[nn.Module] = []
    convs = [m for m in model.modules()
             if isinstance(m, nn.Conv2d) and max(m.stride) > 1 and max(m.kernel_size) > 1]
    hooks = [m.register_forward_hook(lambda m, inputs, _: hits.append(m) if inputs[0].shape[-2:] == (1, 1) else None)
             for m in convs]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size))
    finally:
        for hook in hooks:
            hook.remove()
    return bool(hits)
