"""Own images from a folder or a zip: `labeled/<class>/*`, `unlabeled/*`, optional `test/<class>/*`.

Nothing is extracted to disk: zip members are read in memory, with the entry count and the
total uncompressed size capped while streaming. Folders are walked without following
symbolic links out of them. Each image is reduced to the training size as soon as it is
decoded, so memory grows with the number of images, not their pixels. Every file that cannot
be used is skipped and listed with its reason in an `ImportReport`; only a layout that cannot
be trained on raises `MPLStudioError`.
"""
from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from struct import error as struct_error  # a malformed image header can raise it
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mpl_core.data.dataset import Dataset, ImageSet
from mpl_core.errors import MPLStudioError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SECTIONS = ("labeled", "unlabeled", "test")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


@dataclass(frozen=True)
class ImportLimits:
    """Caps that keep a hostile or mistaken folder or zip from exhausting memory, disk or time."""
    max_files: int = 500_000  # entries looked at in a folder or zip
    max_total_bytes: int = 8 * 2**30  # bytes read in all (uncompressed, counted while streaming)
    max_file_bytes: int = 64 * 2**20  # one image file
    max_pixels: int = 40_000_000  # one image: decompression-bomb guard, checked before decoding


DEFAULT_LIMITS = ImportLimits()


@dataclass
class ImportReport:
    source: str
    classes: list[str] = field(default_factory=list)
    labeled_counts: dict[str, int] = field(default_factory=dict)
    test_counts: dict[str, int] = field(default_factory=dict)
    unlabeled_count: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    mode: str = ""  # "L" or "RGB": what every image was converted to
    image_size: int = 0
    problems: list[str] = field(default_factory=list)  # reasons the set cannot be trained on
    duplicates: int = 0  # files skipped because an earlier file had the same bytes

    @property
    def usable(self) -> bool:
        return not self.problems

    def summary_lines(self) -> list[str]:
        lines = [f"source: {self.source}",
                 f"classes ({len(self.classes)}): " + ", ".join(f"{c} ({self.labeled_counts.get(c, 0)})"
                                                              for c in self.classes),
                 f"unlabeled images: {self.unlabeled_count}",
                 f"test images: {sum(self.test_counts.values())}",
                 f"converted to: {self.mode} {self.image_size}x{self.image_size}",
                 f"skipped files: {len(self.skipped)}"]
        lines += [f"  {_printable(path)}: {reason}" for path, reason in self.skipped[:50]]
        if len(self.skipped) > 50:
            lines.append(f"  ... and {len(self.skipped) - 50} more")
        lines += [f"problem: {p}" for p in self.problems]
        return lines


def _printable(path: str) -> str:
    """A path on one line: control characters (a newline in a file name) are shown escaped."""
    return path if path.isprintable() else ascii(path)[1:-1]


@dataclass
class _Entry:
    section: str
    label: str | None
    relpath: str
    read: object  # () -> bytes


def load_image_folder(path: str | Path, *, image_size: int = 0, limits: ImportLimits | None = None) -> Dataset:
    """Import own images; raise MPLStudioError (with the report's reasons) if unusable."""
    report, dataset = inspect_image_folder(path, image_size=image_size, limits=limits)
    if dataset is None:
        raise MPLStudioError(f"{path}: " + "; ".join(report.problems))
    return dataset


def inspect_image_folder(path: str | Path, *, image_size: int = 0,
                         limits: ImportLimits | None = None) -> tuple[ImportReport, Dataset | None]:
    """Read and check a folder or zip; returns the report and the dataset (None if unusable)."""
    path, limits = Path(path), limits or DEFAULT_LIMITS
    report = ImportReport(source=str(path))
    if not path.exists():
        report.problems.append("no such file or folder; give a folder or .zip with labeled/<class>/ and unlabeled/")
        return report, None
    reader = _Reader(limits, image_size, report)
    if path.is_dir():
        reader.decode_all(_folder_entries(path, reader))
    elif zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:  # members are read while it is open
                reader.decode_all(_zip_entries(zf, reader))
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
            report.problems.append(f"not a readable zip file ({exc.__class__.__name__}: {exc}); "
                                   "zip the folder again and upload the new file")
            return report, None
    else:
        report.problems.append("neither a folder nor a zip file; give a folder or a .zip")
        return report, None
    return _assemble(reader, report, image_size)


def _classify(parts: tuple[str, ...]) -> tuple[str, str | None] | None:
    """Map a relative path to (section, class). Allows one wrapping top folder."""
    for start in (0, 1):
        p = parts[start:]
        if len(p) >= 2 and p[0] in SECTIONS:
            if p[0] == "unlabeled":
                return "unlabeled", None
            if len(p) >= 3:
                return p[0], p[1]
            return None
    return None


def _class_folder(parts: tuple[str, ...]) -> str | None:
    """The class of a folder path labeled/<class> (or top/labeled/<class>), else None."""
    for start in (0, 1):
        p = parts[start:]
        if len(p) == 2 and p[0] == "labeled":
            return p[1]
    return None


