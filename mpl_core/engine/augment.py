"""Weak and strong views, computed on whole batches on the training device.

The reference ports augment one PIL image at a time in DataLoader workers; here a batch of
uint8 images goes to the device once and each view is a handful of tensor ops over the
batch, with every random choice drawn per sample from an explicit `torch.Generator`.

- weak: random translation by up to `pad` pixels (reflect padding) and an optional
  horizontal flip, as in the paper's CIFAR pipeline.
- strong: the weak view, then RandAugment with `num_ops` ops per image at random magnitude
  (the UDA/FixMatch variant), then cutout of a square half the image side.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mpl_core.engine.algorithms import Batch

# RandAugment's op list (UDA / FixMatch). Geometric ops are folded into one affine warp.
PHOTOMETRIC_OPS = ("identity", "autocontrast", "equalize", "brightness", "contrast", "color",
                   "sharpness", "posterize", "solarize")
GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
ALL_OPS = PHOTOMETRIC_OPS + GEOMETRIC_OPS


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 -> float32 in [0, 1]."""
    return images_u8.float().div_(255.0)


def make_batch(images_u8: torch.Tensor, labels: torch.Tensor, labeled_idx: torch.Tensor,
               unlabeled_idx: torch.Tensor | None, gen: torch.Generator, *, flip: bool = True,
               labeled_view: str = "weak", mixup: bool = False) -> Batch:
    """A training step's batch from the images on the device: the weak (or strong) view of the
    labeled ones, the weak and strong views of the unlabeled ones (none when unlabeled_idx is None),
    each channels_last, the layout the convolutions run fastest in."""
    view = strong_view if labeled_view == "strong" else weak_view
    x_l = view(to_float(images_u8[labeled_idx]), gen, flip=flip)
    if unlabeled_idx is None:
        empty = x_l[:0]
        if mixup:
            return _mixed(x_l, labels[labeled_idx], empty, gen)
        return Batch(_channels_last(x_l), labels[labeled_idx], empty, empty)
    u = to_float(images_u8[unlabeled_idx])
    return Batch(_channels_last(x_l), labels[labeled_idx], _channels_last(weak_view(u, gen, flip=flip)),
                 _channels_last(strong_view(u, gen, flip=flip)))


def _mixed(x: torch.Tensor, y: torch.Tensor, empty: torch.Tensor, gen: torch.Generator) -> Batch:
    """Mixup of a labeled batch with a shuffle of itself, lam ~ U(0, 1) per image (Beta(1, 1))."""
    perm = torch.randperm(len(x), generator=gen, device=x.device)
    lam = torch.rand(len(x), generator=gen, device=x.device)
    lx = lam[:, None, None, None]
    return Batch(_channels_last(lx * x + (1 - lx) * x[perm]), y, empty, empty, y_mix=y[perm], lam=lam)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def weak_view(x: torch.Tensor, gen: torch.Generator, *, flip: bool = True, pad: int = 2) -> torch.Tensor:
    """Random crop after reflect padding, then random horizontal flip. x: (B, C, H, W) float."""
    b, _, h, w = x.shape
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
        rows = (torch.arange(h, device=x.device)[None, :] + oy[:, None])  # (B, H)
        cols = (torch.arange(w, device=x.device)[None, :] + ox[:, None])  # (B, W)
        bidx = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        x = x.permute(0, 3, 1, 2).contiguous()
    if flip:
        do_flip = torch.rand(b, generator=gen, device=x.device) < 0.5
        x = torch.where(do_flip[:, None, None, None], x.flip(-1), x)
    return x


def strong_view(x: torch.Tensor, gen: torch.Generator, *, flip: bool = True, num_ops: int = 2,
                cutout: float = 0.5) -> torch.Tensor:
    """Weak view + RandAugment (per-sample ops and magnitudes) + cutout. x: (B, C, H, W) float."""
    x = weak_view(x, gen, flip=flip)
    b = x.shape[0]
    ops = torch.randint(0, len(ALL_OPS), (num_ops, b), generator=gen, device=x.device)
    mags = torch.rand(num_ops, b, generator=gen, device=x.device)
    signs = torch.where(torch.rand(num_ops, b, generator=gen, device=x.device) < 0.5, -1.0, 1.0)
    for slot in range(num_ops):
        x = _photometric(x, ops[slot], mags[slot], signs[slot])
    x = _geometric(x, ops, mags * signs)
    if cutout > 0:
        x = _cutout(x, gen, cutout)
    return x


def _photometric(x, op_idx, mag, sign):
    """Apply each photometric op to the samples that drew it (torch.where: no host sync)."""
    out = x
    for k, name in enumerate(PHOTOMETRIC_OPS):
        if name == "identity":
            continue
        chosen = (op_idx == k)[:, None, None, None]
        out = torch.where(chosen, _PHOTO_FNS[name](x, mag, sign).clamp_(0, 1), out)
    return out


