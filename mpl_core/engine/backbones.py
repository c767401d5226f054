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
`pretrained_body` marks the model so the optimizer gives its body a lower learning rate than its
new head (TrainConfig.pretrained_lr_scale).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn as nn

from mpl_core.config import ModelConfig
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


def imagenet_state(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's default ImageNet weights for arch, from data/weights/ or downloaded there once."""
    from torchvision.models import get_model_weights
    weights = get_model_weights(arch).DEFAULT
    folder = weights_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return weights.get_state_dict(progress=False, model_dir=str(folder), check_hash=False)
    except Exception as exc:  # network errors come in many types
        name = weights.url.rsplit("/", 1)[-1]
        raise MPLStudioError(f"{arch} starts from ImageNet weights, which could not be read or downloaded "
                             f"({exc.__class__.__name__}: {exc}). Put {name} (from {weights.url}) in {folder}/, "
                             "give a weights file, or train from scratch with weights 'none'") from exc


def pretrained_state(arch: str, weights: str) -> tuple[dict, str] | None:
    """(state dict, where it came from) for a weights setting: "imagenet", "none" or a file path."""
    if weights in ("", "none"):
        return None
    if weights == "imagenet":
        return imagenet_state(arch), f"torchvision's ImageNet weights for {arch}"
    return load_weights_file(weights), str(weights)
