import threading

import pytest
import torch

from conftest import tiny_config
from mpl_core.config import DataConfig
from mpl_core.data.dataset import select_classes
from mpl_core.data.splits import make_split
from mpl_core.engine.checkpoint import latest_checkpoint
from mpl_core.engine.state import load_model
from mpl_core.engine.train import TrainControl, train
from mpl_core.errors import MPLStudioError


@pytest.mark.parametrize("algorithm", ["supervised", "pseudo_label", "uda", "mpl"])
def test_every_algorithm_trains_end_to_end(tiny_dataset, tmp_path, algorithm):
    cfg = tiny_config(algorithm)
    seen = []
    result = train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data), out_dir=tmp_path, on_progress=seen.append)
    assert not result.stopped and 0.0 <= result.metrics["test_acc"] <= 1.0
    assert seen[-1].phase == "done" and any("val_acc" in p.metrics for p in seen)
    model, info = load_model(result.checkpoint)
    assert info["class_names"] == ["horizontal", "vertical"]
    convs = [p for p in model.parameters() if p.dim() == 4]  # the layout inference feeds it (predict_logits)
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert ("teacher_test_acc" in result.metrics) == (algorithm == "mpl")


@pytest.mark.parametrize("algorithm", ["supervised", "mpl"])
def test_the_reported_accuracy_is_that_of_the_model_the_checkpoint_gives(tiny_dataset, tmp_path, monkeypatch,
                                                                         algorithm):
    # A supervised run keeps its EMA to the end and its checkpoint's student is the EMA's weights, so
    # its test accuracy must be the EMA's too; MPL's fine-tune folds the EMA into the student.
    import mpl_core.engine.evaluate as evaluate
    measured = []

    def spy(model, images, labels, device, amp):
        measured.append({k: v.clone() for k, v in model.state_dict().items()})
        return real(model, images, labels, device, amp=amp)

    real = evaluate.accuracy
    monkeypatch.setattr(evaluate, "accuracy", spy)
    cfg = tiny_config(algorithm, steps=30, ema_decay=0.9, eval_every=0)
    result = train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data), out_dir=tmp_path)
    saved = load_model(result.checkpoint)[0].state_dict()
    test_model = measured[-2] if algorithm == "mpl" else measured[-1]  # MPL's last call is the teacher's
    assert all(torch.equal(test_model[k], saved[k].to(test_model[k].dtype)) for k in saved)


def test_the_ema_starts_as_the_running_mean_then_keeps_its_decay():
    from mpl_core.engine.ema import ModelEMA
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = ModelEMA(model, 0.99)
    for step, value in enumerate([1.0, 2.0, 6.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model, step)
    assert ema.model.weight.item() == pytest.approx(3.0)  # the mean of 1, 2, 6: the initial 0 dropped out
    ema.update(model, 10_000)  # decay 0.99 once warmed up
    assert ema.model.weight.item() == pytest.approx(3.0 + 0.01 * (6.0 - 3.0))


def test_a_supervised_run_with_mixup_trains_on_mixed_batches(tiny_dataset, monkeypatch):
    import mpl_core.engine.train as train_module
    batches = []

    def spy(*args, **kwargs):
        batches.append(real(*args, **kwargs))
        return batches[-1]

    real = train_module.make_batch
    monkeypatch.setattr(train_module, "make_batch", spy)
    for mixup in (True, False):
        cfg = tiny_config("supervised", steps=5, eval_every=0)
        cfg.algorithm.mixup = mixup
        batches.clear()
        result = train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data))
        assert 0.0 <= result.metrics["test_acc"] <= 1.0 and len(batches) == 5
        assert all((b.lam is not None) == mixup for b in batches)


def test_stop_flag_ends_training_early(tiny_dataset, tmp_path):
    cfg = tiny_config("mpl", steps=1000)
    control = TrainControl()

    def stop_after_first_log(progress):
        if progress.step >= 10:
            control.stop.set()

    result = train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data), out_dir=tmp_path,
                   on_progress=stop_after_first_log, control=control)
    assert result.stopped and result.step == 10


