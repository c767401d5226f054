"""torchvision backbones in the model registry, with pretrained weights.

    model = build_model(ModelConfig(name="resnet18", ...), pretrained=True)

The weights come from torchvision's weights API (downloaded once into data/weights/, where a
machine without network can also be given the file), or from a file the user names: safetensors,
or a `torch.save` file read with `weights_only=True`. A plain pickle is refused: loading one can
run any code. How the network is adapted:
- the first convolution takes the data's channels: for gray images its RGB kernels are summed
  (what timm does), so a gray image gives the response the RGB network gave its gray version;
- the classifier is a new `FloatLinear` for the data's classes;
- inputs are normalised with the weights' own ImageNet mean and std, not the data's, since
  that is what the pretrained filters expect.
`weights_status` says, before a run and without downloading, whether its start weights are at hand
(cached, downloadable, unreachable; a file there or not). `pretrained_body` marks the model so the
optimizer gives its body a lower learning rate than its new head (TrainConfig.pretrained_lr_scale).
"""
from __future__ import annotations

import pickle
import socket
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from mpl_core.config import FROM_SCRATCH, TORCHVISION_MODELS, ModelConfig
from mpl_core.errors import MPLStudioError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TorchvisionNet(nn.Module):
    """A torchvision classifier with the data's input channels and classes, normalising inside."""

    def __init__(self, cfg: ModelConfig, arch: str, imagenet_norm: bool):
        super().__init__()
        import torchvision

        from mpl_core.engine.models import FloatLinear, Normalize
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet_norm else (cfg.mean, cfg.std)
        self.norm = Normalize(mean, std, cfg.in_channels)
        self.net = torchvision.models.get_model(arch, weights=None)
        self.arch, self.in_channels = arch, cfg.in_channels
        # From the config, not from whether loading worked: a resumed run's optimizer groups must match.
        self.pretrained_body = imagenet_norm
        name, conv = _first(self.net, nn.Conv2d)
        if conv.in_channels != cfg.in_channels:
            _replace(self.net, name, nn.Conv2d(cfg.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                               conv.padding, conv.dilation, conv.groups, conv.bias is not None))
        name, linear = _last(self.net, nn.Linear)
        self.head_name = name
        _replace(self.net, name, FloatLinear(linear.in_features, cfg.num_classes))

    def forward(self, x):
        return self.net(self.norm(x))

    def head_parameters(self) -> set[int]:
        """ids of the new classifier's parameters (the optimizer's full-rate group)."""
        return {id(p) for p in self.net.get_submodule(self.head_name).parameters()}

    def load_pretrained(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load the body from a state dict of the torchvision network (any head, RGB input)."""
        state = _unwrap(state)
        own = self.net.state_dict()
        conv_key = _first(self.net, nn.Conv2d)[0] + ".weight"
        if conv_key in state and state[conv_key].shape[1] != self.in_channels:
            state = {**state, conv_key: _adapt_channels(state[conv_key], self.in_channels)}
        fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape
                and not k.startswith(self.head_name + ".")}
        body = [k for k in own if not k.startswith(self.head_name + ".")]
        if len(fits) < 0.9 * len(body):
            raise MPLStudioError(f"{source}: only {len(fits)} of the {len(body)} tensors of {self.arch}'s body "
                                 f"are in it with the right shape; give weights of a {self.arch}")
        self.net.load_state_dict(fits, strict=False)
        self.pretrained_body = True


def _first(net: nn.Module, kind: type) -> tuple[str, nn.Module]:
    return next((n, m) for n, m in net.named_modules() if isinstance(m, kind))


def _last(net: nn.Module, kind: type) -> tuple[str, nn.Module]:
    return [(n, m) for n, m in net.named_modules() if isinstance(m, kind)][-1]


def _replace(net: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, leaf, module)


def _adapt_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB kernels for `channels` inputs: summed for one, repeated and rescaled for more."""
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-channels // weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :channels] * (weight.shape[1] / channels)


def _unwrap(state: dict) -> dict[str, torch.Tensor]:
    """The tensors of a saved model: a bare state dict, or one under "state_dict"/"model", with any
    DataParallel "module." prefix dropped."""
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


# --- where the weights come from ---------------------------------------------------------------------

def weights_dir() -> Path:
    from mpl_core.data.sources import default_data_root
    return default_data_root() / "weights"


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a torch.save file; never a plain pickle."""
    path = Path(path)
    if not path.is_file():
        raise MPLStudioError(f"weights file {path} not found; give the path of a .safetensors or .pt/.pth file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise MPLStudioError(f"{path} is not a readable safetensors file ({exc})") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, ImportError) as exc:
        raise MPLStudioError(f"{path} is neither a safetensors file nor a torch.save file of tensors; a plain "
                             "pickle is refused, since loading one can run any code. Save the weights with "
                             "torch.save(model.state_dict(), path) or as .safetensors") from exc
    if not isinstance(state, dict):
        raise MPLStudioError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _imagenet_weights(arch: str):
    from torchvision.models import get_model_weights
    return get_model_weights(arch).DEFAULT


def imagenet_file(arch: str) -> Path:
    """Where arch's ImageNet weights are kept once downloaded (torch.hub names the file after its URL)."""
    return weights_dir() / _imagenet_weights(arch).url.rsplit("/", 1)[-1]


def imagenet_state(arch: str, on_download: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
    """torchvision's default ImageNet weights for arch, from data/weights/ or downloaded there once;
    on_download(message) is told before a download starts (a job's status line)."""
    weights, path = _imagenet_weights(arch), imagenet_file(arch)
    if on_download is not None and not path.is_file():
        on_download(f"downloading {arch}'s ImageNet weights ({_size_mb(weights)}) into {path.parent}/...")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return weights.get_state_dict(progress=False, model_dir=str(path.parent), check_hash=False)
    except Exception as exc:  # network errors come in many types
        raise MPLStudioError(f"{arch} starts from ImageNet weights, which could not be read or downloaded "
                             f"({exc.__class__.__name__}: {exc}). Put {path.name} (from {weights.url}) in "
                             f"{path.parent}/, give a weights file, or train {FROM_SCRATCH} (--weights none)") from exc


def _size_mb(weights) -> str:
    size = weights.meta.get("_file_size")  # MB, in torchvision's records
    return f"{size:.0f} MB" if size else "size unknown"


def pretrained_state(arch: str, weights: str) -> tuple[dict, str] | None:
    """(state dict, where it came from) for a weights setting: "imagenet", "none" or a file path."""
    if weights in ("", "none"):
        return None
    if weights == "imagenet":
        return imagenet_state(arch), f"torchvision's ImageNet weights for {arch}"
    return load_weights_file(weights), str(weights)


# --- whether the start weights are at hand, before a run ----------------------------------------------

PROBE_TIMEOUT_S = 1.5  # a reachable host takes a connection well within this; a page waits no longer
PROBE_TTL_S = 60.0  # how long a probe's answer is kept: pages rerun on every click
WEIGHTS_STATES = ("scratch", "cached", "downloadable", "unreachable", "file", "missing")


@dataclass(frozen=True)
class WeightsStatus:
    """What a model starts from and whether it is at hand, found without downloading anything."""
    arch: str
    weights: str  # the setting: "imagenet", "none" or a file's path
    state: str  # one of WEIGHTS_STATES
    message: str  # one line for people
    file: Path | None = None  # ImageNet weights: where they are kept; a weights file: its path

    @property
    def ready(self) -> bool:
        """Whether a run can start from them (unreachable or missing weights would fail it)."""
        return self.state not in ("unreachable", "missing")


class HostProbe:
    """Whether a URL's host, or the proxy urllib would use for it, takes a TCP connection within
    timeout_s. Each answer is kept ttl_s, so that pages rerunning on every click do not wait again."""

    def __init__(self, timeout_s: float = PROBE_TIMEOUT_S, ttl_s: float = PROBE_TTL_S):
        self.timeout_s, self.ttl_s = timeout_s, ttl_s
        self._answers: dict[tuple[str, int], tuple[float, bool]] = {}  # address -> (when, reachable)
        self._lock = threading.Lock()

    def __call__(self, url: str) -> bool:
        address, now = _address(url), time.monotonic()
        with self._lock:
            seen = self._answers.get(address)
        if seen is not None and now - seen[0] < self.ttl_s:
            return seen[1]
        ok = _connects(address, self.timeout_s)
        with self._lock:
            self._answers[address] = (now, ok)
        return ok


def _address(url: str) -> tuple[str, int]:
    """(host, port) a download of url connects to: its own, or its proxy's ($https_proxy and the like)."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _connects(address: tuple[str, int], timeout_s: float) -> bool:
    """A TCP connect, in a thread so that name resolution (which has no timeout) cannot outlast timeout_s."""
    done: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection(address, timeout=timeout_s).close()
            done.append(True)
        except OSError:
            pass
    thread = threading.Thread(target=attempt, name="mpl-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(done)


def weights_status(arch: str, weights: str, reachable: Callable[[str], bool] | None = None) -> WeightsStatus:
    """Whether arch's start weights (a weights setting: "imagenet", "none" or a file's path) are at
    hand, without downloading: "cached" (ImageNet weights in weights_dir()), "downloadable" (not yet,
    and their host answers), "unreachable", "file" (a weights file that exists), "missing" (one that
    does not), or "scratch" ("none", or a model without pretrained weights). reachable(url): the
    probe; by default a HostProbe of its own (no memory of earlier answers)."""
    if arch not in TORCHVISION_MODELS or weights in ("", "none"):
        return WeightsStatus(arch, weights, "scratch", f"{arch} starts {FROM_SCRATCH}")
    if weights != "imagenet":
        path = Path(weights)
        if path.is_file():
            return WeightsStatus(arch, weights, "file", f"{arch} starts from the weights file {path}", path)
        return WeightsStatus(arch, weights, "missing", f"{arch} would start from {path}, which is not there: copy "
                             f"the file there, or choose ImageNet weights or {FROM_SCRATCH}", path)
    path, url = imagenet_file(arch), _imagenet_weights(arch).url
    if path.is_file():
        return WeightsStatus(arch, weights, "cached", f"{arch} starts from ImageNet weights, cached in {path}", path)
    if (reachable or HostProbe())(url):
        return WeightsStatus(arch, weights, "downloadable", f"{arch} starts from ImageNet weights, downloaded at "
                             f"the start ({_size_mb(_imagenet_weights(arch))}, once) into {path.parent}/", path)
    host = urllib.parse.urlsplit(url).hostname
    return WeightsStatus(arch, weights, "unreachable", f"{arch}'s ImageNet weights are not in {path.parent}/ "
                         f"and {host} cannot be reached from here: put {path.name} (from {url}) in "
                         f"{path.parent}/, or train {FROM_SCRATCH}", path)
