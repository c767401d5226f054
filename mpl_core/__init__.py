"""MPL Studio's library: Meta Pseudo Labels training, pseudo-labels, review and export.

The package is four layers; each imports only from the layers above it in this list (and from
the foundation: `errors`, `config`, `presets`). A test (tests/test_layers.py) keeps it so.

    data/       where images come from (built-in, torchvision, own folders), the split
    engine/     models, algorithms, augmentation, the training loop, checkpoints, inference
    workspace/  a project on disk: store, review decisions, calibration, media, export
    service/    what the app and the command line call: Studio, background jobs, the CLI

The public API below is what the app's pages and most scripts need:

    from mpl_core import Studio, DataConfig, build_run_config
    studio = Studio("data")
    studio.create("demo", DataConfig(labels_per_class=10))
    studio.start("demo", "train", cfg=build_run_config("quick-demo", algorithm="mpl"))

Names are imported on first use, so `import mpl_core` stays cheap (no torch) until one is needed.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "MPLStudioError": "mpl_core.errors",
    "RunConfig": "mpl_core.config", "DataConfig": "mpl_core.config", "ModelConfig": "mpl_core.config",
    "AlgorithmConfig": "mpl_core.config", "TrainConfig": "mpl_core.config",
    "ALGORITHMS": "mpl_core.config", "FEEDBACK_SIGNS": "mpl_core.config", "VIEW_BATCHES": "mpl_core.config",
    "PSEUDO_LABEL_VIEWS": "mpl_core.config", "MODEL_NAMES": "mpl_core.config",
    "EXPORT_FORMATS": "mpl_core.config", "FROM_SCRATCH": "mpl_core.config",
    "PRESETS": "mpl_core.presets", "apply_preset": "mpl_core.presets", "build_run_config": "mpl_core.presets",
    "build_retrain_config": "mpl_core.presets", "demo_plan": "mpl_core.presets", "demo_data": "mpl_core.presets",
    "DEMO_TARGET_PRECISION": "mpl_core.presets", "DEMO_BUDGET_S": "mpl_core.presets",
    "DEMO_VAL_PER_CLASS": "mpl_core.presets",
    "RETRAIN_TRUSTED_SHARE": "mpl_core.presets", "RETRAIN_STEPS_FACTOR": "mpl_core.presets",
    "RETRAIN_MIXUP": "mpl_core.presets", "RETRAIN_LR": "mpl_core.presets", "FINETUNE_ROUND_LR": "mpl_core.presets",
    "one_thread_outside_jobs": "mpl_core.service.threads",
    "OVERRIDES": "mpl_core.config", "override": "mpl_core.config",
    "Dataset": "mpl_core.data.dataset", "ImageSet": "mpl_core.data.dataset",
    "load_dataset": "mpl_core.data.sources", "default_data_root": "mpl_core.data.sources",
    "builtin_dataset_status": "mpl_core.data.sources",
    "Split": "mpl_core.data.splits", "make_split": "mpl_core.data.splits",
    "MIN_TRAIN_PER_CLASS": "mpl_core.data.splits", "MIN_VALIDATION_PER_CLASS": "mpl_core.workspace.calibration",
    "build_model": "mpl_core.engine.models",
    "train": "mpl_core.engine.train", "load_model": "mpl_core.engine.state", "TrainControl": "mpl_core.engine.train",
    "Workspace": "mpl_core.workspace.workspace", "open_workspace": "mpl_core.workspace.workspace",
    "create_workspace": "mpl_core.workspace.workspace",
    "reliability_table": "mpl_core.workspace.calibration",
    "Studio": "mpl_core.service.studio", "SORTS": "mpl_core.workspace.review_session",
    "STATUSES": "mpl_core.workspace.review",
    "run_gains": "mpl_core.workspace.results", "handed_back": "mpl_core.workspace.results",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mpl_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