def _folder_entries(root: Path, reader: "_Reader") -> Iterator[_Entry]:
    """Walk root without following symbolic links out of it (os.walk does not enter linked folders)."""
    root_real, count, report = root.resolve(), 0, reader.report
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        here = Path(folder)
        rel_dir = here.relative_to(root).parts
        if (cls := _class_folder(rel_dir)) is not None:
            reader.class_folders.add(cls)
        for name in [d for d in dirs if (here / d).is_symlink()]:
            dirs.remove(name)  # a linked folder is never walked; say so
            rel = (here / name).relative_to(root).as_posix()
            report.skipped.append((rel, "symbolic link to a folder (not followed)"))
        for name in sorted(files):
            count += 1
            if count > reader.limits.max_files:
                report.problems.append(f"more than {reader.limits.max_files:,} files; split the folder")
                return
            file = here / name
            rel = file.relative_to(root).as_posix()
            if name.startswith("."):
                continue
            if file.is_symlink():
                try:
                    target = file.resolve(strict=True)
                except (OSError, RuntimeError):  # dangling link or a link loop
                    report.skipped.append((rel, "broken symbolic link (missing target or a loop)"))
                    continue
                if not target.is_relative_to(root_real):
                    report.skipped.append((rel, "symbolic link pointing outside the folder"))
                    continue
            if not file.is_file():
                report.skipped.append((rel, "not a regular file"))
                continue
            yield from _entry_for(rel, lambda f=file: reader.read_file(f), report)


def _zip_entries(zf: zipfile.ZipFile, reader: "_Reader") -> Iterator[_Entry]:
    infos, report = zf.infolist(), reader.report
    if len(infos) > reader.limits.max_files:
        report.problems.append(f"zip has {len(infos):,} entries, more than the {reader.limits.max_files:,} "
                               "allowed; it looks like a zip bomb, or split the dataset")
        return
    for info in infos:
        name = info.filename
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":"):
            report.skipped.append((name, "unsafe path in zip (absolute or with ..)"))
            continue
        if info.is_dir():
            if (cls := _class_folder(pure.parts)) is not None:
                reader.class_folders.add(cls)
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            report.skipped.append((name, "symbolic link in zip"))
            continue
        if pure.name.startswith(".") or "__MACOSX" in pure.parts:
            continue
        if (cls := _class_folder(pure.parts[:-1])) is not None:
            reader.class_folders.add(cls)
        yield from _entry_for(pure.as_posix(), lambda info=info: reader.read_zip(zf, info), report)


class _Skip(Exception):
    pass


class _Abort(Exception):
    pass


def _entry_for(rel: str, read, report: ImportReport) -> Iterator[_Entry]:
    where = _classify(PurePosixPath(rel).parts)
    if where is None:
        report.skipped.append((rel, "not under labeled/<class>/, unlabeled/ or test/<class>/"))
        return
    if PurePosixPath(rel).suffix.lower() not in IMAGE_SUFFIXES:
        report.skipped.append((rel, "not an image file extension"))
        return
    yield _Entry(where[0], where[1], rel, read)


def decode_image(data: bytes, max_pixels: int = DEFAULT_LIMITS.max_pixels) -> Image.Image:
    """Decode one image: bomb check before decoding, EXIF rotation, first frame only."""
    if not data:
        raise _Skip("empty file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; treat it as the error it is.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise _Skip(f"{w}x{h} pixels is over the {max_pixels:,}-pixel limit (decompression-bomb guard)")
            if w < 1 or h < 1:
                raise _Skip("image has no pixels")
            img.seek(0)  # animated: first frame
            img.load()
            return ImageOps.exif_transpose(img)
    except _Skip:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _Skip("over Pillow's decompression-bomb pixel limit") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct_error,
            MemoryError) as exc:
        raise _Skip(f"cannot decode image ({exc.__class__.__name__})") from exc



@dataclass
class _Small:
    """One decoded image, already reduced: L or RGB at the size it will be trained at."""
    image: Image.Image
    gray: bool


