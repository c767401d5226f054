"""Model registry: a small CNN for 28x28 inputs, WRN-28-2 (the paper's CIFAR model), and
torchvision backbones with pretrained weights (engine/backbones.py).

Models take float images in [0, 1] and normalise inside, with the per-channel mean/std from
the config, so a checkpoint carries everything needed to use it.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from mpl_core.config import MODEL_NAMES, TORCHVISION_MODELS, ModelConfig
from mpl_core.engine.backbones import TorchvisionNet, pretrained_state
from mpl_core.errors import MPLStudioError

MODEL_REGISTRY: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register(name: str):
    def wrap(fn):
        MODEL_REGISTRY[name] = fn
        return fn
    return wrap


# "auto" from scratch (weights "none") up to this size is the small CNN, not ResNet-18: own images
# train at 64 px on a CPU (data/imagefolder.AUTO_SIZE), where an MPL step of a ResNet-18 from scratch
# took 3 times as long as the CNN's (2.30 s against 0.75 s on one thread; quick-demo about 23 minutes
# against 8 there), and from scratch on 10 labels a class its depth has little to learn from. With
# ImageNet weights, or at a GPU's 128 px, ResNet-18 stays. bench/time_estimate.py --models, docs/speed.md.
SCRATCH_CNN_MAX_SIZE = 64


def resolve_model_name(cfg: ModelConfig) -> str:
    """The model a config names; "auto": the small CNN up to 28 px, WRN-28-2 up to 32 px, above that
    ResNet-18, except from scratch up to SCRATCH_CNN_MAX_SIZE (the small CNN)."""
    if cfg.name != "auto":
        return cfg.name
    if cfg.image_size <= 28:
        return "cnn"
    if cfg.image_size <= 32:
        return "wrn-28-2"
    return "cnn" if cfg.weights == "none" and cfg.image_size <= SCRATCH_CNN_MAX_SIZE else "resnet18"


MIN_SIZE = {"convnext_tiny": 32}  # its stride-4 stem and three stride-2 steps leave nothing of 28 px


def check_input_size(cfg: ModelConfig) -> None:
    for role in ("teacher", "student"):
        name, _ = role_model(cfg, role)
        if cfg.image_size < MIN_SIZE.get(name, 0):
            raise MPLStudioError(f"{name} needs images of at least {MIN_SIZE[name]} px and these are "
                                 f"{cfg.image_size} px; choose another model")


def role_model(cfg: ModelConfig, role: str) -> tuple[str, str]:
    """(model name, weights) of the "teacher" or the "student" (see ModelConfig)."""
    name = resolve_model_name(cfg)
    if role != "student" or not cfg.student or cfg.student == name:
        return name, cfg.weights if role != "student" or not cfg.student_weights else cfg.student_weights
    if cfg.student_weights:
        return cfg.student, cfg.student_weights
    return cfg.student, "none" if cfg.weights == "none" else "imagenet"  # a file is for the teacher's model


def start_weights(cfg: ModelConfig, teacher: bool) -> list[tuple[str, str]]:
    """(model name, weights) that a fresh run's models start from, each pair once: the teacher's where
    the algorithm has one, and the student's unless it starts from an earlier run (init_from)."""
    if not teacher:
        cfg = dataclasses.replace(cfg, student="", student_weights="")  # one model: the one named
    roles = (("teacher",) if teacher else ()) + (() if cfg.init_from else ("student",))
    return list(dict.fromkeys(role_model(cfg, role) for role in roles))


def build_model(name: str | ModelConfig, num_classes: int = 10, in_channels: int = 1, *, role: str = "student",
                pretrained: bool = False, **kwargs) -> nn.Module:
    """build_model("cnn", 10, 1) or build_model(ModelConfig(...), role="teacher").

    pretrained: load the torchvision model's weights (a fresh run); a checkpoint brings its own."""
    cfg = name if isinstance(name, ModelConfig) else ModelConfig(name=name, num_classes=num_classes,
                                                                 in_channels=in_channels, **kwargs)
    key, weights = role_model(cfg, role)
    if key in TORCHVISION_MODELS:
        model = TorchvisionNet(cfg, key, imagenet_norm=weights not in ("", "none"))
        state = pretrained_state(key, weights) if pretrained else None
        if state is not None:
            model.load_pretrained(*state)
        return model
    if key not in MODEL_REGISTRY:
        raise MPLStudioError(f"unknown model {key!r}; choose one of {', '.join(MODEL_NAMES)}")
    return MODEL_REGISTRY[key](cfg)


class Normalize(nn.Module):
    def __init__(self, mean, std, channels: int):
        super().__init__()
        mean = list(mean) if len(mean) == channels else [sum(mean) / len(mean)] * channels
        std = list(std) if len(std) == channels else [sum(std) / len(std)] * channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class FloatLinear(nn.Linear):
    """The classifier head, kept in fp32 under autocast (bf16 elsewhere in the model).

    In bf16 its bias gradient (a sum over the batch) loses enough precision to drift: on
    Fashion-MNIST with CPU bf16, MPL students ended with head biases 4x larger than in fp32 and
    2 points lower accuracy after fine-tuning; with this head they matched fp32. The layer is
    tiny, so fp32 costs nothing. Same parameters as nn.Linear, so checkpoints are unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def _conv_bn(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three conv blocks (width, 2x, 4x channels), 2x2 max-pool between, global average pool."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = cfg.width
        self.norm = Normalize(cfg.mean, cfg.std, cfg.in_channels)
        self.features = nn.Sequential(
            _conv_bn(cfg.in_channels, w), _conv_bn(w, w), nn.MaxPool2d(2),  # (B, w, H/2, W/2)
            _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),  # (B, 2w, H/4, W/4)
            _conv_bn(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, 4w)
        self.head = FloatLinear(4 * w, cfg.num_classes)

    def forward(self, x):
        return self.head(self.features(self.norm(x)))


register("cnn")(SmallCNN)


class _WideBasic(nn.Module):
    """Pre-activation wide-resnet block, as in the MPL/FixMatch code (BN momentum 0.01, leaky ReLU)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, momentum=0.01)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=0.01)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        o = F.leaky_relu(self.bn1(x), 0.1)
        y = self.conv2(F.leaky_relu(self.bn2(self.conv1(o)), 0.1))
        # Where the shape changes, the shortcut sees the activated input (original WRN).
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WRN-depth-k. depth 28, widen 2 gives WRN-28-2 (1.5M parameters)."""

    def __init__(self, cfg: ModelConfig, depth: int = 28, widen: int = 2):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.norm = Normalize(cfg.mean, cfg.std, cfg.in_channels)
        self.stem = nn.Conv2d(cfg.in_channels, widths[0], 3, 1, 1, bias=False)
        blocks = []
        for g, stride in enumerate((1, 2, 2)):
            for i in range(n):
                blocks.append(_WideBasic(widths[g] if i == 0 else widths[g + 1], widths[g + 1],
                                         stride if i == 0 else 1))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3], momentum=0.01)
        self.head = FloatLinear(widths[3], cfg.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.blocks(self.stem(self.norm(x)))
        x = F.leaky_relu(self.bn(x), 0.1)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


register("wrn-28-2")(WideResNet)

