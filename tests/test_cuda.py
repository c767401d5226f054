"""Checks that only a GPU can make; skipped without one (bench/gpu_checks.sh runs them on a GPU).

The fast-versus-reference agreement on CUDA lives in test_reference.py with the CPU cases."""

import pytest
import torch

from mpl_core.config import AlgorithmConfig, ModelConfig, RunConfig, TrainConfig
from mpl_core.engine.algorithms import FeedbackState, mpl_step
from mpl_core.engine.augment import make_batch
from mpl_core.engine.ema import ModelEMA
from mpl_core.engine.inference import autocast_for
from mpl_core.engine.models import build_model
from mpl_core.engine.sampling import to_device
from mpl_core.engine.state import make_learner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("view_batches", ["joint", "separate"])
def test_an_mpl_step_never_waits_for_the_gpu(view_batches):
    """The step as the training loop runs it (indices drawn on the CPU, copied without blocking,
    augmentation on the device, bf16, the EMA update) makes no host sync: CUDA's sync debug mode
    raises on any (an .item(), a mask index, a blocking copy)."""
    device = torch.device("cuda")
    cfg = RunConfig(train=TrainConfig(steps=10, lr=0.05, warmup_steps=0))
    learners = []
    for _ in range(2):
        m = build_model(ModelConfig(name="cnn", num_classes=10, in_channels=3, image_size=32, width=8)).to(device)
        learners.append(make_learner(m.to(memory_format=torch.channels_last), 0.05, cfg, 10, 0))
    teacher, student = learners
    ema = ModelEMA(student.model, 0.99)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (64,), device=device)
    algo = AlgorithmConfig(name="mpl", threshold=0.5, view_batches=view_batches)
    gen, aug, state = torch.Generator().manual_seed(0), torch.Generator(device=device).manual_seed(1), FeedbackState()

    def step(s):
        li = to_device(torch.randint(64, (8,), generator=gen), device)
        ui = to_device(torch.randint(64, (16,), generator=gen), device)
        batch = make_batch(images, labels, li, ui, aug)
        with autocast_for(device, True):
            metrics = mpl_step(teacher, student, batch, algo, s, state)
        ema.update(student.model, s)
        return metrics

    step(0)  # the first step allocates and sets up kernels, which may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for s in range(1, 4):
            metrics = step(s)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(metrics["t_loss"]).item()
