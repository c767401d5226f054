"""Exponential moving average of a model's weights (the evaluated student).

The decay warms up as TensorFlow's ExponentialMovingAverage does with num_updates: at update n it is
min(decay, (1 + n) / (10 + n)), so a short run's average is not mostly its random initial weights
(at 0.99 from the start, 60 steps would leave 55% of them; a short supervised run's EMA, the model
its checkpoint gives, then scored at chance). From about update 900 on it is the plain decay.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold in the model after its update number step (0 for the first)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        ema_state = self.model.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if value.dtype.is_floating_point:
                target.lerp_(value.detach(), 1.0 - decay)
            else:  # BatchNorm's num_batches_tracked
                target.copy_(value)
