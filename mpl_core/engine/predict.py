"""Pseudo-labels from a model: class probabilities over the unlabeled pool and the model's
predictions on the validation split (which calibrate its confidence).

    probs, val = predict_pool(model, dataset, split, device)
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from mpl_core.data.dataset import Dataset
from mpl_core.data.splits import Split
from mpl_core.engine.inference import predict_logits


def predict_pool(model: nn.Module, dataset: Dataset, split: Split, device: torch.device, *,
                 batch_size: int = 1024, amp: bool = True,
                 on_batch: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, dict]:
    """Class probabilities (U, K) over the unlabeled pool, and the model's validation predictions."""
    probs = pool_probabilities(model, dataset.train.images, device, batch_size=batch_size, amp=amp,
                               on_batch=on_batch, indices=split.unlabeled)
    return probs, validation_predictions(model, dataset, split, device, amp=amp)


def pool_probabilities(model: nn.Module, images_u8: torch.Tensor, device: torch.device, *, batch_size: int = 1024,
                       amp: bool = True, on_batch: Callable[[int, int], None] | None = None,
                       indices: torch.Tensor | None = None) -> np.ndarray:
    """Class probabilities (N, K) for uint8 images (a pool, or one process's share of it), or for
    the rows `indices` of them."""
    logits = predict_logits(model, images_u8, device, batch_size=batch_size, amp=amp, on_batch=on_batch,
                            indices=indices)
    return torch.softmax(logits, dim=-1).numpy()


def validation_predictions(model: nn.Module, dataset: Dataset, split: Split, device: torch.device,
                           amp: bool = True) -> dict:
    """{confidence, label, truth} lists for the validation split (the calibration evidence)."""
    if len(split.val) == 0:
        return {"confidence": [], "label": [], "truth": []}
    logits = predict_logits(model, dataset.train.images[split.val], device, amp=amp)
    probs = torch.softmax(logits, dim=-1)
    conf, label = probs.max(dim=-1)
    return {"confidence": [round(v, 6) for v in conf.tolist()], "label": label.tolist(),
            "truth": dataset.train.labels[split.val].tolist()}
