"""Own images from a folder or a zip: `labeled/<class>/*`, `unlabeled/*`, optional `test/<class>/*`.

Nothing is extracted to disk: zip members are read in memory, with the entry count and the
total uncompressed size capped while streaming. Every file that cannot be used is skipped
and listed with its reason in an `ImportReport`; only a layout that cannot be trained on
raises `MPLStudioError`.
"""
from __future__ import annotations

import io
import stat
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .data import Dataset, ImageSet
from .errors import MPLStudioError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_FILES = 500_000  # entries looked at in a folder or zip
MAX_TOTAL_BYTES = 8 * 2**30  # uncompressed bytes read in all
MAX_FILE_BYTES = 64 * 2**20  # one image file
MAX_PIXELS = 40_000_000  # one image: decompression-bomb guard, checked before decoding
SECTIONS = ("labeled", "unlabeled", "test")


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
        lines += [f"  {path}: {reason}" for path, reason in self.skipped[:50]]
        if len(self.skipped) > 50:
            lines.append(f"  ... and {len(self.skipped) - 50} more")
        lines += [f"problem: {p}" for p in self.problems]
        return lines


@dataclass
class _Entry:
    section: str
    label: str | None
    relpath: str
    read: object  # () -> bytes


def load_image_folder(path: str | Path, *, image_size: int = 0) -> Dataset:
    """Import own images; raise MPLStudioError (with the report's reasons) if unusable."""
    report, dataset = inspect_image_folder(path, image_size=image_size)
    if dataset is None:
        raise MPLStudioError(f"{path}: " + "; ".join(report.problems))
    return dataset


def inspect_image_folder(path: str | Path, *, image_size: int = 0) -> tuple[ImportReport, Dataset | None]:
    """Read and check a folder or zip; returns the report and the dataset (None if unusable)."""
    path = Path(path)
    report = ImportReport(source=str(path))
    if not path.exists():
        report.problems.append("no such file or folder; give a folder or .zip with labeled/<class>/ and unlabeled/")
        return report, None
    if path.is_dir():
        decoded = _decode_all(_folder_entries(path, report), report)
    elif zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:  # members are read while it is open
                decoded = _decode_all(_zip_entries(zf, report), report)
        except (zipfile.BadZipFile, OSError) as exc:
            report.problems.append(f"not a readable zip file ({exc})")
            return report, None
    else:
        report.problems.append("neither a folder nor a zip file; give a folder or a .zip")
        return report, None
    return _assemble(decoded, report, image_size)


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


def _folder_entries(root: Path, report: ImportReport) -> Iterator[_Entry]:
    root_real = root.resolve()
    count = 0
    for file in sorted(root.rglob("*")):
        count += 1
        if count > MAX_FILES:
            report.problems.append(f"more than {MAX_FILES} files; split the folder")
            return
        rel = file.relative_to(root).as_posix()
        if file.is_symlink():
            target = file.resolve()
            if not target.is_relative_to(root_real):
                report.skipped.append((rel, "symbolic link pointing outside the folder"))
                continue
        if not file.is_file() or file.name.startswith("."):
            continue
        yield from _entry_for(rel, lambda f=file: _read_file(f), report)


def _read_file(file: Path) -> bytes:
    if file.stat().st_size > MAX_FILE_BYTES:
        raise _Skip(f"larger than {MAX_FILE_BYTES // 2**20} MB")
    return file.read_bytes()


def _zip_entries(zf: zipfile.ZipFile, report: ImportReport) -> Iterator[_Entry]:
    infos = zf.infolist()
    if len(infos) > MAX_FILES:
        report.problems.append(f"zip has {len(infos)} entries, more than the {MAX_FILES} allowed")
        return
    budget = [MAX_TOTAL_BYTES]
    for info in infos:
        if info.is_dir():
            continue
        name = info.filename
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":"):
            report.skipped.append((name, "unsafe path in zip (absolute or with ..)"))
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            report.skipped.append((name, "symbolic link in zip"))
            continue
        if pure.name.startswith(".") or "__MACOSX" in pure.parts:
            continue
        yield from _entry_for(pure.as_posix(), lambda info=info: _read_zip(zf, info, budget), report)


def _read_zip(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: list[int]) -> bytes:
    """Stream one member, counting real bytes: declared sizes in a zip can lie."""
    chunks, size = [], 0
    with zf.open(info) as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
            budget[0] -= len(chunk)
            if size > MAX_FILE_BYTES:
                raise _Skip(f"larger than {MAX_FILE_BYTES // 2**20} MB uncompressed")
            if budget[0] < 0:
                raise _Abort(f"zip expands to more than {MAX_TOTAL_BYTES // 2**30} GB; it looks like a zip bomb")
            chunks.append(chunk)
    return b"".join(chunks)


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


def decode_image(data: bytes) -> Image.Image:
    """Decode one image: bomb check before decoding, EXIF rotation, first frame only."""
    if not data:
        raise _Skip("empty file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; treat it as the error it is.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise _Skip(f"{w}x{h} pixels is over the {MAX_PIXELS:,}-pixel limit (decompression-bomb guard)")
        if w < 1 or h < 1:
            raise _Skip("image has no pixels")
        img.seek(0)  # animated: first frame
        img.load()
        return ImageOps.exif_transpose(img)
    except _Skip:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _Skip("over Pillow's decompression-bomb pixel limit") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _Skip(f"cannot decode image ({exc.__class__.__name__})") from exc


def _decode_all(entries: Iterator[_Entry], report: ImportReport) -> list[tuple[_Entry, Image.Image]]:
    out = []
    for entry in entries:
        try:
            out.append((entry, decode_image(entry.read())))
        except _Skip as skip:
            report.skipped.append((entry.relpath, str(skip)))
        except _Abort as abort:
            report.problems.append(str(abort))
            break
        except OSError as exc:
            report.skipped.append((entry.relpath, f"cannot read file ({exc.__class__.__name__})"))
    return out


def _is_gray(img: Image.Image) -> bool:
    return img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def _to_array(img: Image.Image, mode: str, size: int) -> np.ndarray:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float: scale to 8 bits
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 1.0
        img = Image.fromarray((arr / (hi if hi > 255 else 255.0) * 255).clip(0, 255).astype(np.uint8))
    if img.mode in ("P", "PA", "RGBA", "LA"):  # transparency: composite onto black
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert(mode)
    img = ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _assemble(decoded, report: ImportReport, image_size: int) -> tuple[ImportReport, Dataset | None]:
    labeled = [(e, im) for e, im in decoded if e.section == "labeled"]
    classes = sorted({e.label for e, _ in labeled})
    report.classes = classes
    report.labeled_counts = dict(Counter(e.label for e, _ in labeled))
    report.test_counts = dict(Counter(e.label for e, _ in decoded if e.section == "test"))
    report.unlabeled_count = sum(1 for e, _ in decoded if e.section == "unlabeled")
    if len(classes) < 2:
        report.problems.append(f"found {len(classes)} class folder(s) with usable images under labeled/; "
                               "need at least 2 (labeled/<class>/image.png)")
    if report.unlabeled_count == 0:
        report.problems.append("no usable images under unlabeled/")
    if report.problems:
        return report, None
    gray = all(_is_gray(im) for _, im in decoded)
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
                      flip=True, report=report, extra={"source": report.source})
    return report, dataset


def _concat(a: ImageSet, b: ImageSet) -> ImageSet:
    return ImageSet(torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels]), a.ids + b.ids)