def test_resume_continues_from_the_checkpoint(tiny_dataset, tmp_path):
    cfg = tiny_config("mpl", steps=20, checkpoint_every=10, eval_every=10)
    split = make_split(tiny_dataset, cfg.data)
    control = TrainControl()
    train(cfg, tiny_dataset, split, out_dir=tmp_path, control=control,
          on_progress=lambda p: control.stop.set() if p.step >= 10 else None)
    assert latest_checkpoint(tmp_path) is not None
    steps_seen = []
    result = train(cfg, tiny_dataset, split, out_dir=tmp_path,
                   on_progress=lambda p: steps_seen.append((p.phase, p.step)))
    assert ("train", 10) not in steps_seen and ("train", 20) in steps_seen  # picked up at step 10
    assert result.step == 20 and not result.stopped


def test_a_resumed_run_keeps_the_model_auto_gave_it_when_it_began(tiny_dataset, tmp_path, monkeypatch):
    """What "auto" means changes (from scratch at 64 px it became the small CNN): a run begun under the
    old meaning resumes with the model its checkpoint holds, not the one auto would give now."""
    cfg = tiny_config("supervised", steps=20, checkpoint_every=10, eval_every=0)
    split = make_split(tiny_dataset, cfg.data)
    control = TrainControl()
    with monkeypatch.context() as m:
        m.setattr("mpl_core.engine.train.resolve_model_name", lambda model: "wrn-28-2")  # auto's former meaning
        train(cfg, tiny_dataset, split, out_dir=tmp_path, control=control,
              on_progress=lambda p: control.stop.set() if p.step >= 10 else None)
    result = train(cfg, tiny_dataset, split, out_dir=tmp_path)
    assert result.step == 20 and type(result.models["student"]).__name__ == "WideResNet"


def test_resume_refuses_a_different_algorithm(tiny_dataset, tmp_path):
    cfg = tiny_config("uda")
    train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data), out_dir=tmp_path)
    with pytest.raises(MPLStudioError, match="algorithm.name"):
        train(tiny_config("mpl"), tiny_dataset, make_split(tiny_dataset, cfg.data), out_dir=tmp_path)


def test_pause_blocks_until_resumed(tiny_dataset, tmp_path):
    cfg = tiny_config("supervised", steps=30, eval_every=0)
    control = TrainControl()
    control.resume.clear()  # paused before it starts
    done = threading.Event()
    worker = threading.Thread(target=lambda: (train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data),
                                                    control=control), done.set()))
    worker.start()
    assert not done.wait(0.5)  # nothing happens while paused
    control.resume.set()
    assert done.wait(60)
    worker.join()


def test_short_training_learns_two_fashion_mnist_classes(fmnist):
    """Shirt vs sneaker with 10 labels each: chance is 50%; a model that learned gets far above it."""
    data = select_classes(fmnist, [6, 7])
    cfg = tiny_config("supervised", steps=60, batch_size=16, eval_every=0, finetune_steps=0)
    cfg.data = DataConfig(labels_per_class=10, val_per_class=10, seed=0)
    result = train(cfg, data, make_split(data, cfg.data))
    assert result.metrics["test_acc"] > 0.85  # 2000 test images: chance would be 50% +- 1.1%


def test_same_seed_same_model_and_global_rng_untouched(tiny_dataset):
    cfg = tiny_config("mpl")
    split = make_split(tiny_dataset, cfg.data)
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = train(cfg, tiny_dataset, split)
    assert torch.equal(torch.rand(1), expected_next)  # training drew nothing from the global RNG
    b = train(cfg, tiny_dataset, split)
    def without_timing(history):
        return [{k: v for k, v in row.items() if k not in ("images_per_s", "t")} for row in history]

    assert without_timing(a.history) == without_timing(b.history) and a.metrics == b.metrics


