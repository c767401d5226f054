"""A corpus of malformed datasets, generated on the fly (nothing binary is committed).

    cases = build_corpus(folder)   # -> list[Case], each a folder or a zip to import

Each case is a small, otherwise valid dataset (two classes, four unlabeled images) with one
thing wrong, or a layout that is wrong as a whole. `expect` says what a correct import does:
"ok" (imported, the odd file converted), "skip" (imported, the file skipped and listed with a
reason containing `needle`) or "refuse" (not imported, with a message containing `needle`).
"""
from __future__ import annotations

import io
import os
import shutil
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

# Import caps the corpus is run with, so the entry-count and total-size bombs stay small.
SMALL_LIMITS = {"max_files": 2_000, "max_total_bytes": 200 * 2**20}


@dataclass
class Case:
    name: str
    path: Path
    expect: str  # "ok", "skip" or "refuse"
    needle: str = ""  # text in the skip reason or the refusal message
    target: str = ""  # "skip": the reported path (relative to the dataset)
    zipped: bool = False


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise(seed: int, size=(24, 24), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = size[::-1] + ((3,) if mode == "RGB" else ())
    return encode(Image.fromarray((rng.random(shape) * 255).astype(np.uint8)), "PNG")


def base_files(seed: int = 0) -> dict[str, bytes]:
    """A valid two-class layout, every file different (identical files count as duplicates)."""
    files = {f"labeled/{c}/{c}{i}.png": noise(seed * 100 + k * 10 + i) for k, c in enumerate("ab") for i in range(3)}
    files.update({f"unlabeled/u{i}.png": noise(seed * 100 + 50 + i) for i in range(4)})
    return files


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes], extra: Callable[[zipfile.ZipFile], None] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
        if extra:
            extra(zf)
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a pixel-count bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _odd_images() -> dict[str, tuple[bytes, str, str]]:
    """File name -> (bytes, expect, needle) for single odd files dropped into unlabeled/."""
    jpg = encode(Image.fromarray((np.random.default_rng(7).random((32, 32, 3)) * 255).astype(np.uint8)), "JPEG")
    png = noise(8, (32, 32))
    corrupt_png = bytearray(png)
    corrupt_png[60] ^= 0xFF  # a flipped byte inside IDAT: the CRC no longer matches
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    frames = [Image.new("P", (12, 12), i) for i in range(3)]
    rgb_frames = [Image.new("RGB", (12, 12), (60 * i, 0, 0)) for i in range(3)]
    palette_alpha = Image.new("P", (16, 16), 1)
    palette_alpha.info["transparency"] = 1
    nan_float = np.full((8, 8), np.nan, dtype=np.float32)
    nan_float[0, 0] = 3.0
    bomb_1bit = encode(Image.new("1", (10_000, 10_000)), "PNG")  # 100 Mpixel, a few KB
    warn_zone = encode(Image.new("1", (9_500, 9_500)), "PNG")  # within Pillow's warning-only band
    return {
        "zero-byte.png": (b"", "skip", "empty file"),
        "truncated.png": (png[: len(png) // 2], "skip", "cannot decode"),
        "truncated.jpg": (jpg[: len(jpg) // 2], "skip", "cannot decode"),
        "crc-error.png": (bytes(corrupt_png), "skip", "cannot decode"),
        "garbage-tail.jpg": (jpg[: len(jpg) // 2] + b"\xff" * (len(jpg) // 2), "skip", "cannot decode"),
        "text.png": (b"this is a text file, not a PNG\n", "skip", "cannot decode"),
        "html.jpg": (b"<html><script>alert(1)</script></html>", "skip", "cannot decode"),
        "random.gif": (np.random.default_rng(3).bytes(4096), "skip", "cannot decode"),
        "header-only.png": (png[:33], "skip", "cannot decode"),
        "zero-size.png": (png_claiming(0, 0), "skip", "cannot decode"),
        "pixel-bomb.png": (bomb_1bit, "skip", "decompression-bomb"),
        "pillow-warning-band.png": (warn_zone, "skip", "decompression-bomb"),
        "claims-65535x65535.png": (png_claiming(65535, 65535), "skip", "decompression-bomb"),
        "cmyk.jpg": (encode(Image.new("CMYK", (40, 30), (0, 128, 0, 0)), "JPEG"), "ok", ""),
        "gray16.png": (encode(Image.new("I;16", (20, 20), 60000), "PNG"), "ok", ""),
        "float-nan.tif": (encode(Image.fromarray(nan_float), "TIFF"), "ok", ""),
        "palette.png": (encode(Image.new("P", (20, 20), 3), "PNG"), "ok", ""),
        "palette-transparency.png": (encode(palette_alpha, "PNG"), "ok", ""),
        "rgba.png": (encode(Image.new("RGBA", (20, 20), (255, 0, 0, 128)), "PNG"), "ok", ""),
        "la.png": (encode(Image.new("LA", (20, 20), (200, 255)), "PNG"), "ok", ""),
        "one-bit.png": (encode(Image.new("1", (20, 20), 1), "PNG"), "ok", ""),
        "animated.gif": (encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), "ok", ""),
        "animated.png": (encode(rgb_frames[0], "PNG", save_all=True, append_images=rgb_frames[1:]), "ok", ""),
        "exif-rotated.jpg": (encode(Image.new("RGB", (40, 10), (0, 0, 255)), "JPEG", exif=exif.tobytes()), "ok", ""),
        "one-pixel.png": (encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "ok", ""),
        "large-6000x6000.png": (encode(Image.new("L", (6000, 6000), 77), "PNG"), "ok", ""),
        "png-named.jpg": (noise(9), "ok", ""),
        "image.bmp": (encode(Image.new("RGB", (10, 10), (1, 2, 3)), "BMP"), "ok", ""),
        "image.webp": (encode(Image.new("RGB", (10, 10), (4, 5, 6)), "WEBP"), "ok", ""),
        "damaged-middle.jpg": (jpg[:300] + bytes(200) + jpg[500:], "ok", ""),  # JPEG decodes with artefacts
        "ünïcødé 画像.png": (noise(10), "ok", ""),
        "<img src=x onerror=alert(1)>.png": (noise(11), "ok", ""),
        "new\nline.png": (noise(12), "ok", ""),
        "notes.txt": (b"hello", "skip", "not an image file extension"),
        "nested.zip": (b"PK\x05\x06" + bytes(18), "skip", "not an image file extension"),
    }


def build_corpus(root: Path, outside: Path) -> list[Case]:
    """Write every case under root; `outside` is a folder the dataset must never reach or write to."""
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "secret.png"
    secret.write_bytes(noise(999))
    cases: list[Case] = []

    def folder(name: str, files: dict[str, bytes], expect: str, needle: str = "", target: str = "") -> Path:
        path = write_folder(root / name, files)
        cases.append(Case(name, path, expect, needle, target))
        return path

    def zipped(name: str, files: dict[str, bytes], expect: str, needle: str = "", target: str = "",
               extra=None) -> Path:
        path = write_zip(root / f"{name}.zip", files, extra)
        cases.append(Case(name, path, expect, needle, target, zipped=True))
        return path

    for i, (fname, (data, expect, needle)) in enumerate(_odd_images().items()):
        folder(f"file-{i:02d}", {**base_files(i + 1), f"unlabeled/{fname}": data}, expect, needle, f"unlabeled/{fname}")

    # Files in the wrong place or of the wrong kind.
    base = base_files(60)
    folder("stray-top-level-file", {**base, "readme.png": noise(61)}, "skip", "not under labeled", "readme.png")
    folder("file-directly-in-labeled", {**base, "labeled/x.png": noise(62)}, "skip", "not under labeled",
           "labeled/x.png")
    folder("duplicate-files", {**base, "unlabeled/copy.png": base["labeled/a/a0.png"]}, "skip", "duplicate of",
           "unlabeled/copy.png")
    p = folder("empty-class-folder", base_files(63), "skip", "no usable images", "labeled/c/")
    (p / "labeled" / "c").mkdir()
    folder("class-with-only-broken-files", {**base_files(64), "labeled/c/bad.png": b"nope"}, "skip",
           "no usable images", "labeled/c/")
    p = folder("oversized-file", base_files(65), "skip", "larger than", "unlabeled/huge.png")
    with open(p / "unlabeled" / "huge.png", "wb") as f:  # sparse: 65 MB on paper, nothing on disk
        f.truncate(65 * 2**20)
    p = folder("directory-named-like-an-image", base_files(66), "ok")
    (p / "unlabeled" / "folder.png").mkdir()

    # Symbolic links: outside the folder, to a folder outside, looping, dangling; a FIFO that would hang a read.
    p = folder("symlink-outside", base_files(70), "skip", "outside the folder", "unlabeled/secret.png")
    os.symlink(secret, p / "unlabeled" / "secret.png")
    p = folder("symlink-folder-outside", base_files(71), "skip", "symbolic link to a folder", "labeled/c")
    os.symlink(outside, p / "labeled" / "c")
    p = folder("symlink-loop", base_files(72), "skip", "broken symbolic link", "unlabeled/loop.png")
    os.symlink("loop.png", p / "unlabeled" / "loop.png")
    p = folder("symlink-dangling", base_files(73), "skip", "broken symbolic link", "unlabeled/gone.png")
    os.symlink(root / "does-not-exist.png", p / "unlabeled" / "gone.png")
    p = folder("symlink-inside-is-fine", base_files(74), "ok")
    os.symlink(p / "unlabeled" / "u0.png", p / "unlabeled" / "z-link-to-u0.png")  # a duplicate, by content
    cases[-1].expect, cases[-1].needle, cases[-1].target = "skip", "duplicate of", "unlabeled/z-link-to-u0.png"
    p = folder("fifo", base_files(75), "skip", "not a regular file", "unlabeled/pipe.png")
    os.mkfifo(p / "unlabeled" / "pipe.png")

    # Layouts that cannot be trained on, and odd but valid ones.
    only_a = {k: v for k, v in base_files(80).items() if not k.startswith("labeled/b/")}
    folder("only-one-class", only_a, "refuse", "need at least 2")
    folder("no-unlabeled", {k: v for k, v in base_files(81).items() if k.startswith("labeled/")}, "refuse",
           "no usable images under unlabeled")
    (root / "empty-folder").mkdir()
    cases.append(Case("empty-folder", root / "empty-folder", "refuse", "need at least 2"))
    folder("flat-folder-of-images", {f"img{i}.png": noise(82 + i) for i in range(4)}, "refuse", "need at least 2")
    cases.append(Case("missing-path", root / "no-such-folder", "refuse", "no such file or folder"))
    single = root / "single.png"
    single.write_bytes(noise(90))
    cases.append(Case("a-single-image-file", single, "refuse", "neither a folder nor a zip"))
    many = {f"labeled/class{k:03d}/x.png": noise(1000 + k, (8, 8)) for k in range(300)}
    many.update({f"unlabeled/u{i}.png": noise(2000 + i, (8, 8)) for i in range(4)})
    folder("three-hundred-classes", many, "ok")
    odd_names = ["ankle boot", "chaussure été", "<img src=x onerror=alert(1)>", "**bold** [link](x.html)"]
    named = {f"labeled/{c}/{i}.png": noise(3000 + 10 * k + i) for k, c in enumerate(odd_names) for i in range(2)}
    named.update({f"unlabeled/u{i}.png": noise(3100 + i) for i in range(4)})
    folder("class-names-unicode-html-markdown", named, "ok")

    # Zips.
    base = base_files(100)
    zipped("zip-ok-with-wrapping-folder", {f"set/{k}": v for k, v in base.items()}, "ok")
    zipped("zip-slip-dotdot", {**base, "../../evil.png": noise(101)}, "skip", "unsafe path", "../../evil.png")
    zipped("zip-absolute-path", {**base, "/tmp/evil.png": noise(102)}, "skip", "unsafe path", "/tmp/evil.png")
    zipped("zip-backslash-dotdot", {**base, "..\\evil.png": noise(103)}, "skip", "unsafe path", "..\\evil.png")
    zipped("zip-drive-letter", {**base, "C:/evil.png": noise(104)}, "skip", "unsafe path", "C:/evil.png")

    def symlink_entry(zf: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo("unlabeled/link.png")
        info.external_attr = (0o120777 << 16)  # a symbolic link to /etc/passwd
        zf.writestr(info, "/etc/passwd")
    zipped("zip-symlink-entry", base_files(105), "skip", "symbolic link in zip", "unlabeled/link.png", symlink_entry)
    zipped("zip-member-bomb", {**base_files(106), "unlabeled/zeros.png": bytes(100 * 2**20)}, "skip",
           "larger than", "unlabeled/zeros.png")
    bomb = {**base_files(107)}
    bomb.update({f"unlabeled/z{i:02d}.png": bytes(40 * 2**20 + i) for i in range(8)})  # 320 MB of zeros
    zipped("zip-total-size-bomb", bomb, "refuse", "zip bomb")
    zipped("zip-entry-count-bomb", {**base_files(108), **{f"unlabeled/e{i}.png": b"" for i in range(2_500)}},
           "refuse", "zip bomb")
    good = write_zip(root / "tmp-good.zip", base_files(109)).read_bytes()
    (root / "tmp-good.zip").unlink()
    truncated = root / "zip-truncated.zip"
    truncated.write_bytes(good[: len(good) // 2])
    cases.append(Case("zip-truncated", truncated, "refuse", "neither a folder nor a zip", zipped=True))
    fake = root / "text-named.zip"
    fake.write_bytes(b"not a zip at all\n")
    cases.append(Case("text-named-zip", fake, "refuse", "neither a folder nor a zip", zipped=True))
    crc = bytearray(write_zip(root / "tmp-crc.zip", base_files(110)).read_bytes())
    (root / "tmp-crc.zip").unlink()
    crc[crc.index(b"unlabeled/u0.png") + len("unlabeled/u0.png") + 40] ^= 0xFF  # inside u0's data
    (root / "zip-crc-error.zip").write_bytes(bytes(crc))
    cases.append(Case("zip-crc-error", root / "zip-crc-error.zip", "skip", "", "unlabeled/u0.png", zipped=True))
    enc = bytearray(write_zip(root / "tmp-enc.zip", base_files(111)).read_bytes())
    (root / "tmp-enc.zip").unlink()
    _mark_encrypted(enc, b"unlabeled/u1.png")
    (root / "zip-encrypted-member.zip").write_bytes(bytes(enc))
    cases.append(Case("zip-encrypted-member", root / "zip-encrypted-member.zip", "skip", "encrypted",
                      "unlabeled/u1.png", zipped=True))
    return cases


def _mark_encrypted(data: bytearray, name: bytes) -> None:
    """Set the 'encrypted' flag of one member in its local header and central directory entry."""
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (at := data.find(signature, start)) >= 0:
            name_offset = 30 if signature == b"PK\x03\x04" else 46
            if data[at + name_offset: at + name_offset + len(name)] == name:
                data[at + flag_offset] |= 0x01
            start = at + 4


def zip_folder(folder: Path, target: Path) -> Path:
    """Zip a case folder as `zip -r` would: folders as entries, regular files; no links or FIFOs."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirs, files in os.walk(folder):
            for name in dirs:
                zf.writestr((Path(dirpath) / name).relative_to(folder).as_posix() + "/", b"")
            for name in files:
                p = Path(dirpath) / name
                if p.is_file() and not p.is_symlink():
                    zf.write(p, p.relative_to(folder).as_posix())
    return target


def snapshot(root: Path) -> set[str]:
    """Every path under root (links not followed), to check an import wrote nothing unexpected."""
    out = set()
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            out.add(os.path.join(dirpath, name))
    return out


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, symlinks=True)
