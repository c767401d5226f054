"""Settings chosen by the device (engine/defaults.py): separate view batches on a CPU, joint on
CUDA, fp32 on a CPU without native bf16; what a user set is kept; the choice is recorded with the
run and shown in the device label."""
import pytest
import torch

from conftest import tiny_run_config
from mpl_core.config import AlgorithmConfig, RunConfig
from mpl_core.data.splits import make_split
from mpl_core.engine import checkpoint as ckpt
from mpl_core.engine.algorithms import FeedbackState, mpl_step
from mpl_core.engine.defaults import for_device
from mpl_core.engine.inference import cpu_has_native_bf16
from mpl_core.engine.train import device_label, train
from mpl_core.presets import build_run_config


def test_auto_view_batches_are_separate_on_a_cpu_and_joint_on_cuda():
    cfg = RunConfig()
    assert cfg.algorithm.view_batches == "auto"  # the default is the device's choice
    assert for_device(cfg, torch.device("cpu")).algorithm.view_batches == "separate"
    assert for_device(cfg, torch.device("cuda")).algorithm.view_batches == "joint"
    assert cfg.algorithm.view_batches == "auto"  # a copy: the caller's config is unchanged


def test_a_resumed_run_keeps_the_batching_it_began_with():
    began_on_a_cpu = {"algorithm": {"view_batches": "separate"}}
    assert for_device(RunConfig(), torch.device("cuda"), saved=began_on_a_cpu).algorithm.view_batches == "separate"
    older = {"algorithm": {}}  # a checkpoint from before the choice was recorded: the device decides
    assert for_device(RunConfig(), torch.device("cuda"), saved=older).algorithm.view_batches == "joint"


@pytest.mark.parametrize("views", ["joint", "separate"])
def test_a_view_batching_the_user_chose_is_kept_on_every_device(views):
    cfg = build_run_config("smoke", view_batches=views)
    for device in ("cpu", "cuda"):
        assert for_device(cfg, torch.device(device)).algorithm.view_batches == views


def test_the_device_label_says_what_the_run_computes_in():
    cpu = torch.device("cpu")
    precision = "bf16" if cpu_has_native_bf16() else "fp32"
    assert device_label(cpu, amp=True, views="separate").endswith(f"threads, {precision}, separate view batches)")
    assert device_label(cpu, amp=False).endswith("threads, fp32)")  # --no-amp is fp32 everywhere


def test_a_step_refuses_an_unresolved_view_batching():
    with pytest.raises(ValueError, match="for_device"):
        mpl_step(None, None, None, AlgorithmConfig(name="mpl"), 0, FeedbackState())


def test_training_records_and_reports_the_devices_choice(tiny_dataset, tmp_path):
    cfg = tiny_run_config("mpl", steps=2, finetune_steps=0)
    assert cfg.algorithm.view_batches == "auto"
    seen = []
    result = train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data), out_dir=tmp_path, on_progress=seen.append)
    _, info = ckpt.load_checkpoint(result.checkpoint)
    assert info["config"]["algorithm"]["view_batches"] == "separate"  # what ran, not "auto"
    assert seen and all(p.device.endswith("separate view batches)") for p in seen)
    supervised = tiny_run_config("supervised", steps=2)
    seen.clear()
    train(supervised, tiny_dataset, make_split(tiny_dataset, supervised.data), on_progress=seen.append)
    assert "view batches" not in seen[-1].device  # one model: view batching does not apply
