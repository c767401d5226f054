"""Own images from a folder or a zip: `labeled/<class>/*`, `unlabeled/*`, optional `test/<class>/*`.

Nothing is extracted to disk: zip members are read in memory, with the entry count and the
total uncompressed size capped while streaming. Folders are walked without following
symbolic links out of them. Each image is decoded once, on a pool of threads, into the image
cache (data/image_cache.py): a uint8 copy at the training size, memory-mapped afterwards, and
a display thumbnail (a transparent image's keeps its alpha); so memory does not grow with the
pool and a restart decodes nothing.
Every file that cannot be used is skipped and listed with its reason in an `ImportReport`;
only a layout that cannot be trained on raises `MPLStudioError`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import stat
import tempfile
import threading
import warnings
import zipfile
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from struct import error as struct_error  # a malformed image header can raise it
from typing import Callable, Iterator

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from mpl_core.data.dataset import Dataset
from mpl_core.data.image_cache import THUMB_PX, CacheKey, CacheWriter, ImageCache, read_index, zip_signature
from mpl_core.errors import MPLStudioError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SECTIONS = ("labeled", "unlabeled", "test")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


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
    native: dict = field(default_factory=dict)  # {"width": [min, median, max], "height": [...]} in pixels

    def native_line(self) -> str:
        if not self.native:
            return "unknown"
        (w0, w1, w2), (h0, h1, h2) = self.native["width"], self.native["height"]
        return f"width {w0}-{w2} px (median {w1}), height {h0}-{h2} px (median {h1})"

    @property
    def usable(self) -> bool:
        return not self.problems

    def summary_lines(self) -> list[str]:
        lines = [f"source: {self.source}",
                 f"classes ({len(self.classes)}): " + ", ".join(f"{c} ({self.labeled_counts.get(c, 0)})"
                                                              for c in self.classes),
                 f"unlabeled images: {self.unlabeled_count}",
                 f"test images: {sum(self.test_counts.values())}",
                 f"native sizes: {self.native_line()}",
                 f"converted to: {self.mode} {self.image_size}x{self.image_size} for training "
                 "(the review shows the source images)",
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
    origin: object  # the file's Path in a folder, its ZipInfo in a zip
    stamp: tuple[int, int] = (0, 0)  # (size, mtime_ns) of a file, (size, CRC) of a zip member


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
            st = file.stat()
            yield from _entry_for(rel, file, (st.st_size, st.st_mtime_ns), report)


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
        yield from _entry_for(pure.as_posix(), info, (info.file_size, info.CRC), report)


class _Skip(Exception):
    pass


class _Abort(Exception):
    pass


def _entry_for(rel: str, origin, stamp: tuple[int, int], report: ImportReport) -> Iterator[_Entry]:
    where = _classify(PurePosixPath(rel).parts)
    if where is None:
        report.skipped.append((rel, "not under labeled/<class>/, unlabeled/ or test/<class>/"))
        return
    if PurePosixPath(rel).suffix.lower() not in IMAGE_SUFFIXES:
        report.skipped.append((rel, "not an image file extension"))
        return
    yield _Entry(where[0], where[1], rel, origin, stamp)


def decode_image(data: bytes, max_pixels: int = DEFAULT_LIMITS.max_pixels, draft: int = 0) -> Image.Image:
    """Decode one image: bomb check before decoding, EXIF rotation, first frame only.

    draft: a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale whose sides stay at least this
    long (libjpeg scales in the DCT, several times faster than decoding in full and resizing)."""
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
            if draft and img.format == "JPEG":
                img.draft(img.mode, (draft, draft))
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


# --- the training size ---------------------------------------------------------------------------

AUTO_SIZE = {"cpu": 64, "cuda": 128}  # colour photos: what a step can afford on each device
PROBE = 64  # images whose headers choose the training size


def auto_image_size(sides: list[tuple[int, int]], gray: bool, device_kind: str = "cpu") -> int:
    """The training size for images of these native sizes: small images (<= 32 px, digits, CIFAR)
    at the small models' 28 (gray) or 32 px; larger ones at 64 px on a CPU and 128 px on a GPU,
    never above the median shorter side (rounded down to a multiple of 8)."""
    if not sides:
        return 28 if gray else 32
    longer = sorted(max(s) for s in sides)[len(sides) // 2]
    if longer <= 32:
        return 28 if gray else 32
    shorter = sorted(min(s) for s in sides)[len(sides) // 2]
    return max(32, min(AUTO_SIZE.get(device_kind, AUTO_SIZE["cpu"]), shorter // 8 * 8))


def _probe(entries: list[_Entry], reader: "_Reader") -> tuple[list[tuple[int, int]], bool]:
    """Native sizes and gray-ness from the headers of up to PROBE images spread over the set."""
    step = max(1, len(entries) // PROBE)
    sides, gray = [], True
    for entry in entries[::step][:PROBE]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a bomb is refused by the import itself
                img = Image.open(io.BytesIO(reader.read(entry, spend=False)))
                sides.append(img.size)
                gray = gray and img.mode in GRAY_MODES
        except Exception:  # noqa: BLE001 - a bad file is reported by the import itself
            continue
    return sides, gray


# --- reading and decoding --------------------------------------------------------------------------

class _Reader:
    """Reads entries within the limits (byte budget shared by the decoding threads)."""

    def __init__(self, limits: ImportLimits, report: ImportReport, zf: zipfile.ZipFile | None = None):
        self.limits, self.report, self.zf = limits, report, zf
        self.budget = limits.max_total_bytes
        self.class_folders: set[str] = set()
        self._lock = threading.Lock()
        self._local = threading.local()  # a ZipFile per thread: one ZipFile's open() is not thread-safe
        self._opened: list[zipfile.ZipFile] = []

    def _thread_zip(self) -> zipfile.ZipFile:
        zf = getattr(self._local, "zf", None)
        if zf is None:
            zf = self._local.zf = zipfile.ZipFile(self.zf.filename)
            with self._lock:
                self._opened.append(zf)
        return zf

    def close(self) -> None:
        for zf in self._opened:
            zf.close()

    def read(self, entry: _Entry, spend: bool = True) -> bytes:
        data = self._read_zip(entry.origin) if self.zf is not None else self._read_file(entry.origin)
        if spend:
            self._spend(len(data))
        return data

    def _read_file(self, file: Path) -> bytes:
        if file.stat().st_size > self.limits.max_file_bytes:
            raise _Skip(f"larger than {self.limits.max_file_bytes // 2**20} MB")
        return file.read_bytes()

    def _read_zip(self, info: zipfile.ZipInfo) -> bytes:
        """Stream one member, counting real bytes: declared sizes in a zip can lie."""
        if info.flag_bits & 0x1:
            raise _Skip("encrypted zip member; zip the images again without a password")
        chunks, size = [], 0
        with self._thread_zip().open(info) as f:
            while chunk := f.read(1 << 20):
                size += len(chunk)
                if size > self.limits.max_file_bytes:
                    self._spend(size)
                    raise _Skip(f"larger than {self.limits.max_file_bytes // 2**20} MB uncompressed")
                chunks.append(chunk)
        return b"".join(chunks)

    def _spend(self, n: int) -> None:
        with self._lock:
            self.budget -= n
            over = self.budget < 0
        if over:
            raise _Abort(f"more than {self.limits.max_total_bytes // 2**20:,} MB to read in all; "
                         "if it is a zip it looks like a zip bomb, otherwise split the dataset")


@dataclass
class _Decoded:
    digest: str
    rgb: np.ndarray  # (3, S, S) uint8 at the training size; gray images repeat their channel
    gray: bool
    thumb: bytes | None  # the display image (pool images only)
    native: tuple[int, int]


def _decode_entry(reader: _Reader, entry: _Entry, size: int) -> _Decoded | _Skip | _Abort:
    """Read, hash, decode and reduce one entry (in a worker thread: Pillow and zlib let go of the GIL)."""
    try:
        data = reader.read(entry)
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        img = decode_image(data, reader.limits.max_pixels, draft=max(size, THUMB_PX))
        native = Image.open(io.BytesIO(data)).size
        gray = img.mode in GRAY_MODES
        img = for_display(img, gray)  # a transparent image keeps its alpha for the tiles
        display = _display(img)
        # The training copy from the display image where that is large enough: half the pixels to filter.
        base = display if min(display.size) >= size else img
        # The model sees no alpha: transparency is composited onto black here (to_8bit), for training only.
        base = to_8bit(base, "L" if gray else "RGB")
        small = np.asarray(ImageOps.fit(base, (size, size), method=Image.Resampling.BILINEAR).convert("RGB"))
        thumb = encode_display(display) if entry.section != "test" else None
        return _Decoded(digest, small.transpose(2, 0, 1), gray, thumb, native)
    except (_Skip, _Abort) as stop:
        return stop
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, zlib.error, NotImplementedError) as exc:
        # a damaged or unsupported zip member (bad CRC, broken deflate data, unknown method)
        return _Skip(f"cannot read file ({exc.__class__.__name__})")


WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "F")  # more than 8 bits a channel
ALPHA_MODES = ("PA", "RGBA", "LA", "La", "RGBa")  # a P, L or RGB image may have a transparent colour too


def to_8bit(img: Image.Image, mode: str) -> Image.Image:
    """16-bit and float images scaled to 8 bits, transparency composited onto black, then `mode`."""
    if img.mode in WIDE_MODES:
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        hi = arr.max() if arr.size else 1.0
        img = Image.fromarray((arr / (hi if hi > 255 else 255.0) * 255).clip(0, 255).astype(np.uint8))
    if img.mode in ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert(mode)


def for_display(img: Image.Image, gray: bool) -> Image.Image:
    """An 8-bit image for people: `LA` or `RGBA` if some pixel is see-through (the browser shows it on
    a checkerboard), else `L` or `RGB`. An alpha channel with every pixel opaque is dropped."""
    if img.mode not in WIDE_MODES and (img.mode in ALPHA_MODES or "transparency" in img.info):
        shown = img.convert("LA" if gray else "RGBA")
        if shown.getchannel("A").getextrema()[0] < 255:
            return shown
    return to_8bit(img, "L" if gray else "RGB")


def _display(img: Image.Image) -> Image.Image:
    """The display image: shorter side at most THUMB_PX, longer at most twice that, never enlarged.
    Bilinear: Pillow widens its filter when it reduces, so it does not alias, at half Lanczos's cost
    (and it resizes LA and RGBA premultiplied, so transparent pixels do not bleed their colour)."""
    w, h = img.size
    scale = min(1.0, THUMB_PX / min(w, h), 2 * THUMB_PX / max(w, h))
    if scale < 1.0:
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    return img


def encode_display(img: Image.Image, png_px: int = 64, quality: int = 85) -> bytes:
    """PNG for an image with transparency (JPEG has no alpha) and for small ones, no side over png_px
    (sharp pixels); JPEG for photos."""
    buf = io.BytesIO()
    if img.mode in ("LA", "RGBA") or max(img.size) <= png_px:
        img.save(buf, format="PNG", compress_level=1)
    else:
        img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def shown_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an image file as it is shown: from its header, turned by its EXIF orientation."""
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        turned = img.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)  # a quarter turn
    return (h, w) if turned else (w, h)


