"""The decoded-image cache of an own-images dataset: every image decoded once into uint8 files,
read back memory-mapped, so that a pool can be larger than memory and a restart decodes nothing.

One cache folder holds one import at one training size:

    pool.u8       (N, C, S, S) training-size images of the pool: labeled rows, then unlabeled
    test.u8       the test images, the same layout (empty without test/)
    thumbs.bin    the pool's display images (JPEG, or PNG for small or transparent ones), shorter
                  side <= 160 px
    arrays.npz    thumbnail offsets, native sizes, source stamps (size and mtime, or size and CRC)
    index.json    written last: ids, labels, classes, the import report, the source and the key

A cache whose index is missing (a build killed midway), of another source or another requested
size is rebuilt; `CacheWriter` builds in a sibling folder and renames it into place.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from mpl_core.data.dataset import ImageSet

CACHE_VERSION = 1
THUMB_PX = 160  # the shorter side of a display thumbnail (the tiles of the review grid)


@dataclass
class CacheKey:
    source: str  # the resolved folder or zip
    requested_size: int  # the size asked for (0 = chosen from the data and the device)

    def matches(self, index: dict) -> bool:
        return (index.get("version") == CACHE_VERSION and index.get("source") == self.source
                and index.get("requested_size") == self.requested_size)


class CacheWriter:
    """Rows appended in order with plain writes (no memory map), so the import's memory stays flat
    however large the pool: only the page cache, which the kernel reclaims, holds the written rows."""

    def __init__(self, folder: Path):
        self.final = folder
        self.folder = folder.with_name(folder.name + ".building")
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.files = {part: open(self.folder / f"{part}.u8", "wb") for part in ("pool", "test")}
        self.thumbs = open(self.folder / "thumbs.bin", "wb")
        self.offsets, self.native, self.stamps = [0], {"pool": [], "test": []}, {"pool": [], "test": []}
        self.gray, self.digests = {"pool": [], "test": []}, []

    def add(self, part: str, rgb: np.ndarray, gray: bool, thumb: bytes | None, native: tuple[int, int],
            stamp: tuple[int, int], digest: str) -> None:
        """One (3, S, S) uint8 row; a gray image has three equal channels until `finish` decides."""
        self.files[part].write(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
        if part == "pool":
            self.thumbs.write(thumb or b"")
            self.offsets.append(self.offsets[-1] + len(thumb or b""))
            self.digests.append(digest)
        self.native[part].append(native)
        self.stamps[part].append(stamp)
        self.gray[part].append(gray)

    def finish(self, index: dict, size: int) -> str:
        """Write the index, keep one channel if every image was gray, and move into place; the mode."""
        for f in (*self.files.values(), self.thumbs):
            f.close()
        gray = all(self.gray["pool"]) and all(self.gray["test"])
        if gray:
            for part in ("pool", "test"):
                _keep_first_channel(self.folder / f"{part}.u8", size)
        np.savez(self.folder / "arrays.npz", offsets=np.asarray(self.offsets, dtype=np.int64),
                 digests=np.asarray(self.digests, dtype="S32").reshape(-1),
                 **{f"{p}_native": np.asarray(self.native[p], dtype=np.int32).reshape(-1, 2) for p in self.native},
                 **{f"{p}_stamps": np.asarray(self.stamps[p], dtype=np.int64).reshape(-1, 2) for p in self.stamps})
        mode = "L" if gray else "RGB"
        (self.folder / "index.json").write_text(json.dumps({**index, "version": CACHE_VERSION, "mode": mode,
                                                            "image_size": size}))
        shutil.rmtree(self.final, ignore_errors=True)
        self.folder.rename(self.final)
        return mode

    def abandon(self) -> None:
        for f in (*self.files.values(), self.thumbs):
            f.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _keep_first_channel(path: Path, size: int, rows_per_chunk: int = 4096) -> None:
    """Rewrite a (N, 3, S, S) file as (N, 1, S, S), a chunk at a time."""
    row = 3 * size * size
    tmp = path.with_suffix(".gray")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        while chunk := src.read(row * rows_per_chunk):
            dst.write(np.frombuffer(chunk, dtype=np.uint8).reshape(-1, 3, size, size)[:, 0].tobytes())
    tmp.replace(path)


def read_index(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "index.json").read_text())
    except (OSError, ValueError):
        return None


class ImageCache:
    """A built cache, opened: memory-mapped image sets, thumbnails and the sources' state."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.index = read_index(folder)
        if self.index is None:
            raise FileNotFoundError(folder / "index.json")
        with np.load(folder / "arrays.npz") as arrays:
            self.arrays = {k: arrays[k] for k in arrays.files}
        self.channels = 1 if self.index["mode"] == "L" else 3
        self.size = int(self.index["image_size"])

    def image_set(self, part: str) -> ImageSet | None:
        meta = self.index[part]
        if meta is None or not meta["ids"]:
            return None
        n = len(meta["ids"])
        # Copy-on-write: a stray in-place write changes this process's pages, never the cache.
        mm = np.memmap(self.folder / f"{part}.u8", dtype=np.uint8, mode="c",
                       shape=(n, self.channels, self.size, self.size))
        return ImageSet(torch.from_numpy(mm), torch.tensor(meta["labels"], dtype=torch.int64), list(meta["ids"]))

    def thumbnail(self, i: int) -> bytes:
        """The display image of pool row i (JPEG or PNG bytes), read from thumbs.bin."""
        return self.thumbnails([i])[0]

    def thumbnails(self, rows: list[int]) -> list[bytes]:
        offsets = self.arrays["offsets"]
        with open(self.folder / "thumbs.bin", "rb") as f:
            out = []
            for i in rows:
                f.seek(int(offsets[i]))
                out.append(f.read(int(offsets[i + 1] - offsets[i])))
            return out

    def native_size(self, i: int) -> tuple[int, int]:
        """(width, height) of pool row i's source file at the import, from its header."""
        w, h = self.arrays["pool_native"][i]
        return int(w), int(h)

    @property
    def source(self) -> Path:
        return Path(self.index["source"])

    @property
    def is_zip(self) -> bool:
        return bool(self.index.get("zip"))

    def source_notes(self, rows: list[int]) -> list[str]:
        """'' for each pool row whose source file is as imported, else what happened to it."""
        ids, stamps = self.index["pool"]["ids"], self.arrays["pool_stamps"]
        if self.is_zip:
            return self._zip_notes(rows)
        notes = []
        for i in rows:
            file = self.source / ids[i]
            try:
                st = file.stat()
                same = (st.st_size, st.st_mtime_ns) == tuple(stamps[i]) or self._same_bytes(i, file.read_bytes())
            except OSError:
                notes.append("source file gone since the import")
                continue
            notes.append("" if same else "source file changed since the import")
        return notes

    def _same_bytes(self, i: int, data: bytes) -> bool:
        """A file copied or restored gets a new time, not new contents: compare what the import hashed."""
        digest = hashlib.blake2b(data, digest_size=16).hexdigest().encode()
        return digest == self.arrays["digests"][i]

    def _zip_notes(self, rows: list[int]) -> list[str]:
        ids, stamps = self.index["pool"]["ids"], self.arrays["pool_stamps"]
        try:
            signature = zip_signature(self.source)
        except OSError:
            return ["source zip gone since the import"] * len(rows)
        if list(signature) == list(self.index["zip"]):
            return [""] * len(rows)
        try:
            with zipfile.ZipFile(self.source) as zf:
                members = {member_id(info.filename): (info.file_size, info.CRC) for info in zf.infolist()}
        except (zipfile.BadZipFile, OSError):
            return ["source zip unreadable since the import"] * len(rows)
        return ["" if members.get(ids[i]) == tuple(stamps[i]) else
                ("source file gone since the import" if ids[i] not in members else
                 "source file changed since the import") for i in rows]

    def source_bytes(self, i: int) -> bytes | None:
        """The original file of pool row i as imported, or None if it is gone or changed."""
        if self.source_notes([i])[0]:
            return None
        rel = self.index["pool"]["ids"][i]
        try:
            if not self.is_zip:
                return (self.source / rel).read_bytes()
            with zipfile.ZipFile(self.source) as zf:
                name = next(info.filename for info in zf.infolist() if member_id(info.filename) == rel)
                return zf.read(name)
        except (OSError, StopIteration, zipfile.BadZipFile):
            return None


def member_id(name: str) -> str:
    """A zip member's id, as the import names it (separators and "./" normalised)."""
    return PurePosixPath(name.replace("\\", "/")).as_posix()


def zip_signature(path: Path) -> tuple[int, int]:
    """(size, mtime) of a zip file: another zip under the same name is imported again."""
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns
