"""Exponential moving average of a model's weights (the evaluated student).

It starts as the plain running mean of the models so far: at update n (0 for the first) the decay is
min(decay, n / (n + 1)), so the initial weights drop out at the first update and, after about
1 / (1 - decay) updates (100 at 0.99), it is the plain EMA. Without that, a short run's average was
mostly its random initial weights (60 steps at 0.99 leave 55% of them; a short supervised run's EMA,
the model its checkpoint gives, scored at chance), while a run of hundreds of steps hardly changes:
the first 100 updates weigh 0.99^(n - 100) at update n. TensorFlow's ExponentialMovingAverage
warms up the same way with num_updates, more slowly ((1 + n) / (10 + n): 0.99 only at n = 890).
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
        decay = min(self.decay, step / (step + 1))
        ema_state = self.model.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if value.dtype.is_floating_point:
                target.lerp_(value.detach(), 1.0 - decay)
            else:  # BatchNorm's num_batches_tracked
                target.copy_(value)
