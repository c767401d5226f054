"""The small surface the app's pages call (pages never import torch)."""
from __future__ import annotations

import json
from pathlib import Path

from .data import default_data_root, find_fashion_mnist


def builtin_dataset_status(data_root: str | Path | None = None) -> dict:
    folder = find_fashion_mnist(data_root or default_data_root())
    return {"found": folder is not None, "where": str(folder) if folder else None}


def list_runs(runs_root: str | Path = "runs") -> list[dict]:
    """Finished CLI runs (folders with a result.json): name, algorithm, accuracies, curve."""
    rows = []
    for result in sorted(Path(runs_root).glob("*/result.json")):
        try:
            data = json.loads(result.read_text())
        except (OSError, ValueError):
            continue
        cfg, m = data.get("config", {}), data.get("metrics", {})
        rows.append({"run": result.parent.name, "dataset": cfg.get("data", {}).get("dataset"),
                     "algorithm": cfg.get("algorithm", {}).get("name"),
                     "labels_per_class": cfg.get("data", {}).get("labels_per_class"),
                     "steps": cfg.get("train", {}).get("steps"), "test_acc": m.get("test_acc"),
                     "history": data.get("history", [])})
    return rows
