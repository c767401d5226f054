"""The small surface the app's pages call (pages never import torch)."""
from __future__ import annotations

from pathlib import Path

from .data import default_data_root, find_fashion_mnist
from .errors import MPLStudioError


def builtin_dataset_status(data_root: str | Path | None = None) -> dict:
    folder = find_fashion_mnist(data_root or default_data_root())
    return {"found": folder is not None, "where": str(folder) if folder else None}


def threshold_index(ws, round_: int | None = None):
    """A ThresholdIndex over a round of pseudo-labels (the newest by default), with the true labels
    beside it where the dataset knows them (built-in datasets), for checking the estimate."""
    from .pseudo_labels import ThresholdIndex, calibration_from_validation
    rows = ws.store.pseudo_labels(round_)
    if rows is None:
        raise MPLStudioError("no pseudo-labels yet: generate them from a trained model first")
    ds = ws.dataset()
    truth = ds.train.labels.numpy()[rows.idx] if ds.fully_labeled else None
    return ThresholdIndex(rows.label, rows.confidence, ds.num_classes,
                          calibration_from_validation(rows.validation), truth, rows.validation)
