"""The fast MPL step (one concatenated forward per model, channels_last) against the reference
formulation (a forward per view, fp32): the same losses and the same updated weights; under bf16
autocast, the same to bf16's precision. On the CPU always, on CUDA too where there is a GPU."""

import pytest
import torch

from mpl_core.config import AlgorithmConfig, ModelConfig, RunConfig, TrainConfig
from mpl_core.engine.algorithms import Batch, FeedbackState, mpl_step
from mpl_core.engine.inference import autocast_for, bf16_autocast_applies
from mpl_core.engine.models import build_model
from mpl_core.engine.reference import reference_mpl_step, reference_mpl_step_joint
from mpl_core.engine.state import make_learner

# CUDA where there is one: the same checks then cover the GPU kernels (cuDNN with TF32 off, so that
# fp32 means fp32) and bf16 autocast there.
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="no CUDA device"))]


@pytest.fixture
def strict_fp32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _pair(name: str, channels_last: bool, train_mode: bool = False, device: str = "cpu"):
    cfg = RunConfig(train=TrainConfig(steps=10, lr=0.05, warmup_steps=0))
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        models = [build_model(ModelConfig(name=name, num_classes=4, in_channels=3, image_size=32, width=8)),
                  build_model(ModelConfig(name=name, num_classes=4, in_channels=3, image_size=32, width=8))]
    learners = []
    for m in models:
        # eval: BatchNorm on running statistics, where the joint and per-view formulations compute
        # the same function; train: batch statistics, where only per-view passes match the reference
        m.train(train_mode)
        m.to(device)
        if channels_last:
            m.to(memory_format=torch.channels_last)
        learners.append(make_learner(m, 0.01, cfg, 10, 0))
    b, n_u = 4, 8
    batch = Batch(torch.rand(b, 3, 32, 32, generator=gen), torch.randint(4, (b,), generator=gen),
                  torch.rand(n_u, 3, 32, 32, generator=gen), torch.rand(n_u, 3, 32, 32, generator=gen))
    return learners, Batch(*(t.to(device) for t in (batch.x_l, batch.y_l, batch.u_weak, batch.u_strong)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model", ["cnn"])
@pytest.mark.parametrize("sign", ["derivation", "official"])
def test_fast_and_reference_steps_agree(model, sign, device, strict_fp32):
    algo = AlgorithmConfig(name="mpl", threshold=0.3, unlabeled_ramp_steps=0, feedback_sign=sign, view_batches="joint")
    (t_fast, s_fast), batch = _pair(model, channels_last=True, device=device)
    (t_ref, s_ref), _ = _pair(model, channels_last=False, device=device)
    for step in range(3):  # three steps: the updates agree too, not only the first losses
        cl = Batch(*(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in
                     (batch.x_l, batch.y_l, batch.u_weak, batch.u_strong)))
        fast = mpl_step(t_fast, s_fast, cl, algo, step, FeedbackState())
        ref = reference_mpl_step(t_ref, s_ref, batch, algo, step, FeedbackState())
        for key in ref:
            assert torch.allclose(fast[key].float(), ref[key].float(), rtol=1e-4, atol=1e-5), (step, key)
    for a, b in ((t_fast, t_ref), (s_fast, s_ref)):
        for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
            assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), name
    assert fast["t_loss"] != 0 and float(fast["h"]) != 0  # the check saw a real step


def _run(algo, learners, batch, step_fn, steps=3):
    (teacher, student), out = learners, []
    for step in range(steps):
        out.append(step_fn(teacher, student, batch, algo, step, FeedbackState()))
    return out


@pytest.mark.parametrize("pseudo_view", ["strong", "weak"])
def test_separate_view_batches_match_the_reference_with_batch_statistics(pseudo_view):
    """view_batches="separate" runs the reference's passes (the weak ones without a graph), so it
    matches the reference even with BatchNorm in training mode; "joint" does not, by design."""
    base = dict(name="mpl", threshold=0.3, unlabeled_ramp_steps=0, pseudo_label_view=pseudo_view)
    ref_learners, batch = _pair("cnn", channels_last=False, train_mode=True)
    ref = _run(AlgorithmConfig(**base), ref_learners, batch, reference_mpl_step)  # the references ignore it
    sep_learners, _ = _pair("cnn", channels_last=True, train_mode=True)
    sep = _run(AlgorithmConfig(**base, view_batches="separate"), sep_learners, batch, mpl_step)
    joint_learners, _ = _pair("cnn", channels_last=True, train_mode=True)
    joint = _run(AlgorithmConfig(**base, view_batches="joint"), joint_learners, batch, mpl_step)
    for r, s in zip(ref, sep):
        for key in r:
            assert torch.allclose(s[key].float(), r[key].float(), rtol=1e-4, atol=1e-5), key
    for a, b in zip(sep_learners, ref_learners):
        for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
            assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), name
    assert not torch.allclose(joint[0]["t_loss"], ref[0]["t_loss"], rtol=1e-4)  # joint batches differ


