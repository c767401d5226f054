
import pytest
import torch

from conftest import stripes
from mpl_core.config import AlgorithmConfig, ModelConfig, RunConfig, TrainConfig
from mpl_core.engine.algorithms import (
    ALGORITHM_REGISTRY,
    Batch,
    FeedbackState,
    feedback_coefficient,
    get_algorithm,
    mpl_step,
)
from mpl_core.engine.augment import strong_view, to_float, weak_view
from mpl_core.engine.models import build_model
from mpl_core.engine.state import make_learner


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(name="cnn", num_classes=2, in_channels=1, image_size=16, width=4))


def learner(model, lr=0.05):
    cfg = RunConfig(train=TrainConfig(lr=lr, weight_decay=0.0, warmup_steps=0))
    return make_learner(model, lr, cfg, total=100, warmup=0)


def random_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = to_float(torch.cat([stripes(4, 0, g), stripes(4, 1, g)]))
    u = to_float(torch.cat([stripes(8, 0, g), stripes(8, 1, g)]))
    return Batch(weak_view(x, g), torch.tensor([0] * 4 + [1] * 4), weak_view(u, g), strong_view(u, g))


def params(model):
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@pytest.mark.parametrize("name", sorted(n for n, a in ALGORITHM_REGISTRY.items() if not a.teacher))
def test_single_model_steps_are_finite_and_learn(name):
    cfg = AlgorithmConfig(name=name, threshold=0.0, unlabeled_ramp_steps=0)
    student = learner(tiny_model())
    before = params(student.model)
    metrics = get_algorithm(name).step(student, random_batch(), cfg, step=0)
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert not torch.equal(before, params(student.model))


@pytest.mark.parametrize("sign", ["derivation", "official", "off"])
def test_mpl_step_is_finite_and_moves_both_models(sign):
    cfg = AlgorithmConfig(name="mpl", threshold=0.0, feedback_sign=sign, feedback_baseline=0.9, view_batches="joint")
    teacher, student = learner(tiny_model(0)), learner(tiny_model(1))
    t0, s0 = params(teacher.model), params(student.model)
    state = FeedbackState()
    for step in range(2):
        metrics = mpl_step(teacher, student, random_batch(step), cfg, step, state)
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert set(metrics) >= {"t_loss", "s_loss", "h", "t_loss_mpl", "mask_rate"}
    assert not torch.equal(t0, params(teacher.model)) and not torch.equal(s0, params(student.model))
    assert (state.baseline is not None) == (sign != "off")  # "off" has nothing to centre


def _feedback_experiment(sign: str, pseudo_label: int):
    """Teacher forced to label 8 class-0 images as `pseudo_label`; returns (h, teacher's p(pseudo))."""
    g = torch.Generator().manual_seed(0)
    x = to_float(stripes(8, 0, g))
    batch = Batch(x, torch.zeros(8, dtype=torch.long), x, x)
    teacher_model = tiny_model(0)
    with torch.no_grad():  # the teacher says `pseudo_label` for every image, at ~73% confidence
        teacher_model.head.weight.zero_()
        teacher_model.head.bias.copy_(torch.tensor([1.0, 0.0] if pseudo_label == 0 else [0.0, 1.0]))
    teacher = learner(teacher_model, lr=0.5)
    student = learner(tiny_model(1), lr=0.5)
    cfg = AlgorithmConfig(name="mpl", feedback_sign=sign, unlabeled_weight=0.0, label_smoothing=0.0, threshold=1.0,
                          view_batches="joint")
    metrics = mpl_step(teacher, student, batch, cfg, 0, FeedbackState())
    teacher.model.eval()
    with torch.no_grad():
        p = torch.softmax(teacher.model(x), -1)[:, pseudo_label].mean().item()
    return metrics["h"].item(), p


def test_feedback_sign_rewards_helpful_and_punishes_harmful_pseudo_labels():
    # Helpful: the pseudo-label is the truth, so the student's labeled loss drops (h > 0) ...
    h, p_derivation = _feedback_experiment("derivation", pseudo_label=0)
    _, p_off = _feedback_experiment("off", pseudo_label=0)
    _, p_official = _feedback_experiment("official", pseudo_label=0)
    assert h > 0
    assert p_derivation > p_off + 1e-4  # ... and the derivation's feedback raises p(pseudo-label)
    assert p_official < p_off - 1e-4  # the official code's sign lowers it
    # Harmful: the pseudo-label is wrong, the student's labeled loss rises (h < 0) ...
    h, p_derivation = _feedback_experiment("derivation", pseudo_label=1)
    _, p_off = _feedback_experiment("off", pseudo_label=1)
    assert h < 0
    assert p_derivation < p_off - 1e-4  # ... and the feedback lowers p(pseudo-label)


def test_feedback_baseline_centres_h():
    cfg = AlgorithmConfig(feedback_sign="derivation", feedback_baseline=0.5)
    state = FeedbackState()
    used = [feedback_coefficient(torch.tensor(1.0), torch.tensor(0.0), cfg, state)[1].item() for _ in range(8)]
    assert used[0] == pytest.approx(1.0)  # baseline starts at zero
    assert used[-1] < 0.01  # a constant h is fully absorbed by the baseline


class _MeanProbe(torch.nn.Module):
    """A teacher that says class 0 for bright images and class 1 for dark ones."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[10.0], [-10.0]]))
            self.lin.bias.copy_(torch.tensor([-5.0, 5.0]))

    def forward(self, x):
        return self.lin(x.float().mean((1, 2, 3))[:, None])


@pytest.mark.parametrize("views", ["separate", "joint"])
def test_pseudo_label_view_picks_which_view_the_student_learns_from(views):
    # The weak views are bright (the teacher says 0), the strong views of the same images dark (1).
    g = torch.Generator().manual_seed(0)
    x = to_float(torch.cat([stripes(4, 0, g), stripes(4, 1, g)]))
    batch = Batch(x, torch.tensor([0] * 4 + [1] * 4), torch.ones(8, 1, 16, 16), torch.zeros(8, 1, 16, 16))
    p_zero = {}
    for view in ("weak", "strong"):
        teacher, student = learner(_MeanProbe()), learner(tiny_model(1), lr=0.5)
        cfg = AlgorithmConfig(name="mpl", threshold=0.0, view_batches=views, pseudo_label_view=view)
        mpl_step(teacher, student, batch, cfg, 0, FeedbackState())
        student.model.eval()
        with torch.no_grad():
            p_zero[view] = torch.softmax(student.model(batch.u_strong), -1)[:, 0].mean().item()
    assert p_zero["weak"] > 0.5 > p_zero["strong"]  # taught 0 from the weak views, 1 from the strong ones


def test_supervised_step_with_mixup_weighs_both_labels_by_lam():
    """lam = 1 is the plain loss on y_l, lam = 0 the loss on y_mix alone."""
    batch = random_batch()
    flipped = 1 - batch.y_l
    losses = {}
    for lam in (1.0, 0.0):
        mixed = Batch(batch.x_l, batch.y_l, batch.u_weak, batch.u_strong, y_mix=flipped,
                      lam=torch.full((len(batch.y_l),), lam))
        losses[lam] = get_algorithm("supervised").step(learner(tiny_model()), mixed, AlgorithmConfig(), step=0)["loss"]
    logits = tiny_model()(batch.x_l).float()
    assert torch.allclose(losses[1.0], torch.nn.functional.cross_entropy(logits, batch.y_l), atol=1e-5)
    assert torch.allclose(losses[0.0], torch.nn.functional.cross_entropy(logits, flipped), atol=1e-5)
