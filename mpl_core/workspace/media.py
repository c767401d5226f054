"""Images out of the pool for people: channel order, enlarged thumbnails, PNG bytes and data URIs.

Pool images are (C, H, W) uint8 tensors; PIL and the browser want (H, W) or (H, W, 3). The app's
thumbnails and export's PNG files both go through `channels_last`. Own images are shown from
their import's cache instead (`Dataset.media`): thumbnails at up to 160 px, and the source file
itself for the lightbox and exports, so people judge a label on the image, not on the 64-px copy
the model trains on. A transparent image keeps its alpha all the way to the browser (PNG), which
shows it on a checkerboard (review_grid/grid.css).
"""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from mpl_core.data.imagefolder import GRAY_MODES, decode_image, encode_display, for_display, shown_size


def channels_last(image) -> np.ndarray:
    """A (C, H, W) uint8 tensor or array as (H, W) for one channel, else (H, W, C)."""
    arr = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
    return arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))


def enlarge(arr: np.ndarray, scale: int) -> np.ndarray:
    """Each pixel as a scale x scale block: tiny images stay sharp (no smoothing)."""
    return np.repeat(np.repeat(arr, scale, axis=0), scale, axis=1)


def thumbnails(images, pool_indices: Iterable[int], scale: int = 3) -> list[np.ndarray]:
    """The pool images at pool_indices as channels-last uint8 arrays, enlarged by scale."""
    return [enlarge(channels_last(images[int(i)]), scale) for i in pool_indices]


def encode_png(arr: np.ndarray, compress_level: int = -1) -> bytes:
    """A channels-last uint8 array as PNG bytes; -1 is zlib's default, 1 is much faster and a bit larger."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def png_bytes(image) -> bytes:
    """A (C, H, W) pool image as a PNG file's contents."""
    return encode_png(channels_last(image))


def data_uri(arr: np.ndarray) -> str:
    """A channels-last array as a PNG data URI: the browser gets it inline, with no extra request."""
    return "data:image/png;base64," + base64.b64encode(encode_png(arr, compress_level=1)).decode()


def bytes_uri(data: bytes) -> str:
    """PNG or JPEG file contents as a data URI."""
    mime = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def display_uris(dataset, pool_indices: list[int]) -> list[str]:
    """What a tile shows: an own image's cached thumbnail, else the pool image at its own size."""
    if dataset.media is not None:
        return [bytes_uri(b) for b in dataset.media.thumbnails([int(i) for i in pool_indices])]
    return [data_uri(channels_last(dataset.train.images[int(i)])) for i in pool_indices]


def source_notes(dataset, pool_indices: list[int]) -> list[str]:
    """'' per image whose source file is as imported, else what happened to it."""
    if dataset.media is None:
        return [""] * len(pool_indices)
    return dataset.media.source_notes([int(i) for i in pool_indices])


def large_image(dataset, i: int, max_side: int = 1600, png_px: int = 256) -> dict:
    """The lightbox's image: {"image": a data URI, "width", "height": the image's own size in pixels}.

    The source file reduced to max_side (or the thumbnail if it is gone or changed). A transparent
    image keeps its alpha and comes as PNG, as does a small one (no side over png_px: the lightbox
    enlarges it, and JPEG's 8x8 blocks would show); photos come as JPEG."""
    data = dataset.media.source_bytes(int(i)) if dataset.media is not None else None
    try:
        img = decode_image(data, draft=max_side) if data is not None else None
        width, height = shown_size(data) if data is not None else own_size(dataset, i)
    except Exception:  # noqa: BLE001 - the file changed into something unreadable: show the thumbnail
        img, (width, height) = None, own_size(dataset, i)
    if img is None:
        return {"image": display_uris(dataset, [i])[0], "width": width, "height": height}
    img = for_display(img, img.mode in GRAY_MODES)
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return {"image": bytes_uri(encode_display(img, png_px=png_px, quality=90)), "width": width, "height": height}


def large_uri(dataset, i: int, max_side: int = 1600) -> str:
    """The lightbox's image as a data URI (see large_image)."""
    return large_image(dataset, i, max_side)["image"]


def own_size(dataset, i: int) -> tuple[int, int]:
    """(width, height) of pool image i as imported: an own image's native size, else the pool image's."""
    if dataset.media is not None:
        return dataset.media.native_size(int(i))
    h, w = dataset.train.images.shape[-2:]
    return int(w), int(h)


def export_suffix(dataset, sample_id: str) -> str:
    """The file type an exported image gets: an own image keeps its source's, the others are PNG."""
    suffix = Path(sample_id).suffix.lower()
    return suffix if dataset.media is not None and suffix in Image.registered_extensions() else ".png"


def export_image(dataset, i: int) -> bytes:
    """An exported image's contents: an own image's source file as imported (or, if it has gone or
    changed, its thumbnail in the source's format); the pool image as PNG for the other datasets."""
    suffix = export_suffix(dataset, dataset.train.ids[int(i)])
    if suffix != Path(dataset.train.ids[int(i)]).suffix.lower():  # not an own image with a known type
        return png_bytes(dataset.train.images[int(i)])
    data = dataset.media.source_bytes(int(i))
    if data is not None:
        return data
    img = Image.open(io.BytesIO(dataset.media.thumbnail(int(i))))
    fmt = Image.registered_extensions()[suffix]
    img = img.convert("RGB") if fmt == "JPEG" and img.mode not in ("L", "RGB") else img
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()