def _gray(x):
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _blend(img, other, factor):
    return other + factor[:, None, None, None] * (img - other)


def _autocontrast(x, mag, sign):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(hi > lo, 1.0 / (hi - lo).clamp_min(1e-6), torch.ones_like(hi))
    return torch.where(hi > lo, (x - lo) * scale, x)


def _equalize(x, mag, sign):
    """Per-image, per-channel histogram equalisation on 256 bins."""
    b, c, h, w = x.shape
    q = (x * 255).round().long().view(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=x.device).scatter_add_(1, q, torch.ones_like(q, dtype=torch.float))
    cdf = hist.cumsum(1)
    cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float(h * w))).amin(1, keepdim=True)
    denom = (h * w - cdf_min).clamp_min(1)
    lut = ((cdf - cdf_min) / denom).clamp(0, 1)
    return lut.gather(1, q).view(b, c, h, w)


def _brightness(x, mag, sign):
    return _blend(x, torch.zeros_like(x), 1 + 0.9 * mag * sign)


def _contrast(x, mag, sign):
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean.expand_as(x), 1 + 0.9 * mag * sign)


def _color(x, mag, sign):
    return _blend(x, _gray(x).expand_as(x), 1 + 0.9 * mag * sign)


def _sharpness(x, mag, sign):
    # PIL's smoothing kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, as the 3x3 sum plus 4x the centre:
    # no kernel tensor to copy from the host, a copy that would make the step wait for the GPU.
    box = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1) * 9
    blurred = (box + 4 * x) / 13
    return _blend(x, blurred, 1 + 0.9 * mag * sign)


def _posterize(x, mag, sign):
    bits = (8 - (mag * 4).floor()).clamp(4, 8)  # keep 4..8 bits
    step = (2 ** (8 - bits))[:, None, None, None]
    return torch.floor(x * 255 / step) * step / 255


def _solarize(x, mag, sign):
    threshold = (1 - mag)[:, None, None, None]
    return torch.where(x >= threshold, 1 - x, x)


_PHOTO_FNS = {"autocontrast": _autocontrast, "equalize": _equalize, "brightness": _brightness,
              "contrast": _contrast, "color": _color, "sharpness": _sharpness,
              "posterize": _posterize, "solarize": _solarize}


def _geometric(x, ops, signed_mags):
    """Fold the geometric ops each sample drew into one affine warp (zeros outside)."""
    b = x.shape[0]
    first_geo = len(PHOTOMETRIC_OPS)
    rot = torch.zeros(b, device=x.device)
    shx, shy, tx, ty = (torch.zeros(b, device=x.device) for _ in range(4))
    for slot in range(ops.shape[0]):
        o, m = ops[slot], signed_mags[slot]
        rot = rot + torch.where(o == first_geo, m * math.radians(30), 0.0)
        shx = shx + torch.where(o == first_geo + 1, m * 0.3, 0.0)
        shy = shy + torch.where(o == first_geo + 2, m * 0.3, 0.0)
        tx = tx + torch.where(o == first_geo + 3, m * 0.6, 0.0)  # 0.6 = 30% of the side
        ty = ty + torch.where(o == first_geo + 4, m * 0.6, 0.0)
    cos, sin = rot.cos(), rot.sin()
    # theta maps output coordinates to input coordinates: rotation @ shear, then translation.
    a11 = cos + (-sin) * shy
    a12 = cos * shx - sin
    a21 = sin + cos * shy
    a22 = sin * shx + cos
    theta = torch.stack([torch.stack([a11, a12, tx], 1), torch.stack([a21, a22, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    identity = (rot == 0) & (shx == 0) & (shy == 0) & (tx == 0) & (ty == 0)
    return torch.where(identity[:, None, None, None], x, warped)


def _cutout(x, gen, fraction):
    """Fill one square (side = fraction of the image side) per sample with grey."""
    b, _, h, w = x.shape
    side_h, side_w = max(1, int(h * fraction)), max(1, int(w * fraction))
    cy = torch.randint(0, h, (b,), generator=gen, device=x.device)
    cx = torch.randint(0, w, (b,), generator=gen, device=x.device)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= (cy[:, None] - side_h // 2)) & (ys < (cy[:, None] - side_h // 2 + side_h))
    in_x = (xs >= (cx[:, None] - side_w // 2)) & (xs < (cx[:, None] - side_w // 2 + side_w))
    box = (in_y[:, :, None] & in_x[:, None, :])[:, None]  # (B, 1, H, W)
    return torch.where(box, torch.full_like(x, 0.5), x)
