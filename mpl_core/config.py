"""Dataclass configs: data, model, algorithm, training. Saved with every run and checkpoint."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mpl_core.errors import MPLStudioError

ALGORITHMS = ("supervised", "pseudo_label", "uda", "mpl")
FEEDBACK_SIGNS = ("derivation", "official", "off")
VIEW_BATCHES = ("auto", "joint", "separate")
LABELED_VIEWS = ("weak", "strong")
PSEUDO_LABEL_VIEWS = ("weak", "strong")
INIT_ROLES = ("student", "teacher")  # which model of an earlier run a round starts from
TORCHVISION_MODELS = ("resnet18", "resnet50", "efficientnet_b0", "convnext_tiny", "mobilenet_v3_small",
                      "mobilenet_v3_large")  # engine/backbones.py
MODEL_NAMES = ("cnn", "wrn-28-2") + TORCHVISION_MODELS
# What people read for weights "none" (the Train page's control, the CLI's help, messages, docs).
FROM_SCRATCH = "from scratch"
EXPORT_FORMATS = ("csv", "label-studio", "imagefolder", "imagefolder-zip", "checkpoint")
# FixMatch's 0.95 for hard self-training; the official MPL code's 0.6 for UDA-style targets, whose
# teacher is trained with label smoothing and so is rarely 95% sure.
DEFAULT_THRESHOLD = {"supervised": 0.95, "pseudo_label": 0.95, "uda": 0.6, "mpl": 0.6}


# Fields added after runs were saved without them: (section, field) -> what those runs computed with.
LEGACY_VALUES: dict[tuple[str, str], object] = {("algorithm", "pseudo_label_view"): "strong"}


@dataclass
class DataConfig:
    dataset: str = "fashion-mnist"  # built-in name, torchvision name, or a folder/zip path
    labels_per_class: int = 10  # training labels per class for built-in datasets
    val_per_class: int = 50  # extra labeled samples per class held out for calibration/selection; own images:
    # held out of each class's labels where it keeps splits.MIN_TRAIN_PER_CLASS (10) to train on, fewer below
    val_fraction: float = 0.0  # own images: > 0 holds out this share of each class instead (workspaces made
    # before val_per_class applied to own images hold 0.2: their split stays as it was)
    image_size: int = 0  # own images train at this size; 0 = chosen from the images and the device: 28 (gray) or
    # 32 px for images up to 32 px, else 64 px on a CPU and 128 px on a GPU, never above the images' own size
    max_unlabeled: int = 0  # cap on the unlabeled pool (0 = all); tests use small pools
    seed: int = 0  # drives the split; the same seed gives the same split


@dataclass
class ModelConfig:
    name: str = "auto"  # "cnn", "wrn-28-2", a torchvision model (engine/backbones.py), or "auto": cnn for
    # <= 28 px, wrn-28-2 up to 32 px, resnet18 above (from scratch up to 64 px: cnn, engine/models.py).
    # MPL's teacher, and the student unless `student` is set
    student: str = ""  # the student's model where it differs (a small one to deploy); "" = the same as name
    weights: str = "imagenet"  # torchvision models: "imagenet" (torchvision's, cached in data/weights/),
    # "none" (FROM_SCRATCH) or the path of a .safetensors / torch.save file
    student_weights: str = ""  # "" = as `weights` (a file only where the student is the same model)
    init_from: str = ""  # a checkpoint of an earlier run: its student's (or teacher's, init_role) weights
    # start this run's student (a retrain round that fine-tunes; the models must match). "" = weights as above
    init_role: str = "student"  # which of init_from's models: "student", or "teacher" (an MPL run's; at short
    # budgets it is well ahead of its student, docs/results.md "Rounds under the weak-view default")
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 28
    width: int = 32  # cnn: channels of the first block (doubled per block)
    mean: tuple[float, ...] = (0.5,)  # per-channel input normalisation, from the training pool
    std: tuple[float, ...] = (0.25,)


@dataclass
class AlgorithmConfig:
    name: str = "mpl"  # one of ALGORITHMS
    threshold: float | None = None  # confidence for a pseudo-label / consistency target; None = DEFAULT_THRESHOLD
    temperature: float = 0.7  # UDA sharpening of the weak-view targets (paper: 0.7 on CIFAR)
    unlabeled_weight: float = 1.0  # weight of the unlabeled loss (UDA lambda / pseudo-label weight)
    unlabeled_ramp_steps: int = 200  # linear warm-up of unlabeled_weight, in steps
    label_smoothing: float = 0.15  # teacher's labeled loss (the official code uses 0.15)
    feedback_sign: str = "derivation"  # "derivation": h = CE_before - CE_after; "official": opposite; "off"
    feedback_baseline: float = 0.0  # EMA decay of a moving-average baseline subtracted from h (0 = none)
    view_batches: str = "auto"  # MPL: "joint" = each model sees all its views in one batch (official
    # code); "separate" = one pass per view (the ports), a quarter fewer FLOPs; BatchNorm statistics
    # differ. "auto" = chosen by the device before the run (engine/defaults.py): separate on a CPU,
    # joint on CUDA
    pseudo_label_view: str = "weak"  # MPL: the view whose teacher argmax the student learns from and the
    # feedback reinforces: "weak" (the PyTorch port's student targets: the teacher is right more often on
    # the weak view; docs/results.md#settings-tried-toward-80) or "strong" (the official code's)
    mixup: bool = False  # supervised only: mix each labeled image with another of the batch and their labels
    # alike (Zhang et al. 2018), which resists wrong labels such as a round's rejected-not-yet pseudo-labels
    labeled_view: str = "weak"  # the labeled batch's view in the main phase: "strong" (RandAugment and
    # cutout) noises a student trained on accepted pseudo-labels, as Noisy Student does (Xie et al. 2020)


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer steps of the main phase
    batch_size: int = 32  # labeled images per step
    mu: int = 4  # unlabeled images per labeled image (paper: 7)
    lr: float = 0.05  # SGD learning rate of teacher and student, cosine-decayed
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 50  # linear learning-rate warm-up
    ema_decay: float = 0.99  # EMA of the evaluated model; 0 disables
    finetune_steps: int = 200  # MPL only: final fine-tune of the student on labeled data
    finetune_lr: float = 0.01
    eval_every: int = 100  # steps between validation passes (and progress with accuracy)
    checkpoint_every: int = 500  # steps between checkpoints (0 = only at the end)
    device: str = "auto"  # "auto" = cuda if present, else cpu
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16); else fp32
    threads: int = 0  # CPU threads for torch (0 = leave torch's default)
    compile: bool = False  # torch.compile the training passes: a slow first minute, then faster steps
    seed: int = 0  # model init, sampling and augmentation
    pretrained_lr_scale: float = 0.1  # a pretrained body learns at this share of the rate of its new head
    balance_classes: bool = False  # labeled batches draw each class equally often (retrain rounds turn it
    # on: accepted pseudo-labels crowd into the easy classes)
    trusted_share: float = 0.0  # the share of each labeled batch drawn from the labels people gave (given,
    # relabeled, by hand) rather than from all labels: a retrain's few reviewed labels among tens of
    # thousands of accepted pseudo-labels would otherwise hardly be seen (0 = all labels alike)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """A config saved with a run or checkpoint; a field it lacks takes the value the version that
        saved it computed with (LEGACY_VALUES), then its default, so a resumed run goes on as it began."""
        d = with_legacy_values(d)
        model = dict(d.get("model", {}))
        for key in ("mean", "std"):
            if key in model:
                model[key] = tuple(model[key])
        return cls(
            data=_build(DataConfig, d.get("data", {})),
            model=_build(ModelConfig, model),
            algorithm=_build(AlgorithmConfig, d.get("algorithm", {})),
            train=_build(TrainConfig, d.get("train", {})),
        )

    def validate(self) -> "RunConfig":
        """Raise MPLStudioError for values a user could have typed wrong."""
        a, t, d = self.algorithm, self.train, self.data
        if a.threshold is None and a.name in DEFAULT_THRESHOLD:
            a.threshold = DEFAULT_THRESHOLD[a.name]
        _check(a.name in ALGORITHMS, f"algorithm must be one of {', '.join(ALGORITHMS)}, not {a.name!r}")
        _check(a.feedback_sign in FEEDBACK_SIGNS,
               f"feedback_sign must be one of {', '.join(FEEDBACK_SIGNS)}, not {a.feedback_sign!r}")
        _check(a.pseudo_label_view in PSEUDO_LABEL_VIEWS,
               f"pseudo_label_view must be one of {', '.join(PSEUDO_LABEL_VIEWS)}, not {a.pseudo_label_view!r}")
        _check(a.labeled_view in LABELED_VIEWS,
               f"labeled_view must be one of {', '.join(LABELED_VIEWS)}, not {a.labeled_view!r}")
        _check(not a.mixup or a.name == "supervised",
               f"mixup is for supervised rounds (the one measured), not {a.name}")
        _check(a.view_batches in VIEW_BATCHES,
               f"view_batches must be one of {', '.join(VIEW_BATCHES)}, not {a.view_batches!r}")
        _check(0.0 <= a.threshold <= 1.0, f"threshold must be between 0 and 1, got {a.threshold}")
        _check(a.temperature > 0, f"temperature must be positive, got {a.temperature}")
        _check(0.0 <= a.feedback_baseline < 1.0, "feedback_baseline is an EMA decay in [0, 1)")
        _check(t.steps >= 1, f"steps must be at least 1, got {t.steps}")
        _check(t.batch_size >= 1 and t.mu >= 1, "batch_size and mu must be at least 1")
        _check(0.0 <= t.trusted_share <= 1.0, f"trusted_share must be between 0 and 1, got {t.trusted_share}")
        _check(t.lr > 0, f"learning rate must be positive, got {t.lr}")
        m = self.model
        names = ", ".join(MODEL_NAMES)
        _check(m.name in ("auto", *MODEL_NAMES), f"model must be auto or one of {names}, not {m.name!r}")
        _check(m.student in ("", *MODEL_NAMES), f"student must be one of {names}, not {m.student!r}")
        _check(m.init_role in INIT_ROLES, f"init_role must be one of {', '.join(INIT_ROLES)}, not {m.init_role!r}")
        _check(0.0 < t.pretrained_lr_scale <= 1.0, "pretrained_lr_scale must be in (0, 1]")
        _check(d.image_size == 0 or 16 <= d.image_size <= 512,
               f"image_size must be 0 (automatic) or 16 to 512 pixels, got {d.image_size}")
        _check(d.labels_per_class >= 1, f"labels_per_class must be at least 1, got {d.labels_per_class}")
        _check(d.val_per_class >= 0, "val_per_class cannot be negative")
        _check(0.0 <= d.val_fraction < 1.0, "val_fraction must be in [0, 1)")
        return self


# The settings a person changes by name (command-line flags, the Train page): name -> the config
# fields it sets. The seed drives the split and the training draws alike.
OVERRIDES: dict[str, tuple[tuple[str, str], ...]] = {
    "dataset": (("data", "dataset"),), "labels_per_class": (("data", "labels_per_class"),),
    "val_per_class": (("data", "val_per_class"),), "max_unlabeled": (("data", "max_unlabeled"),),
    "seed": (("data", "seed"), ("train", "seed")),
    "model": (("model", "name"),), "width": (("model", "width"),), "student": (("model", "student"),),
    "weights": (("model", "weights"),), "student_weights": (("model", "student_weights"),),
    "init_from": (("model", "init_from"),), "init_role": (("model", "init_role"),),
    "pretrained_lr_scale": (("train", "pretrained_lr_scale"),), "image_size": (("data", "image_size"),),
    "algorithm": (("algorithm", "name"),), "threshold": (("algorithm", "threshold"),),
    "feedback_sign": (("algorithm", "feedback_sign"),), "feedback_baseline": (("algorithm", "feedback_baseline"),),
    "view_batches": (("algorithm", "view_batches"),), "labeled_view": (("algorithm", "labeled_view"),),
    "mixup": (("algorithm", "mixup"),),
    "pseudo_label_view": (("algorithm", "pseudo_label_view"),),
    "steps": (("train", "steps"),), "finetune_steps": (("train", "finetune_steps"),),
    "batch_size": (("train", "batch_size"),), "mu": (("train", "mu"),), "lr": (("train", "lr"),),
    "eval_every": (("train", "eval_every"),), "checkpoint_every": (("train", "checkpoint_every"),),
    "device": (("train", "device"),), "threads": (("train", "threads"),), "compile": (("train", "compile"),),
    "amp": (("train", "amp"),), "trusted_share": (("train", "trusted_share"),),
}


def override(cfg: RunConfig, **values) -> RunConfig:
    """A validated copy of cfg with the named settings (keys of OVERRIDES) changed; None keeps a
    setting as it is. The command line and the Train page both build their configs with it."""
    unknown = sorted(set(values) - set(OVERRIDES))
    _check(not unknown, f"unknown setting(s): {', '.join(unknown)}")
    d = cfg.to_dict()
    if values.get("algorithm") not in (None, cfg.algorithm.name) and values.get("threshold") is None:
        d["algorithm"]["threshold"] = None  # the new algorithm's own default, not the old one's
    for key, value in values.items():
        for section, name in OVERRIDES[key] if value is not None else ():
            d[section][name] = value
    return RunConfig.from_dict(d).validate()


def with_legacy_values(saved: dict) -> dict:
    """A saved config dict with the fields it lacks filled from LEGACY_VALUES (what it computed with)."""
    out = {section: dict(values) if isinstance(values, dict) else values for section, values in saved.items()}
    for (section, name), value in LEGACY_VALUES.items():
        if isinstance(out.get(section), dict):
            out[section].setdefault(name, value)
    return out


def _build(cls, values: dict):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise MPLStudioError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    return cls(**values)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise MPLStudioError(message)