def test_balanced_draw_gives_each_class_its_share():
    from mpl_core.data.splits import Split
    from mpl_core.engine.sampling import IndexSampler
    labeled = torch.arange(1000)
    labels = torch.cat([torch.zeros(990, dtype=torch.int64), torch.ones(10, dtype=torch.int64)])
    sampler = IndexSampler.build(Split(labeled, labeled[:0], torch.arange(5)), labels, balance=True)
    drawn = sampler.labeled(4000, torch.Generator().manual_seed(0))
    share = (labels[drawn] == 1).float().mean().item()
    assert 0.45 < share < 0.55  # 1% of the labels, half of the draws
    assert set(drawn[labels[drawn] == 1].tolist()) == set(range(990, 1000))


def test_a_trusted_share_of_each_labeled_batch_comes_from_the_labels_people_gave():
    from mpl_core.data.splits import Split
    from mpl_core.engine.sampling import IndexSampler
    labeled, labels = torch.arange(1000), torch.arange(1000) % 4
    split = Split(labeled, labeled[:0], torch.arange(5), trusted=torch.arange(20))
    plain = IndexSampler.build(split, labels, balance=True)
    drawn = plain.labeled(4000, torch.Generator().manual_seed(0))
    assert (drawn < 20).float().mean().item() < 0.05  # 2% of the labels: about 2% of the draws
    weighted = IndexSampler.build(split, labels, balance=True, trusted_share=0.25)
    drawn = weighted.labeled(4000, torch.Generator().manual_seed(0))
    assert 0.25 <= (drawn < 20).float().mean().item() < 0.3  # a quarter, plus their share of the rest
    for c in range(4):  # both parts stay class-balanced
        assert 0.22 < (labels[drawn] == c).float().mean().item() < 0.28
    unnamed = IndexSampler.build(Split(labeled, labeled[:0], torch.arange(5)), labels, balance=True,
                                 trusted_share=0.25)  # no trusted labels named: all labels alike
    assert torch.equal(unnamed.labeled(64, torch.Generator().manual_seed(1)),
                       plain.labeled(64, torch.Generator().manual_seed(1)))


def _weights(path):
    from mpl_core.engine.checkpoint import load_checkpoint
    tensors, info = load_checkpoint(path)
    return {k: v for k, v in tensors.items() if k.split(".")[0] in ("student", "teacher", "ema")}, info


def test_a_run_cut_short_resumes_to_the_same_weights_even_after_a_torn_write(tiny_dataset, tmp_path):
    """Step, models, optimizers, EMA and RNG states all come back: the resumed run ends bit-identical
    to one that was never interrupted, even when the newest checkpoint was cut off mid-write."""
    from mpl_core.engine.checkpoint import list_checkpoints
    cfg = tiny_config("mpl", steps=40, checkpoint_every=10, eval_every=0, finetune_steps=0, ema_decay=0.9)
    split = make_split(tiny_dataset, cfg.data)
    straight = train(cfg, tiny_dataset, split, out_dir=tmp_path / "straight")

    cut = tmp_path / "cut"
    control = TrainControl()
    train(cfg, tiny_dataset, split, out_dir=cut, control=control,
          on_progress=lambda p: control.stop.set() if p.step >= 30 else None)
    newest = list_checkpoints(cut)[-1]  # ckpt-30, saved when it stopped; ckpt-20 before it
    assert [p.name for p in list_checkpoints(cut)] == ["ckpt-0000020.safetensors", "ckpt-0000030.safetensors"]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # the kill hit this write
    (cut / "ckpt-0000040.safetensors.tmp").write_bytes(b"partial")  # and left a temp file behind
    resumed_steps = []
    resumed = train(cfg, tiny_dataset, split, out_dir=cut, on_progress=lambda p: resumed_steps.append(p.step))
    assert resumed_steps[0] == 30  # picked up from ckpt-20, the last whole one
    a, info_a = _weights(straight.checkpoint)
    b, info_b = _weights(resumed.checkpoint)
    assert info_a["step"] == info_b["step"] == 40 and a.keys() == b.keys() and any(k.startswith("ema.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]


def test_compiled_training_matches_eager(tiny_dataset):
    """torch.compile (TrainConfig.compile) wraps the models for the step only: same weights as eager.

    In fp32: under bf16 autocast compiled kernels round differently from eager ones, so the two
    would drift apart by more than any tolerance that still catches a wrong wrapper."""
    results = {}
    for compiled in (False, True):
        cfg = tiny_config("mpl", steps=10, finetune_steps=10, compile=compiled, amp=False)
        results[compiled] = train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data))
    for name, eager in results[False].models.items():
        a, b = eager.state_dict(), results[True].models[name].state_dict()
        assert a.keys() == b.keys()  # plain module names: no compile wrapper in checkpoints
        assert max((a[k].double() - b[k].double()).abs().max().item() for k in a) < 1e-4
    assert results[True].history[-1]["finetune_loss"] == pytest.approx(results[False].history[-1]["finetune_loss"],
                                                                        rel=1e-4)


