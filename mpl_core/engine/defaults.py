"""Settings chosen by the device: the fastest way to run a config here that learns as well.

    cfg = for_device(cfg, device)   # "auto" settings made concrete before a run; saved with it

What each choice rests on is measured in docs/speed.md and docs/results.md:

- bf16 autocast (`TrainConfig.amp`, on by default) applies on CUDA and on CPUs that compute bf16
  natively (AMX, AVX512-BF16); elsewhere it would be emulated, 2 to 2.5 times slower than fp32,
  so those CPUs train in fp32 (`inference.bf16_autocast_applies`).
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

from mpl_core.config import RunConfig


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

