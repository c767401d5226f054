"""Workspaces: one project per folder under data/workspaces/, shared by the app and the CLI.

    ws = create_workspace("demo", DataConfig(dataset="fashion-mnist"), data_root="data")
    ws = open_workspace("demo", data_root="data")
    ws.dataset(), ws.split(), ws.store, ws.run_dir(run_id)

dataset() and split() include the pool images people labeled for validation (store.validation):
they are validation images under the labels given, no longer in the pool.

A workspace holds `workspace.json` (its data choice), `store.sqlite` (runs, metrics,
pseudo-labels, decisions), `runs/<id>/` (checkpoints) and `job.lock`. Every path it touches
is resolved and must stay inside the data root.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import threading
from pathlib import Path

from mpl_core.config import DataConfig
from mpl_core.data.dataset import Dataset
from mpl_core.data.imagefolder import open_cached
from mpl_core.data.sources import BUILTIN_SETS, load_dataset
from mpl_core.data.splits import Split, make_split, with_validation_labels
from mpl_core.errors import MPLStudioError
from mpl_core.workspace.store import Store

WORKSPACES = "workspaces"
WORKSPACE_FILE = "workspace.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def inside(path: str | Path, root: str | Path) -> Path:
    """path resolved (symlinks followed); an error if it leaves root."""
    root_r = Path(root).resolve()
    p = Path(path)
    resolved = (p if p.is_absolute() else root_r / p).resolve()
    if resolved != root_r and root_r not in resolved.parents:
        raise MPLStudioError(f"{path} is outside the data folder {root_r}; copy it under that folder first")
    return resolved


def device_kind() -> str:
    """What the training size of own images is chosen for: "cuda" where a GPU is visible."""
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def is_builtin(dataset: str) -> bool:
    key = dataset.strip().lower().replace("_", "-")
    return key in ("fashion-mnist", "fashionmnist", "fmnist") or key.replace("-", "") in BUILTIN_SETS


class Workspace:
    """One project: its data choice, store and run folders. Dataset and split load on first use."""

    def __init__(self, root: Path, data_root: Path, data: DataConfig):
        self.root, self.data_root, self.data = root, data_root, data
        self.store = Store(root / "store.sqlite")
        self._dataset: Dataset | None = None  # as loaded or imported
        self._split: Split | None = None  # make_split's
        # (validation version, dataset, split) with the pool images labeled for validation moved
        self._labeled: tuple[int, Dataset, Split] | None = None
        self._labeled_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def lock_path(self) -> Path:
        return self.root / "job.lock"

    def dataset(self, on_progress=None) -> Dataset:
        """The dataset, with the labels people gave pool images for validation; own images are imported
        into the workspace's cache on first use (on_progress(done, total) while that runs) and
        memory-mapped from it afterwards."""
        self._loaded(on_progress)
        return self._with_validation()[0]

    def split(self) -> Split:
        """The split, with the pool images people labeled for validation moved to validation."""
        return self._with_validation()[1]

    def dataset_and_split(self) -> tuple[Dataset, Split]:
        """dataset() and split() as one pair: a validation label given between two calls cannot
        give a split whose validation images the dataset has no label for."""
        self._loaded()
        return self._with_validation()

    def _with_validation(self) -> tuple[Dataset, Split]:
        """make_split's split and the dataset, with the validation labels in force (store.validation)
        applied: rebuilt only when they changed."""
        version = self.store.validation.version()
        with self._labeled_lock:
            if self._labeled is None or self._labeled[0] != version:
                base = self._loaded()
                if self._split is None:
                    self._split = make_split(base, self.data)
                given = self.store.validation.in_force()
                self._labeled = (version, *with_validation_labels(base, self._split, given["idx"], given["label"]))
            return self._labeled[1], self._labeled[2]

    def _loaded(self, on_progress=None) -> Dataset:
        if self._dataset is None:
            source = self.data.dataset
            if is_builtin(source):
                self._dataset = load_dataset(source, self.data_root)
                return self._dataset
            source = str(inside(source, self.data_root))
            cached = open_cached(source, self.cache_dir(), self.data.image_size)
            if cached is None:  # first use, or the cache is gone or stale: import, then check it is the same data
                cached = load_dataset(source, self.data_root, image_size=self.data.image_size,
                                      cache_dir=self.cache_dir(), device_kind=device_kind(), on_progress=on_progress)
                self._check_same_images(cached)
            self._dataset = cached
        return self._dataset

    def _check_same_images(self, dataset: Dataset) -> None:
        """Decisions and pseudo-labels name images by pool position: refuse data where they moved."""
        ids = dataset.train.ids
        moved = [s for s, i in self.store.known_samples() if i >= len(ids) or ids[i] != s]
        if moved:
            raise MPLStudioError(f"the images in {self.data.dataset} changed since this workspace imported them "
                                 f"({len(moved)} of its reviewed or pseudo-labeled images moved or went), so its "
                                 "decisions would point at other images; put the images back as they were, or "
                                 "create a new workspace for the new images")

    def cache_dir(self, image_size: int | None = None) -> Path:
        size = self.data.image_size if image_size is None else image_size
        return self.root / "cache" / f"size-{size or 'auto'}"

    def set_image_size(self, image_size: int, on_progress=None) -> Dataset:
        """Train own images at another size (0 = automatic): imported again at that size, refused if
        the folder no longer holds the same images (the store's decisions name them by position)."""
        if is_builtin(self.data.dataset):
            raise MPLStudioError("the built-in datasets have one size; the training size is for own images")
        new = dataclasses.replace(self.data, image_size=int(image_size))
        from mpl_core.config import RunConfig
        RunConfig(data=new).validate()
        if new.image_size == self.data.image_size:
            return self.dataset(on_progress)
        before = self.dataset().train.ids
        source = str(inside(self.data.dataset, self.data_root))
        dataset = load_dataset(source, self.data_root, image_size=new.image_size,
                               cache_dir=self.cache_dir(new.image_size), device_kind=device_kind(),
                               on_progress=on_progress)
        if dataset.train.ids != before:
            shutil.rmtree(self.cache_dir(new.image_size), ignore_errors=True)
            raise MPLStudioError("the images in the folder changed since this workspace imported them, so its "
                                 "decisions would point at other images; create a new workspace for the new images")
        old = self.cache_dir()
        _write_data(self.root, new)
        self.data, self._dataset, self._labeled = new, dataset, None
        shutil.rmtree(old, ignore_errors=True)
        return dataset

    def run_dir(self, run_id: int) -> Path:
        return self.root / "runs" / f"{run_id:04d}"

    def describe(self) -> dict:
        return {"name": self.name, "path": str(self.root), "data": dataclasses.asdict(self.data)}


def workspaces_root(data_root: str | Path) -> Path:
    return Path(data_root).resolve() / WORKSPACES


def check_name(name: str) -> str:
    """A workspace name that is safe as a file and folder name, or an error saying what to type."""
    if not _NAME.match(name):
        raise MPLStudioError(f"workspace name {name!r}: use 1-64 letters, digits, '-', '_' or '.', "
                             "starting with a letter or digit")
    return name


def create_workspace(name: str, data: DataConfig, data_root: str | Path = "data", *,
                     exist_ok: bool = False) -> Workspace:
    """A new workspace (or the existing one with the same data choice, if exist_ok)."""
    check_name(name)
    data_root = Path(data_root).resolve()
    if not is_builtin(data.dataset):
        inside(data.dataset, data_root)  # own images must live under the data root
    root = workspaces_root(data_root) / name
    if (root / WORKSPACE_FILE).exists():
        if not exist_ok:
            raise MPLStudioError(f"workspace {name!r} already exists; open it or pick another name")
        ws = open_workspace(name, data_root)
        if dataclasses.asdict(ws.data) != dataclasses.asdict(data):
            raise MPLStudioError(f"workspace {name!r} uses other data settings ({_diff(ws.data, data)}); "
                                 "use another workspace for this data")
        return ws
    root.mkdir(parents=True, exist_ok=True)
    _write_data(root, data)
    return Workspace(root, data_root, data)


def _write_data(root: Path, data: DataConfig) -> None:
    tmp = root / (WORKSPACE_FILE + ".tmp")
    tmp.write_text(json.dumps({"data": dataclasses.asdict(data)}, indent=2))
    os.replace(tmp, root / WORKSPACE_FILE)


def _diff(a: DataConfig, b: DataConfig) -> str:
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    return ", ".join(f"{k}: {da[k]!r} there, {db[k]!r} here" for k in da if da[k] != db[k])


def open_workspace(name_or_path: str | Path, data_root: str | Path = "data") -> Workspace:
    """Open a workspace by name (under data/workspaces/) or by its folder path inside the data root."""
    data_root = Path(data_root).resolve()
    candidate = Path(name_or_path)
    if _NAME.match(str(name_or_path)) and not candidate.is_absolute():
        root = workspaces_root(data_root) / str(name_or_path)
        if not root.exists() and candidate.exists():
            root = inside(candidate, data_root)
    else:
        root = inside(candidate, data_root)
    meta = root / WORKSPACE_FILE
    if not meta.is_file():
        raise MPLStudioError(f"no workspace at {root}; create it first (python -m mpl_core train --workspace NAME)")
    try:
        data = DataConfig(**json.loads(meta.read_text())["data"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MPLStudioError(f"{meta} is damaged ({exc}); create a new workspace") from exc
    return Workspace(root, data_root, data)


def open_or_create_workspace(name: str, data_root: str | Path = "data", **data_fields) -> Workspace:
    """Open `name`, checking any data settings given against it; create it from them if new."""
    given = {k: v for k, v in data_fields.items() if v is not None}
    if not (workspaces_root(data_root) / name / WORKSPACE_FILE).exists():
        return create_workspace(name, DataConfig(**given), data_root)
    ws = open_workspace(name, data_root)
    differ = {k: (getattr(ws.data, k), v) for k, v in given.items() if getattr(ws.data, k) != v}
    if differ:
        shown = ", ".join(f"{k}={old!r} (asked {new!r})" for k, (old, new) in differ.items())
        raise MPLStudioError(f"workspace {name!r} was created with {shown}; leave those flags out "
                             "or use another workspace")
    return ws


def list_workspaces(data_root: str | Path = "data") -> list[dict]:
    root = workspaces_root(data_root)
    if not root.is_dir():
        return []
    out = []
    for meta in sorted(root.glob(f"*/{WORKSPACE_FILE}")):
        try:
            data = json.loads(meta.read_text())["data"]
        except (OSError, ValueError, KeyError):
            continue
        out.append({"name": meta.parent.name, "dataset": data.get("dataset"),
                    "labels_per_class": data.get("labels_per_class")})
    return out