def test_cpu_bf16_autocast_runs_where_the_cpu_has_native_bf16(tiny_dataset, monkeypatch):
    """On a CPU with native bf16 the step's convolutions run in bf16 and the run says so; with amp
    off, or on a CPU without it, they stay fp32. The check is forced both ways, so it does not
    depend on the CPU under the tests."""
    from mpl_core.engine import inference
    for native, amp, expected in ((True, True, torch.bfloat16), (True, False, torch.float32),
                                  (False, True, torch.float32)):
        monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: native)
        seen, labels = set(), []
        cfg = tiny_config("mpl", steps=4, finetune_steps=2, device="cpu", amp=amp)
        hook = torch.nn.modules.module.register_module_forward_hook(
            lambda m, i, out: seen.add(out.dtype) if isinstance(m, torch.nn.Conv2d) and m.training else None)
        try:
            result = train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data),
                           on_progress=lambda p: labels.append(p.device))
        finally:
            hook.remove()
        assert seen == {expected}, (native, amp, seen)
        assert ("bf16" in labels[-1]) == (expected == torch.bfloat16)
        assert all(torch.isfinite(v).all() for v in result.models["student"].state_dict().values()
                   if v.is_floating_point())


def test_a_run_can_start_from_an_earlier_runs_student(tiny_dataset, tmp_path):
    cfg = tiny_config("mpl")
    split = make_split(tiny_dataset, cfg.data)
    first = train(cfg, tiny_dataset, split, out_dir=tmp_path / "mpl")
    student, _ = load_model(first.checkpoint)
    cfg2 = tiny_config("supervised", steps=1, lr=1e-9, ema_decay=0)  # a step too small to move the weights
    cfg2.model.init_from = str(first.checkpoint)
    second = train(cfg2, tiny_dataset, split, out_dir=tmp_path / "round")
    tuned, info = load_model(second.checkpoint)
    convs = [k for k, v in student.named_parameters() if v.ndim == 4]
    assert convs and all(torch.allclose(student.state_dict()[k], tuned.state_dict()[k], atol=1e-6) for k in convs)
    assert info["model"]["init_from"] == str(first.checkpoint)  # the run's record says where it started
    cfg2.model.init_from = ""  # from scratch: other weights
    scratch, _ = load_model(train(cfg2, tiny_dataset, split, out_dir=tmp_path / "scratch").checkpoint)
    assert not torch.allclose(student.state_dict()[convs[0]], scratch.state_dict()[convs[0]])


