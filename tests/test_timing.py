"""engine/timing.py: a probe of a few steps, and the estimate of a whole run from it."""
import dataclasses
import time

import pytest
import torch

from conftest import tiny_config
from mpl_core.data.splits import make_split
from mpl_core.engine.timing import (
    StepTiming,
    estimate_run,
    eval_passes,
    probe_config,
    time_steps,
    timing_key,
)
from mpl_core.engine.train import TrainControl, train


@pytest.fixture
def one_thread():
    """One CPU thread: with two on a busy 2-core machine the step times swing several-fold."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_estimate_of_a_tiny_run_is_within_a_generous_factor_of_its_real_time(tiny_dataset, one_thread):
    cfg = tiny_config("mpl", steps=150, finetune_steps=40, eval_every=50)
    cfg.train.device = "cpu"
    split = make_split(tiny_dataset, cfg.data)
    timing = time_steps(cfg, tiny_dataset, split, seconds=0.5)
    assert timing.steps >= 3 and timing.step_s > 0 and timing.finetune_step_s > 0 and timing.eval_image_s > 0
    assert timing.teacher_eval_image_s > 0 and timing.device.startswith("cpu")
    estimate = estimate_run(cfg, timing, tiny_dataset, split)
    t0 = time.perf_counter()
    train(cfg, tiny_dataset, split)
    real = time.perf_counter() - t0
    assert real / 3 < estimate.total_s < 3 * real, (estimate, real)


def test_a_probe_stops_when_told_and_trains_from_scratch_without_evaluating(tiny_dataset, one_thread):
    cfg = tiny_config("mpl")
    cfg.model = dataclasses.replace(cfg.model, name="auto", weights="imagenet")  # would download at 64 px
    probe = probe_config(cfg, 28)
    assert (probe.model.name, probe.model.weights, probe.train.eval_every, probe.train.checkpoint_every) == \
        ("cnn", "none", 0, 0)
    assert probe_config(cfg, 64).model.name == "resnet18"  # the model the run would get, from scratch
    stop = TrainControl()
    stop.stop.set()
    t0 = time.perf_counter()
    timing = time_steps(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data), control=stop)
    assert timing.finetune_step_s == 0 and time.perf_counter() - t0 < 10


def test_evaluations_count_as_the_loop_makes_them():
    assert eval_passes(600, 100) == 6 and eval_passes(100, 100) == 1 and eval_passes(105, 100) == 2
    assert eval_passes(7000, 0) == 0 and eval_passes(0, 100) == 0
    assert eval_passes(30, 25) == 1  # at the log steps (10, 20, 30) that are multiples of 25, and at the end
    cfg = tiny_config("mpl", steps=100, finetune_steps=20, eval_every=50)
    timing = StepTiming(set_up_s=2.0, step_s=0.5, finetune_step_s=0.1, eval_image_s=0.01, teacher_eval_image_s=0.02,
                        steps=10, device="cpu")

    class Data:  # 8 validation images; no test set
        test = None
    split = dataclasses.make_dataclass("S", ["val"])(torch.arange(8))
    e = estimate_run(cfg, timing, Data, split)
    assert (e.set_up_s, e.steps_s, e.finetune_s) == (2.0, 50.0, 2.0)
    # 2 passes in the main phase, 1 in the fine-tune, the final one (student and teacher); the fine-tune's
    # start and end (the student)
    assert e.eval_s == pytest.approx((2 + 1 + 1) * 8 * 0.03 + 2 * 8 * 0.01)
    assert e.total_s == pytest.approx(2 + 50 + 2 + e.eval_s)


def test_the_timing_key_follows_what_sets_a_steps_time_only():
    base = tiny_config("mpl")
    key = timing_key(base, 28)
    same = tiny_config("mpl", steps=999, finetune_steps=3, lr=0.3, seed=7)
    assert timing_key(same, 28) == key
    assert timing_key(tiny_config("mpl", batch_size=8), 28) != key
    assert timing_key(tiny_config("supervised"), 28) != key
    assert timing_key(base, 32) != key  # another size: another model too (wrn-28-2)
