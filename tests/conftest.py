"""Shared fixtures: tiny data, CPU only, nothing downloaded."""
from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpl_core.config import AlgorithmConfig, DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from mpl_core.data.dataset import Dataset, ImageSet  # noqa: E402
from mpl_core.data.sources import find_fashion_mnist, load_fashion_mnist  # noqa: E402

torch.set_num_threads(2)


def swap_step(monkeypatch, name: str, step) -> None:
    """Make the training loop run `step` for algorithm `name` for the rest of this test."""
    from mpl_core.engine.algorithms import ALGORITHM_REGISTRY
    monkeypatch.setitem(ALGORITHM_REGISTRY, name, dataclasses.replace(ALGORITHM_REGISTRY[name], step=step))


@pytest.fixture(scope="session")
def fmnist() -> Dataset:
    """Fashion-MNIST from data/ or the Debian package (make test installs it); never downloaded."""
    if find_fashion_mnist(ROOT / "data") is None:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return load_fashion_mnist(ROOT / "data", download=False)


def stripes(n: int, label: int, gen: torch.Generator, size: int = 16) -> torch.Tensor:
    """Class 0: horizontal stripes, class 1: vertical, with noise and random phase. (N, 1, S, S) uint8."""
    phase = torch.randint(0, 4, (n, 1, 1), generator=gen)
    idx = torch.arange(size)
    pattern = ((idx[None, :, None] + phase) // 2 % 2).expand(n, size, size) if label == 0 else \
        ((idx[None, None, :] + phase) // 2 % 2).expand(n, size, size)
    noise = torch.rand(n, size, size, generator=gen) * 0.3
    return ((pattern * 0.7 + noise) * 255).clamp(0, 255).to(torch.uint8)[:, None]


def stripes_dataset() -> Dataset:
    """Two-class synthetic stripes: 120 per class in the pool, 50 per class in test."""
    gen = torch.Generator().manual_seed(0)

    def make(n, prefix):
        imgs = torch.cat([stripes(n, 0, gen), stripes(n, 1, gen)])
        labels = torch.cat([torch.zeros(n, dtype=torch.int64), torch.ones(n, dtype=torch.int64)])
        return ImageSet(imgs, labels, [f"{prefix}/{i:04d}" for i in range(2 * n)])

    return Dataset("stripes", ["horizontal", "vertical"], make(120, "train"), make(50, "test"), fully_labeled=True)


@pytest.fixture
def tiny_dataset() -> Dataset:
    return stripes_dataset()


def tiny_config(algorithm: str = "mpl", **train) -> RunConfig:
    t = dict(steps=6, batch_size=4, mu=2, eval_every=3, finetune_steps=2, checkpoint_every=0, warmup_steps=1)
    t.update(train)
    return RunConfig(DataConfig(dataset="stripes", labels_per_class=4, val_per_class=4), ModelConfig(width=4),
                     AlgorithmConfig(name=algorithm, unlabeled_ramp_steps=1, threshold=0.5), TrainConfig(**t))


def png_bytes(mode: str = "RGB", size=(20, 20), color=128) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A small own-images folder: 3 classes x 6 labeled, 10 unlabeled, 2 test per class."""
    root = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for c, name in enumerate(["circle", "square", "triangle"]):
        for split, n in (("labeled", 6), ("test", 2)):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                arr = (rng.random((24, 24, 3)) * 60 + c * 80).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    (root / "unlabeled").mkdir()
    for i in range(10):
        Image.fromarray((rng.random((30, 20)) * 255).astype(np.uint8)).save(root / "unlabeled" / f"u{i}.jpg")
    return root


def write_stripes_folder(root: Path, labeled: int = 8, unlabeled: int = 40, test: int = 10) -> Path:
    """An own-images folder of the two stripe classes: labeled/<class>, unlabeled/, test/<class>."""
    gen = torch.Generator().manual_seed(1)
    for c, name in enumerate(["horizontal", "vertical"]):
        for split, n in (("labeled", labeled), ("test", test)):
            d = root / split / name
            d.mkdir(parents=True)
            for i, img in enumerate(stripes(n, c, gen)):
                Image.fromarray(img[0].numpy()).save(d / f"{name}_{i}.png")
    (root / "unlabeled").mkdir()
    for i in range(unlabeled):
        Image.fromarray(stripes(1, i % 2, gen)[0, 0].numpy()).save(root / "unlabeled" / f"u{i:03d}.png")
    return root


@pytest.fixture
def tiny_workspace(tmp_path):
    """A workspace over a 2-class stripes folder inside tmp_path (the data root)."""
    from mpl_core.workspace.workspace import create_workspace
    write_stripes_folder(tmp_path / "stripes")
    return create_workspace("tiny", DataConfig(dataset="stripes", val_fraction=0.25), tmp_path)


def tiny_run_config(algorithm: str = "mpl", **train) -> RunConfig:
    cfg = tiny_config(algorithm, **train)
    cfg.train.device = "cpu"
    return cfg


class _FullDisk:
    """A sqlite3 connection whose writes fail as on a full disk."""

    def __init__(self, con):
        self._con = con

    def execute(self, sql, *args):
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE")):
            import sqlite3
            raise sqlite3.OperationalError("database or disk is full")
        return self._con.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._con, name)


@pytest.fixture
def full_disk(monkeypatch):
    """Call full_disk(True) to make the workspace store's writes fail as on a full disk, False to free it."""
    from contextlib import contextmanager

    from mpl_core.workspace.store import Store
    real = Store._connect

    @contextmanager
    def full(self):
        with real(self) as con:
            yield _FullDisk(con)

    def set_full(is_full: bool) -> None:
        monkeypatch.setattr(Store, "_connect", full if is_full else real)
    return set_full