def test_a_run_can_start_from_an_earlier_mpl_runs_teacher(tiny_dataset, tmp_path):
    cfg = tiny_config("mpl")
    split = make_split(tiny_dataset, cfg.data)
    first = train(cfg, tiny_dataset, split, out_dir=tmp_path / "mpl")
    teacher, _ = load_model(first.checkpoint, "teacher")
    student, _ = load_model(first.checkpoint, "student")
    cfg2 = tiny_config("supervised", steps=1, lr=1e-9, ema_decay=0)  # a step too small to move the weights
    cfg2.model.init_from, cfg2.model.init_role = str(first.checkpoint), "teacher"
    tuned, info = load_model(train(cfg2, tiny_dataset, split, out_dir=tmp_path / "round").checkpoint)
    convs = [k for k, v in teacher.named_parameters() if v.ndim == 4]
    assert convs and all(torch.allclose(teacher.state_dict()[k], tuned.state_dict()[k], atol=1e-6) for k in convs)
    assert not torch.allclose(student.state_dict()[convs[0]], tuned.state_dict()[convs[0]])
    assert info["model"]["init_role"] == "teacher"  # the run's record says which model it started from
    cfg2.model.init_from = str(tmp_path / "round")  # a supervised run has no teacher to start from
    with pytest.raises(MPLStudioError, match="has no teacher model"):
        train(cfg2, tiny_dataset, split, out_dir=tmp_path / "again")


def test_starting_from_another_model_is_a_clear_error(tiny_dataset, tmp_path):
    cfg = tiny_config("supervised")
    split = make_split(tiny_dataset, cfg.data)
    first = train(cfg, tiny_dataset, split, out_dir=tmp_path / "a")
    wider = tiny_config("supervised")
    wider.model.width, wider.model.init_from = 8, str(first.checkpoint)
    with pytest.raises(MPLStudioError, match="does not fit this run's model"):
        train(wider, tiny_dataset, split, out_dir=tmp_path / "b")
    wider.model.init_from = str(tmp_path / "missing.safetensors")
    with pytest.raises(MPLStudioError, match="no checkpoint"):
        train(wider, tiny_dataset, split, out_dir=tmp_path / "c")


def test_a_resumed_run_keeps_its_own_weights_not_the_ones_it_started_from(tiny_dataset, tmp_path):
    cfg = tiny_config("supervised")
    split = make_split(tiny_dataset, cfg.data)
    first = train(cfg, tiny_dataset, split, out_dir=tmp_path / "a")
    tuned = tiny_config("supervised", steps=20, checkpoint_every=10, eval_every=10)
    tuned.model.init_from = str(first.checkpoint)
    control = TrainControl()
    train(tuned, tiny_dataset, split, out_dir=tmp_path / "b", control=control,
          on_progress=lambda p: control.stop.set() if p.step >= 10 else None)
    first.checkpoint.unlink()  # gone: a resume reads only its own checkpoint
    result = train(tuned, tiny_dataset, split, out_dir=tmp_path / "b")
    assert result.step == 20 and not result.stopped


@pytest.mark.parametrize("after, kept", [(0.70, False), (0.80, True), (0.90, True)])
def test_the_fine_tune_is_kept_only_where_it_does_not_lower_validation_accuracy(after, kept):
    from types import SimpleNamespace

    from mpl_core.engine.train import end_finetune
    model = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)  # what the fine-tune changed
    state = SimpleNamespace(student=SimpleNamespace(model=model), best={"val_acc_before_finetune": 0.80},
                            before_finetune=before)
    end_finetune(state, SimpleNamespace(val_acc=lambda m: after))
    assert state.best["finetune_kept"] is kept and state.before_finetune is None
    assert torch.equal(model.weight, before["weight"]) is not kept


def test_an_mpl_run_never_ends_below_its_student_before_the_fine_tune(tiny_dataset):
    cfg = tiny_config("mpl", steps=6, finetune_steps=4)
    m = train(cfg, tiny_dataset, make_split(tiny_dataset, cfg.data)).metrics
    assert isinstance(m["finetune_kept"], bool)
    assert m["val_acc"] >= m["val_acc_before_finetune"]  # kept where it helped, else undone
    assert m["finetune_kept"] or m["val_acc"] == m["val_acc_before_finetune"]
