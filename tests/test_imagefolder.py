import io
import zipfile

import pytest
from PIL import Image

from conftest import png_bytes
from mpl_core.data.imagefolder import inspect_image_folder
from mpl_core.data.sources import load_dataset
from mpl_core.errors import MPLStudioError


def test_folder_imports_classes_unlabeled_and_test(image_folder):
    report, ds = inspect_image_folder(image_folder)
    assert report.usable and ds is not None
    assert ds.class_names == ["circle", "square", "triangle"]
    assert report.labeled_counts == {"circle": 6, "square": 6, "triangle": 6}
    assert report.unlabeled_count == 10 and sum(report.test_counts.values()) == 6
    # Mixed RGB and grayscale inputs become one mode and one size.
    assert report.mode == "RGB" and tuple(ds.train.images.shape[1:]) == (3, 32, 32)
    assert "unlabeled/u0.jpg" in ds.train.ids


def test_bad_files_are_skipped_and_listed(image_folder):
    (image_folder / "labeled" / "circle" / "empty.png").write_bytes(b"")
    (image_folder / "labeled" / "circle" / "text.png").write_text("hello")
    (image_folder / "labeled" / "circle" / "cut.png").write_bytes(png_bytes()[:40])
    (image_folder / "notes.txt").write_text("readme")
    report, ds = inspect_image_folder(image_folder)
    reasons = dict(report.skipped)
    assert reasons["labeled/circle/empty.png"] == "empty file"
    assert "cannot decode" in reasons["labeled/circle/text.png"]
    assert "cannot decode" in reasons["labeled/circle/cut.png"]
    assert "notes.txt" in reasons
    assert ds is not None and report.labeled_counts["circle"] == 6


def test_zip_with_a_wrapping_folder_and_unsafe_entries(tmp_path):
    path = tmp_path / "set.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i, c in enumerate(("a", "b")):
            zf.writestr(f"myset/labeled/{c}/1.png", png_bytes("L", color=i))
        zf.writestr("myset/unlabeled/u.png", png_bytes("L", color=9))
        zf.writestr("../evil.png", png_bytes("L"))
        zf.writestr("/abs/evil.png", png_bytes("L"))
    report, ds = inspect_image_folder(path)
    assert ds is not None and ds.class_names == ["a", "b"] and report.mode == "L"
    assert sum("unsafe path" in reason for _, reason in report.skipped) == 2


def test_one_class_is_not_usable(tmp_path):
    (tmp_path / "labeled" / "only").mkdir(parents=True)
    (tmp_path / "labeled" / "only" / "1.png").write_bytes(png_bytes())
    (tmp_path / "unlabeled").mkdir()
    (tmp_path / "unlabeled" / "u.png").write_bytes(png_bytes())
    report, ds = inspect_image_folder(tmp_path)
    assert ds is None and "need at least 2" in report.problems[0]
    with pytest.raises(MPLStudioError, match="need at least 2"):
        load_dataset(str(tmp_path))


def test_pixel_bomb_is_refused_before_decoding(tmp_path):
    img = Image.new("1", (10000, 10000))  # 100 Mpixel, a few KB as PNG
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    for i, c in enumerate(("a", "b")):
        (tmp_path / "labeled" / c).mkdir(parents=True)
        (tmp_path / "labeled" / c / "1.png").write_bytes(png_bytes(color=i))
    (tmp_path / "unlabeled").mkdir()
    (tmp_path / "unlabeled" / "ok.png").write_bytes(png_bytes(color=9))
    (tmp_path / "unlabeled" / "bomb.png").write_bytes(buf.getvalue())
    report, ds = inspect_image_folder(tmp_path)
    assert "decompression-bomb" in dict(report.skipped)["unlabeled/bomb.png"]  # an error, not a warning
    assert ds is not None and report.unlabeled_count == 1


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_every_common_mode_converts_to_one_mode_and_size(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees
    frames = [Image.new("P", (12, 12), i) for i in range(3)]
    files = {
        "cmyk.jpg": _save(Image.new("CMYK", (40, 30), (0, 128, 0, 0)), "JPEG"),
        "gray16.png": _save(Image.new("I;16", (20, 20), 60000), "PNG"),
        "palette.png": _save(Image.new("P", (20, 20), 3), "PNG"),
        "rgba.png": _save(Image.new("RGBA", (20, 20), (255, 0, 0, 128)), "PNG"),
        "la.png": _save(Image.new("LA", (20, 20), (200, 255)), "PNG"),
        "anim.gif": _save(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "rotated.jpg": _save(Image.new("RGB", (40, 10), (0, 0, 255)), "JPEG", exif=exif.tobytes()),
        "tiny.png": _save(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
    }
    for c in ("a", "b"):
        (tmp_path / "labeled" / c).mkdir(parents=True)
    for name, data in files.items():
        (tmp_path / "labeled" / "a" / name).write_bytes(data)
    (tmp_path / "labeled" / "b" / "b.png").write_bytes(png_bytes(color=7))
    (tmp_path / "unlabeled").mkdir()
    (tmp_path / "unlabeled" / "u.png").write_bytes(png_bytes(color=9))
    report, ds = inspect_image_folder(tmp_path)
    assert report.skipped == [] and report.labeled_counts == {"a": 8, "b": 1}
    assert report.mode == "RGB" and tuple(ds.train.images.shape[1:]) == (3, 32, 32)
    gray16 = ds.train.images[ds.train.ids.index("labeled/a/gray16.png")]
    assert gray16.float().mean() > 200  # 16-bit values scaled down to 8 bits, not clipped to black
