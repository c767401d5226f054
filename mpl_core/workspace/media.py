"""Images out of the pool for people: channel order, enlarged thumbnails, PNG bytes and data URIs.

Pool images are (C, H, W) uint8 tensors; PIL and the browser want (H, W) or (H, W, 3). The app's
thumbnails and export's PNG files both go through `channels_last`.
"""
from __future__ import annotations

import base64
import io
from typing import Iterable

import numpy as np
from PIL import Image


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
