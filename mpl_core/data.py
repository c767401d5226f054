"""Datasets as in-memory uint8 tensors: the built-in Fashion-MNIST, torchvision sets, own images.

Every dataset becomes a `Dataset`: a training pool (labeled candidates and unlabeled images)
and an optional test set, each an `ImageSet` of (N, C, H, W) uint8 images, int64 labels
(-1 where nobody knows the label) and stable string ids. Images stay uint8 on the host and
are augmented on the training device in whole batches (see augment.py).
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import MPLStudioError

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION_SETS = ("mnist", "cifar10", "svhn")
BUILTIN_SETS = ("fashion-mnist",) + TORCHVISION_SETS
# Horizontal flips change the meaning of digits; clothing and CIFAR objects are symmetric enough.
FLIP_OK = {"fashion-mnist": True, "mnist": False, "cifar10": True, "svhn": False}


@dataclass
class ImageSet:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64, -1 = unknown
    ids: list[str]  # stable per-sample ids, e.g. "train/000123" or "unlabeled/cat_01.png"

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: torch.Tensor) -> "ImageSet":
        idx = idx.long()
        return ImageSet(self.images[idx], self.labels[idx], [self.ids[i] for i in idx.tolist()])


@dataclass
class Dataset:
    name: str
    class_names: list[str]
    train: ImageSet  # pool the split draws labeled, validation and unlabeled samples from
    test: ImageSet | None  # only ever measured on
    fully_labeled: bool  # True for benchmarks: every pool label is known, the split hides most
    flip: bool = True  # whether horizontal flips are label-preserving
    report: object | None = None  # ImportReport for own images
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])


def load_dataset(name_or_path: str, data_root: str | Path = "data", *, image_size: int = 0,
                 download: bool = True) -> Dataset:
    """Load a built-in dataset by name, or own images from a folder or zip path."""
    key = name_or_path.strip().lower().replace("_", "-")
    if key in ("fashion-mnist", "fashionmnist", "fmnist"):
        return load_fashion_mnist(data_root, download=download)
    if key.replace("-", "") in TORCHVISION_SETS:
        return load_torchvision(key.replace("-", ""), data_root, download=download)
    from .imagefolder import load_image_folder  # own images: folder or zip
    return load_image_folder(name_or_path, image_size=image_size)


# --- Fashion-MNIST -----------------------------------------------------------------------------

def _idx_candidates(data_root: Path) -> list[Path]:
    return [data_root / "fashion-mnist", data_root / "torchvision" / "FashionMNIST" / "raw",
            SYSTEM_FASHION_MNIST]


def find_fashion_mnist(data_root: str | Path = "data") -> Path | None:
    """First folder holding the four IDX files (plain or .gz): data/, then the Debian package."""
    for folder in _idx_candidates(Path(data_root)):
        if all(_idx_file(folder, stem) for stem in _FMNIST_FILES.values()):
            return folder
    return None


_FMNIST_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
                 "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise MPLStudioError(f"{path} is not an IDX file of unsigned bytes; re-download the dataset")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise MPLStudioError(f"{path} is truncated ({data.size} of {int(np.prod(dims))} bytes); re-download it")
    return data.reshape(dims)


def load_fashion_mnist(data_root: str | Path = "data", *, download: bool = True) -> Dataset:
    folder = find_fashion_mnist(data_root)
    if folder is None:
        if not download:
            raise MPLStudioError("Fashion-MNIST not found: install the Debian package dataset-fashion-mnist "
                                 "or put the IDX files in data/fashion-mnist/")
        folder = _download_fashion_mnist(Path(data_root))
    arrays = {k: read_idx(_idx_file(folder, stem)) for k, stem in _FMNIST_FILES.items()}
    train = _imageset(arrays["train_x"][:, None], arrays["train_y"], "train")
    test = _imageset(arrays["test_x"][:, None], arrays["test_y"], "test")
    return Dataset("fashion-mnist", list(FASHION_MNIST_CLASSES), train, test, fully_labeled=True,
                   flip=FLIP_OK["fashion-mnist"], extra={"source": str(folder)})


def _download_fashion_mnist(data_root: Path) -> Path:
    import torchvision
    root = data_root / "torchvision"
    try:
        torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(root), train=False, download=True)
    except Exception as exc:  # network errors come in many types
        raise MPLStudioError(f"could not download Fashion-MNIST ({exc.__class__.__name__}): install the "
                             "Debian package dataset-fashion-mnist or copy the IDX files to data/fashion-mnist/") from exc
    return root / "FashionMNIST" / "raw"


def _imageset(images: np.ndarray, labels: np.ndarray, prefix: str) -> ImageSet:
    n = len(images)
    width = len(str(n - 1))
    return ImageSet(torch.from_numpy(np.array(images, copy=True)),
                    torch.from_numpy(labels.astype(np.int64)),
                    [f"{prefix}/{i:0{width}d}" for i in range(n)])


# --- torchvision datasets ------------------------------------------------------------------------

def load_torchvision(name: str, data_root: str | Path = "data", *, download: bool = True) -> Dataset:
    """MNIST, CIFAR-10 or SVHN via torchvision, downloaded into data/torchvision on first use."""
    import torchvision.datasets as tvd
    root = str(Path(data_root) / "torchvision")
    try:
        if name == "mnist":
            parts = [tvd.MNIST(root, train=t, download=download) for t in (True, False)]
            arrays = [(p.data.numpy()[:, None], p.targets.numpy()) for p in parts]
            classes = [str(i) for i in range(10)]
        elif name == "cifar10":
            parts = [tvd.CIFAR10(root, train=t, download=download) for t in (True, False)]
            arrays = [(p.data.transpose(0, 3, 1, 2), np.asarray(p.targets)) for p in parts]
            classes = list(parts[0].classes)
        elif name == "svhn":
            parts = [tvd.SVHN(root, split=s, download=download) for s in ("train", "test")]
            arrays = [(p.data, p.labels) for p in parts]
            classes = [str(i) for i in range(10)]
        else:
            raise MPLStudioError(f"unknown dataset {name!r}; choose one of {', '.join(BUILTIN_SETS)}")
    except MPLStudioError:
        raise
    except Exception as exc:
        raise MPLStudioError(f"could not load {name} from {root} ({exc.__class__.__name__}: {exc}); it is "
                             "downloaded on first use, which needs network access") from exc
    train = _imageset(*arrays[0], "train")
    test = _imageset(*arrays[1], "test")
    return Dataset(name, classes, train, test, fully_labeled=True, flip=FLIP_OK[name],
                   extra={"source": root})


def channel_stats(images_u8: torch.Tensor, max_samples: int = 10000) -> tuple[tuple, tuple]:
    """Per-channel mean and std in [0, 1] units, from up to max_samples images."""
    x = images_u8[:max_samples].float().div(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def default_data_root() -> Path:
    """data/ next to the project, or $MPL_DATA_ROOT."""
    return Path(os.environ.get("MPL_DATA_ROOT", "data"))


def select_classes(dataset: Dataset, class_ids: list[int]) -> Dataset:
    """A dataset restricted to some classes, relabeled 0..len(class_ids)-1 (ids unchanged)."""
    remap = torch.full((dataset.num_classes,), -1, dtype=torch.int64)
    remap[torch.tensor(class_ids)] = torch.arange(len(class_ids))

    def restrict(s: ImageSet | None) -> ImageSet | None:
        if s is None:
            return None
        keep = torch.nonzero((s.labels >= 0) & (remap[s.labels.clamp_min(0)] >= 0)).flatten()
        sub = s.subset(keep)
        return ImageSet(sub.images, remap[sub.labels], sub.ids)

    return Dataset(f"{dataset.name}[{','.join(map(str, class_ids))}]", [dataset.class_names[i] for i in class_ids],
                   restrict(dataset.train), restrict(dataset.test), dataset.fully_labeled, dataset.flip,
                   extra=dict(dataset.extra))
