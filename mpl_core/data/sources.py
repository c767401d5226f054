"""Where datasets come from: the built-in Fashion-MNIST (Debian package, data/ or a download),
torchvision sets (downloaded where there is network), and own images (a folder or zip).
"""
from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from mpl_core.data.dataset import Dataset, ImageSet
from mpl_core.data.imagefolder import load_image_folder
from mpl_core.errors import MPLStudioError

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION_SETS = ("mnist", "cifar10", "svhn")
BUILTIN_SETS = ("fashion-mnist",) + TORCHVISION_SETS
# Horizontal flips change the meaning of digits; clothing and CIFAR objects are symmetric enough.
FLIP_OK = {"fashion-mnist": True, "mnist": False, "cifar10": True, "svhn": False}


def load_dataset(name_or_path: str, data_root: str | Path = "data", *, image_size: int = 0,
                 download: bool = True, cache_dir: str | Path | None = None, device_kind: str = "cpu",
                 on_progress=None) -> Dataset:
    """Load a built-in dataset by name, or own images from a folder or zip path (decoded once into
    cache_dir, by default a folder under data_root/cache named after the path)."""
    key = name_or_path.strip().lower().replace("_", "-")
    if key in ("fashion-mnist", "fashionmnist", "fmnist"):
        return load_fashion_mnist(data_root, download=download)
    if key.replace("-", "") in TORCHVISION_SETS:
        return load_torchvision(key.replace("-", ""), data_root, download=download)
    if cache_dir is None:
        key = hashlib.blake2b(str(Path(name_or_path).resolve()).encode(), digest_size=8).hexdigest()
        cache_dir = Path(data_root) / "cache" / f"{Path(name_or_path).stem[:40]}-{key}"
    return load_image_folder(name_or_path, image_size=image_size, cache_dir=cache_dir, device_kind=device_kind,
                             on_progress=on_progress)


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
                   flip=FLIP_OK["fashion-mnist"])


def _download_fashion_mnist(data_root: Path) -> Path:
    import torchvision
    root = data_root / "torchvision"
    try:
        torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(root), train=False, download=True)
    except Exception as exc:  # network errors come in many types
        raise MPLStudioError(f"could not download Fashion-MNIST ({exc.__class__.__name__}): install the Debian "
                             "package dataset-fashion-mnist or copy the IDX files to data/fashion-mnist/") from exc
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
    return Dataset(name, classes, train, test, fully_labeled=True, flip=FLIP_OK[name])


def default_data_root() -> Path:
    """data/ next to the project, or $MPL_DATA_ROOT."""
    return Path(os.environ.get("MPL_DATA_ROOT", "data"))


def builtin_dataset_status(data_root: str | Path | None = None) -> dict:
    """Whether the built-in Fashion-MNIST is on this machine, and where."""
    folder = find_fashion_mnist(data_root or default_data_root())
    return {"found": folder is not None, "where": str(folder) if folder else None}