# --- the import ----------------------------------------------------------------------------------

def load_image_folder(path: str | Path, *, image_size: int = 0, limits: ImportLimits | None = None,
                      cache_dir: str | Path | None = None, device_kind: str = "cpu", rebuild: bool = False,
                      on_progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Own images, from their cache in cache_dir when it holds this import at this size, else
    imported into it; raise MPLStudioError (with the report's reasons) if unusable."""
    if cache_dir is not None and not rebuild:
        cached = open_cached(path, cache_dir, image_size)
        if cached is not None:
            return cached
    report, dataset = inspect_image_folder(path, image_size=image_size, limits=limits, cache_dir=cache_dir,
                                           device_kind=device_kind, on_progress=on_progress)
    if dataset is None:
        raise MPLStudioError(f"{path}: " + "; ".join(report.problems))
    return dataset


def open_cached(path: str | Path, cache_dir: str | Path, image_size: int = 0) -> Dataset | None:
    """The dataset from cache_dir if it holds the import of path at the requested size (and, for a
    zip, of the same zip file), else None. A folder's files are not walked again: a file changed
    since the import keeps its imported copy, and its tile says what happened to the source."""
    folder = Path(cache_dir)
    index = read_index(folder)
    if index is None or not CacheKey(str(Path(path).resolve()), image_size).matches(index):
        return None
    try:
        if index.get("zip") is not None and list(index["zip"]) != list(zip_signature(Path(path))):
            return None
    except OSError:
        return None  # the zip is gone: the import says so
    try:
        return _dataset(ImageCache(folder), ImportReport(**index["report"]))
    except (OSError, KeyError, ValueError, TypeError):
        return None  # a damaged cache is rebuilt


def inspect_image_folder(path: str | Path, *, image_size: int = 0, limits: ImportLimits | None = None,
                         cache_dir: str | Path | None = None, device_kind: str = "cpu",
                         on_progress: Callable[[int, int], None] | None = None,
                         workers: int = 0) -> tuple[ImportReport, Dataset | None]:
    """Read, check and import a folder or zip; the report and the dataset (None if unusable).

    Without cache_dir the cache is built in a temporary folder, which is gone once the images are
    mapped (on Linux a mapped file outlives its name)."""
    path, limits = Path(path), limits or DEFAULT_LIMITS
    report = ImportReport(source=str(path))
    if not path.exists():
        report.problems.append("no such file or folder; give a folder or .zip with labeled/<class>/ and unlabeled/")
        return report, None
    temporary = cache_dir is None
    folder = Path(tempfile.mkdtemp(prefix="mpl-import-")) / "cache" if temporary else Path(cache_dir)
    try:
        if path.is_dir():
            reader = _Reader(limits, report)
            return _import(path, _folder_entries(path, reader), reader, image_size, folder, device_kind,
                           on_progress, workers, temporary)
        if zipfile.is_zipfile(path):
            try:
                with zipfile.ZipFile(path) as zf:  # members are read while it is open
                    reader = _Reader(limits, report, zf)
                    try:
                        return _import(path, _zip_entries(zf, reader), reader, image_size, folder, device_kind,
                                       on_progress, workers, temporary)
                    finally:
                        reader.close()
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
                report.problems.append(f"not a readable zip file ({exc.__class__.__name__}: {exc}); "
                                       "zip the folder again and upload the new file")
                return report, None
        report.problems.append("neither a folder nor a zip file; give a folder or a .zip")
        return report, None
    finally:
        if temporary:
            shutil.rmtree(folder.parent, ignore_errors=True)


def _import(path: Path, entries: Iterator[_Entry], reader: _Reader, image_size: int, folder: Path,
            device_kind: str, on_progress, workers: int, temporary: bool) -> tuple[ImportReport, Dataset | None]:
    report = reader.report
    # Labeled files first, then test, then unlabeled, each by path: of two identical files the
    # labeled one is kept, and a folder and its zip import to the same dataset.
    entries = sorted(entries, key=lambda e: (SECTIONS.index(e.section), e.relpath))
    if report.problems:
        return report, None
    size = image_size or auto_image_size(*_probe(entries, reader), device_kind)
    writer = CacheWriter(folder)
    try:
        rows = _decode_into(writer, entries, reader, size, on_progress, workers)
        classes = _check(reader, report, rows)
        if report.problems:
            writer.abandon()
            return report, None
        report.image_size = size
        report.native = _native_spread(writer.native["pool"] + writer.native["test"])
        index = {c: i for i, c in enumerate(classes)}
        parts = {part: {"ids": [e.relpath for e in rows[part]],
                        "labels": [index[e.label] if e.label is not None else -1 for e in rows[part]]}
                 for part in ("pool", "test")}
        zip_stamp = None if path.is_dir() else zip_signature(path)
        report.mode = "L" if all(writer.gray["pool"]) and all(writer.gray["test"]) else "RGB"
        key = CacheKey(str(path.resolve()), image_size)
        writer.finish({"source": key.source, "requested_size": image_size, "zip": zip_stamp, "classes": classes,
                       "pool": parts["pool"], "test": parts["test"] if parts["test"]["ids"] else None,
                       "report": dataclasses.asdict(report)}, size)
    except BaseException:
        writer.abandon()
        raise
    dataset = _dataset(ImageCache(folder), report)
    if temporary:
        dataset.media = None  # its folder is about to go
    return report, dataset


def _decode_into(writer: CacheWriter, entries: list[_Entry], reader: _Reader, size: int, on_progress,
                 workers: int) -> dict[str, list[_Entry]]:
    """Decode every entry on a pool of threads and append the usable ones to the cache in order."""
    report, seen, rows = reader.report, {}, {"pool": [], "test": []}
    labeled_classes: set[str] = set()
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = 32 * workers  # bounded look-ahead: at most this many decoded images wait in memory
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(entries), chunk):
            part_entries = entries[start: start + chunk]
            for entry, result in zip(part_entries, pool.map(lambda e: _decode_entry(reader, e, size), part_entries)):
                if isinstance(result, _Abort):
                    report.problems.append(str(result))
                    return rows
                if isinstance(result, _Skip):
                    report.skipped.append((entry.relpath, str(result)))
                    continue
                if result.digest in seen:
                    report.duplicates += 1
                    report.skipped.append((entry.relpath, f"duplicate of {seen[result.digest]}"))
                    continue
                seen[result.digest] = entry.relpath
                if entry.section == "test" and entry.label not in labeled_classes:
                    report.skipped.append((entry.relpath, "test class not among the labeled classes"))
                    continue
                labeled_classes.update([entry.label] if entry.section == "labeled" else [])
                part = "test" if entry.section == "test" else "pool"
                writer.add(part, result.rgb, result.gray, result.thumb, result.native, entry.stamp, result.digest)
                rows[part].append(entry)
            if on_progress:
                on_progress(min(start + chunk, len(entries)), len(entries))
    return rows


def _check(reader: _Reader, report: ImportReport, rows: dict[str, list[_Entry]]) -> list[str]:
    """The classes; the counts and any reason the set cannot be trained on go in the report."""
    labeled = [e for e in rows["pool"] if e.section == "labeled"]
    classes = sorted({e.label for e in labeled})
    report.classes = classes
    report.labeled_counts = dict(Counter(e.label for e in labeled))
    report.test_counts = dict(Counter(e.label for e in rows["test"]))
    report.unlabeled_count = sum(1 for e in rows["pool"] if e.section == "unlabeled")
    for empty in sorted(reader.class_folders - set(classes)):
        report.skipped.append((f"labeled/{empty}/", "class folder has no usable images; the class is left out"))
    if report.problems:
        return classes
    if len(classes) < 2:
        report.problems.append(f"found {len(classes)} class folder(s) with usable images under labeled/; "
                               "need at least 2 (labeled/<class>/image.png)")
    if report.unlabeled_count == 0:
        report.problems.append("no usable images under unlabeled/")
    return classes


def _native_spread(sides: list[tuple[int, int]]) -> dict:
    """Smallest, median and largest native width and height."""
    if not sides:
        return {}
    arr = np.asarray(sides)
    return {"width": [int(arr[:, 0].min()), int(np.median(arr[:, 0])), int(arr[:, 0].max())],
            "height": [int(arr[:, 1].min()), int(np.median(arr[:, 1])), int(arr[:, 1].max())]}


def _dataset(cache: ImageCache, report: ImportReport) -> Dataset:
    return Dataset(Path(report.source).stem, list(cache.index["classes"]), cache.image_set("pool"),
                   cache.image_set("test"), fully_labeled=False, flip=True, report=report, media=cache)
