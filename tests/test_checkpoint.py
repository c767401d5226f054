import pytest
import torch

from mpl_core.engine import checkpoint as ckpt
from mpl_core.errors import MPLStudioError


def test_round_trip_keeps_tensors_and_description(tmp_path):
    tensors = {"a.weight": torch.randn(3, 4), "rng": torch.ByteTensor([1, 2, 3])}
    path = ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 5), tensors, {"step": 5, "class_names": ["x", "y"]})
    loaded, info = ckpt.load_checkpoint(path)
    assert torch.equal(loaded["a.weight"], tensors["a.weight"]) and torch.equal(loaded["rng"], tensors["rng"])
    assert info["step"] == 5 and info["class_names"] == ["x", "y"]
    assert path.with_suffix(".json").is_file()  # human-readable copy beside the weights


def test_flatten_round_trip_of_optimizer_state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = {}, {}
    ckpt.flatten_state("opt", opt.state_dict(), tensors, meta)
    restored = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    restored.load_state_dict(ckpt.unflatten_state("opt", tensors, meta))
    assert restored.param_groups[0]["lr"] == 0.1
    assert torch.equal(restored.state[model.weight]["momentum_buffer"], opt.state[model.weight]["momentum_buffer"])


def test_torn_newest_checkpoint_falls_back_to_previous(tmp_path):
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 1), {"w": torch.ones(2)}, {"step": 1})
    ckpt.checkpoint_path(tmp_path, 2).write_bytes(b"\x00garbage")  # a write cut short
    assert ckpt.latest_checkpoint(tmp_path) == ckpt.checkpoint_path(tmp_path, 1)


def test_foreign_or_broken_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MPLStudioError, match="not a readable checkpoint"):
        ckpt.load_checkpoint(bad)


def test_prune_keeps_the_newest_two(tmp_path):
    for step in range(4):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, step), {"w": torch.ones(1)}, {"step": step})
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-0000002.safetensors", "ckpt-0000003.safetensors"]
