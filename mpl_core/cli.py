"""The headless command line: `python -m mpl_core {train,evaluate,inspect}`."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .config import ALGORITHMS, FEEDBACK_SIGNS, RunConfig
from .errors import MPLStudioError
from .presets import PRESETS, apply_preset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mpl_core", description="MPL Studio: Meta Pseudo Labels "
                                     "training, pseudo-labeling and review, headless.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model and print its test accuracy")
    t.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, mnist, cifar10, svhn, or a folder/zip")
    t.add_argument("--algorithm", choices=ALGORITHMS, default="mpl")
    t.add_argument("--preset", choices=sorted(PRESETS), default=None, help="budget preset (overridden by flags)")
    t.add_argument("--labels-per-class", type=int, default=None)
    t.add_argument("--val-per-class", type=int, default=None)
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--finetune-steps", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--mu", type=int, default=None, help="unlabeled images per labeled image")
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--threshold", type=float, default=None)
    t.add_argument("--feedback-sign", choices=FEEDBACK_SIGNS, default=None)
    t.add_argument("--feedback-baseline", type=float, default=None, help="EMA decay of h's baseline (0 = none)")
    t.add_argument("--model", default=None, help="cnn, wrn-28-2 or auto")
    t.add_argument("--width", type=int, default=None)
    t.add_argument("--max-unlabeled", type=int, default=None)
    t.add_argument("--eval-every", type=int, default=None)
    t.add_argument("--checkpoint-every", type=int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto")
    t.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = default)")
    t.add_argument("--out", default="runs/latest", help="output folder (checkpoints, result.json)")
    t.add_argument("--no-resume", action="store_true", help="start over even if --out has a checkpoint")
    t.add_argument("--data-root", default="data")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="test accuracy of a checkpoint")
    e.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder")
    e.add_argument("--which", choices=("student", "teacher"), default="student")
    e.add_argument("--dataset", default=None, help="defaults to the checkpoint's dataset")
    e.add_argument("--data-root", default="data")
    e.add_argument("--device", default="auto")

    i = sub.add_parser("inspect", help="check a dataset folder or zip and print a report")
    i.add_argument("path")
    i.add_argument("--image-size", type=int, default=0)
    return parser


_FLAG_FIELDS = {  # CLI flag -> (config section, field)
    "labels_per_class": ("data", "labels_per_class"), "val_per_class": ("data", "val_per_class"),
    "max_unlabeled": ("data", "max_unlabeled"), "steps": ("train", "steps"),
    "finetune_steps": ("train", "finetune_steps"), "batch_size": ("train", "batch_size"), "mu": ("train", "mu"),
    "lr": ("train", "lr"), "eval_every": ("train", "eval_every"), "checkpoint_every": ("train", "checkpoint_every"),
    "threshold": ("algorithm", "threshold"), "feedback_sign": ("algorithm", "feedback_sign"),
    "feedback_baseline": ("algorithm", "feedback_baseline"), "model": ("model", "name"), "width": ("model", "width"),
}


def config_from_args(args) -> RunConfig:
    cfg = RunConfig()
    if args.preset:
        cfg = apply_preset(cfg, args.preset)
    d = cfg.to_dict()
    d["data"].update(dataset=args.dataset, seed=args.seed)
    d["algorithm"]["name"] = args.algorithm
    d["train"].update(seed=args.seed, device=args.device, threads=args.threads)
    for flag, (section, field) in _FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            d[section][field] = value
    return RunConfig.from_dict(d).validate()


def cmd_train(args) -> int:
    import torch
    from .data import load_dataset
    from .splits import make_split
    from .train import train
    from .progress import TqdmProgress

    cfg = config_from_args(args)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    dataset = load_dataset(cfg.data.dataset, args.data_root, image_size=cfg.data.image_size)
    split = make_split(dataset, cfg.data)
    print(f"{dataset.name}: {split.sizes()} | {cfg.algorithm.name} | {cfg.train.steps} steps", file=sys.stderr)
    with TqdmProgress(disable=args.quiet) as bar:
        result = train(cfg, dataset, split, out_dir=args.out, on_progress=bar, resume=not args.no_resume)
    out = Path(args.out)
    (out / "result.json").write_text(json.dumps({"config": cfg.to_dict(), "metrics": result.metrics,
                                                 "stopped": result.stopped, "history": result.history}, indent=1))
    _print_metrics(result.metrics)
    return 0


def _print_metrics(metrics: dict) -> None:
    for key in ("test_acc", "teacher_test_acc", "val_acc", "val_acc_before_finetune"):
        if key in metrics:
            print(f"{key}: {metrics[key] * 100:.2f}%")


def cmd_evaluate(args) -> int:
    from .checkpoint import latest_checkpoint
    from .data import load_dataset
    from .inference import accuracy
    from .train import load_model, pick_device

    path = Path(args.checkpoint)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise MPLStudioError(f"no checkpoint in {path}")
        path = found
    device = pick_device(args.device)
    model, info = load_model(path, args.which, device)
    dataset = load_dataset(args.dataset or info["config"]["data"]["dataset"], args.data_root)
    if dataset.test is None or (dataset.test.labels < 0).any():
        raise MPLStudioError(f"{dataset.name} has no labeled test split to evaluate on")
    if dataset.class_names != info["class_names"]:
        raise MPLStudioError("the dataset's classes differ from the checkpoint's; pass the dataset it was trained on")
    acc = accuracy(model, dataset.test.images, dataset.test.labels, device)
    print(f"{args.which} test_acc: {acc * 100:.2f}% ({len(dataset.test)} images, step {info['step']})")
    return 0


def cmd_inspect(args) -> int:
    from .imagefolder import inspect_image_folder
    report, _ = inspect_image_folder(args.path, image_size=args.image_size)
    for line in report.summary_lines():
        print(line)
    if not report.usable:
        print(f"error: not usable: {report.problems[0]}", file=sys.stderr)
        return 1
    print("usable: yes")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"train": cmd_train, "evaluate": cmd_evaluate, "inspect": cmd_inspect}
    try:
        return handlers[args.command](args)
    except MPLStudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