@pytest.mark.parametrize("pseudo_view", ["strong", "weak"])
def test_joint_view_batches_match_the_joint_reference_with_batch_statistics(pseudo_view):
    """view_batches="joint" computes what the official code and the port compute (one batch per
    model over the concatenated views), BatchNorm on batch statistics included."""
    base = dict(name="mpl", threshold=0.3, unlabeled_ramp_steps=0, pseudo_label_view=pseudo_view)
    ref_learners, batch = _pair("cnn", channels_last=False, train_mode=True)
    ref = _run(AlgorithmConfig(**base), ref_learners, batch, reference_mpl_step_joint)
    joint_learners, _ = _pair("cnn", channels_last=True, train_mode=True)
    joint = _run(AlgorithmConfig(**base, view_batches="joint"), joint_learners, batch, mpl_step)
    for r, j in zip(ref, joint):
        for key in r:
            assert torch.allclose(j[key].float(), r[key].float(), rtol=1e-4, atol=1e-5), key
    for a, b in zip(joint_learners, ref_learners):
        for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
            assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), name
    per_view = _run(AlgorithmConfig(**base), _pair("cnn", channels_last=False, train_mode=True)[0], batch,
                    reference_mpl_step)
    assert not torch.allclose(per_view[0]["t_loss"], ref[0]["t_loss"], rtol=1e-4)  # the two references differ


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("view_batches", ["joint", "separate"])
def test_bf16_step_stays_close_to_the_fp32_reference(device, view_batches, strict_fp32):
    """Under bf16 autocast (where it applies) the fast step computes the fp32 reference's losses
    to bf16's precision, and its updates move the weights the same way."""
    if not bf16_autocast_applies(torch.device(device)):
        pytest.skip("bf16 autocast does not apply here: no native bf16 on this CPU")
    algo = AlgorithmConfig(name="mpl", threshold=0.3, unlabeled_ramp_steps=0, view_batches=view_batches)
    (t_fast, s_fast), batch = _pair("cnn", channels_last=True, device=device)
    (t_ref, s_ref), _ = _pair("cnn", channels_last=False, device=device)
    before = [p.detach().clone() for p in t_ref.model.parameters()]
    for step in range(3):
        with autocast_for(torch.device(device)):
            fast = mpl_step(t_fast, s_fast, batch, algo, step, FeedbackState())
        ref = reference_mpl_step(t_ref, s_ref, batch, algo, step, FeedbackState())
        for key in ("t_loss", "t_loss_labeled", "s_loss", "s_loss_labeled"):
            assert torch.allclose(fast[key].float(), ref[key].float(), rtol=2e-2, atol=1e-3), (step, key)
    # the updates: each teacher tensor moved (nearly) as the fp32 one did
    for p, q, p0 in zip(t_fast.model.parameters(), t_ref.model.parameters(), before):
        fast_move, ref_move = (p - p0).flatten().float(), (q - p0).flatten().float()
        if ref_move.norm() > 0:
            assert torch.nn.functional.cosine_similarity(fast_move, ref_move, dim=0) > 0.95
