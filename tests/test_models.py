import pytest
import torch

from mpl_core.config import ModelConfig
from mpl_core.engine.models import MODEL_REGISTRY, build_model, resolve_model_name
from mpl_core.errors import MPLStudioError


@pytest.mark.parametrize("name,size,channels", [("cnn", 28, 1), ("cnn", 32, 3), ("wrn-28-2", 32, 3)])
def test_registry_models_give_logits(name, size, channels):
    model = build_model(name, num_classes=7, in_channels=channels, image_size=size, width=8)
    out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_wrn_28_2_has_the_papers_size():
    n = sum(p.numel() for p in build_model("wrn-28-2", 10, 3).parameters())
    assert 1.4e6 < n < 1.6e6  # the paper's WRN-28-2 has 1.5M parameters


def test_auto_picks_by_image_size():
    assert isinstance(build_model(ModelConfig(name="auto", image_size=28)), MODEL_REGISTRY["cnn"])
    assert isinstance(build_model(ModelConfig(name="auto", image_size=32, in_channels=3)), MODEL_REGISTRY["wrn-28-2"])


def test_auto_from_scratch_on_a_cpus_own_images_size_is_the_small_cnn():
    """Own images train at 64 px on a CPU: from scratch a ResNet-18 steps 3 times as slowly there."""
    assert resolve_model_name(ModelConfig(image_size=64, weights="none")) == "cnn"
    assert resolve_model_name(ModelConfig(image_size=64, weights="imagenet")) == "resnet18"
    assert resolve_model_name(ModelConfig(image_size=128, weights="none")) == "resnet18"  # a GPU's size
    assert resolve_model_name(ModelConfig(name="resnet18", image_size=64, weights="none")) == "resnet18"


def test_unknown_model_is_a_clear_error():
    with pytest.raises(MPLStudioError, match="unknown model"):
        build_model("resnet-9000")


@pytest.mark.parametrize("name, size, channels", [("cnn", 28, 1), ("wrn-28-2", 32, 3)])
def test_under_bf16_autocast_only_the_head_stays_fp32(name, size, channels):
    """The convolutions run in bf16, the classifier head in fp32 (models.FloatLinear), and the
    head's gradients reach its fp32 parameters."""
    model = build_model(ModelConfig(name=name, image_size=size, in_channels=channels, width=4))
    seen = {}
    model.head.register_forward_pre_hook(lambda m, args: seen.update(head_in=args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.rand(4, channels, size, size))
    assert seen["head_in"] == torch.bfloat16 and logits.dtype == torch.float32
    logits.sum().backward()
    assert model.head.bias.grad.dtype == torch.float32 and model.head.bias.grad.abs().sum() > 0