class _Reader:
    """Reads, de-duplicates, decodes and reduces entries within the limits, filling the report."""

    def __init__(self, limits: ImportLimits, image_size: int, report: ImportReport):
        self.limits, self.image_size, self.report = limits, image_size, report
        self.budget = limits.max_total_bytes
        self.seen: dict[str, str] = {}  # content hash -> first path with it
        self.decoded: list[tuple[_Entry, _Small]] = []
        self.class_folders: set[str] = set()

    def read_file(self, file: Path) -> bytes:
        size = file.stat().st_size
        if size > self.limits.max_file_bytes:
            raise _Skip(f"larger than {self.limits.max_file_bytes // 2**20} MB")
        self._spend(size)
        return file.read_bytes()

    def read_zip(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
        """Stream one member, counting real bytes: declared sizes in a zip can lie."""
        if info.flag_bits & 0x1:
            raise _Skip("encrypted zip member; zip the images again without a password")
        chunks, size = [], 0
        with zf.open(info) as f:
            while chunk := f.read(1 << 20):
                size += len(chunk)
                if size > self.limits.max_file_bytes:
                    self._spend(size)
                    raise _Skip(f"larger than {self.limits.max_file_bytes // 2**20} MB uncompressed")
                chunks.append(chunk)
        self._spend(size)
        return b"".join(chunks)

    def _spend(self, n: int) -> None:
        self.budget -= n
        if self.budget < 0:
            raise _Abort(f"more than {self.limits.max_total_bytes // 2**20:,} MB to read in all; "
                         "if it is a zip it looks like a zip bomb, otherwise split the dataset")

    def decode_all(self, entries: Iterator[_Entry]) -> None:
        # Labeled files first, then test, then unlabeled, each by path: of two identical files the
        # labeled one is kept, and a folder and its zip import to the same dataset.
        for entry in sorted(entries, key=lambda e: (SECTIONS.index(e.section), e.relpath)):
            try:
                data = entry.read()
                digest = hashlib.blake2b(data, digest_size=16).hexdigest()
                if digest in self.seen:
                    self.report.duplicates += 1
                    raise _Skip(f"duplicate of {self.seen[digest]}")
                self.seen[digest] = entry.relpath
                self.decoded.append((entry, self._reduce(decode_image(data, self.limits.max_pixels))))
            except _Skip as skip:
                self.report.skipped.append((entry.relpath, str(skip)))
            except _Abort as abort:
                self.report.problems.append(str(abort))
                break
            except (OSError, zipfile.BadZipFile, EOFError, ValueError, zlib.error, NotImplementedError) as exc:
                # a damaged or unsupported zip member (bad CRC, broken deflate data, unknown method)
                self.report.skipped.append((entry.relpath, f"cannot read file ({exc.__class__.__name__})"))

    def _reduce(self, img: Image.Image) -> _Small:
        gray = img.mode in _GRAY_MODES
        size = self.image_size or (28 if gray else 32)
        return _Small(_to_small(img, "L" if gray else "RGB", size), gray)


def _to_small(img: Image.Image, mode: str, size: int) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float: scale to 8 bits
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        hi = arr.max() if arr.size else 1.0
        img = Image.fromarray((arr / (hi if hi > 255 else 255.0) * 255).clip(0, 255).astype(np.uint8))
    if img.mode in ("P", "PA", "RGBA", "LA", "La", "RGBa"):  # transparency: composite onto black
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert(mode)
    return ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)


def _to_array(small: _Small, mode: str, size: int) -> np.ndarray:
    img = small.image.convert(mode)
    if img.size != (size, size):  # a gray image in a mostly colour set: 28 -> 32
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _assemble(reader: _Reader, report: ImportReport, image_size: int) -> tuple[ImportReport, Dataset | None]:
    decoded = reader.decoded
    labeled = [(e, im) for e, im in decoded if e.section == "labeled"]
    classes = sorted({e.label for e, _ in labeled})
    report.classes = classes
    report.labeled_counts = dict(Counter(e.label for e, _ in labeled))
    report.test_counts = dict(Counter(e.label for e, _ in decoded if e.section == "test"))
    report.unlabeled_count = sum(1 for e, _ in decoded if e.section == "unlabeled")
    for empty in sorted(reader.class_folders - set(classes)):
        report.skipped.append((f"labeled/{empty}/", "class folder has no usable images; the class is left out"))
    if report.problems:
        return report, None
    if len(classes) < 2:
        report.problems.append(f"found {len(classes)} class folder(s) with usable images under labeled/; "
                               "need at least 2 (labeled/<class>/image.png)")
    if report.unlabeled_count == 0:
        report.problems.append("no usable images under unlabeled/")
    if report.problems:
        return report, None
    gray = all(small.gray for _, small in decoded)
    report.mode = "L" if gray else "RGB"
    report.image_size = image_size or (28 if gray else 32)
    index = {c: i for i, c in enumerate(classes)}
    sets = {}
    for section in SECTIONS:
        rows = [(e, im) for e, im in decoded if e.section == section
                and (section == "unlabeled" or e.label in index)]
        if section == "test" and not rows:
            sets[section] = None
            continue
        images = np.stack([_to_array(im, report.mode, report.image_size) for _, im in rows])
        labels = [index[e.label] if e.label is not None else -1 for e, _ in rows]
        sets[section] = ImageSet(torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64),
                                 [e.relpath for e, _ in rows])
    skipped_test = [e.relpath for e, _ in decoded if e.section == "test" and e.label not in index]
    report.skipped += [(p, "test class not among the labeled classes") for p in skipped_test]
    pool = _concat(sets["labeled"], sets["unlabeled"])
    dataset = Dataset(Path(report.source).stem, classes, pool, sets["test"], fully_labeled=False,
                      flip=True, report=report)
    return report, dataset


def _concat(a: ImageSet, b: ImageSet) -> ImageSet:
    return ImageSet(torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels]), a.ids + b.ids)
