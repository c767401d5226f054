"""Accuracy benchmark: the four algorithms (and both MPL feedback signs) on the same budget.

    python bench/accuracy.py --preset cpu-10min --seeds 0 1
    python bench/accuracy.py --preset quick-demo --algorithms supervised mpl --seeds 0
    python bench/accuracy.py --preset cpu-10min --algorithms mpl --no-amp     # fp32 where bf16 would apply
    python bench/accuracy.py --preset quick-demo --algorithms mpl --mu 2      # another batch shape
    python bench/accuracy.py --algorithms mpl --set algorithm.unlabeled_weight=8   # any config field

Prints a markdown table: test accuracy (mean +- std over seeds), wall time, steps/s, device.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mpl_core.config import VIEW_BATCHES, RunConfig  # noqa: E402
from mpl_core.data.sources import load_dataset  # noqa: E402
from mpl_core.data.splits import make_split  # noqa: E402
from mpl_core.engine.defaults import for_device  # noqa: E402
from mpl_core.engine.train import device_label, pick_device, train  # noqa: E402
from mpl_core.presets import build_run_config  # noqa: E402

VARIANTS = {  # row name -> (algorithm, feedback_sign)
    "supervised": ("supervised", "derivation"), "pseudo_label": ("pseudo_label", "derivation"),
    "uda": ("uda", "derivation"), "mpl": ("mpl", "derivation"), "mpl-official-sign": ("mpl", "official"),
}


def configure(variant: str, preset: str, amp: bool, view_batches: str, fields: list[str] = ()) -> RunConfig:
    algorithm, sign = VARIANTS[variant]
    cfg = build_run_config(preset, algorithm=algorithm, feedback_sign=sign, view_batches=view_batches, amp=amp)
    return set_fields(cfg, fields)


def set_fields(cfg: RunConfig, fields: list[str]) -> RunConfig:
    """cfg with each "section.field=value" set, the value cast to the field's type."""
    d = cfg.to_dict()
    for item in fields:
        key, sep, value = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or name not in d.get(section, {}):
            raise SystemExit(f"--set takes section.field=value with a field of RunConfig, not {item!r}")
        old = d[section][name]
        if isinstance(old, (list, tuple, dict)):
            raise SystemExit(f"--set takes fields of one value, and {key} has several")
        cast = float if old is None else type(old)  # None: an unset threshold
        try:
            d[section][name] = value.lower() in ("1", "true", "yes") if isinstance(old, bool) else cast(value)
        except ValueError:
            raise SystemExit(f"--set {key} takes a {cast.__name__}, not {value!r}") from None
    return RunConfig.from_dict(d).validate()


def run_one(cfg: RunConfig, seed: int, dataset, labels_per_class: int, steps: int | None, mu: int | None) -> dict:
    algorithm = cfg.algorithm.name
    cfg.data.labels_per_class, cfg.data.seed, cfg.train.seed = labels_per_class, seed, seed
    cfg.train.steps = steps or cfg.train.steps
    cfg.train.mu = mu or cfg.train.mu
    cfg.train.checkpoint_every = 0
    split = make_split(dataset, cfg.data)
    t0 = time.perf_counter()
    result = train(cfg, dataset, split)
    wall = time.perf_counter() - t0
    total_steps = cfg.train.steps + (cfg.train.finetune_steps if algorithm == "mpl" else 0)
    return {"acc": result.metrics["test_acc"], "wall": wall, "steps_per_s": total_steps / wall,
            "teacher": result.metrics.get("teacher_test_acc")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu-10min")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--labels-per-class", type=int, default=10)
    p.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    p.add_argument("--mu", type=int, default=None, help="override the preset's unlabeled images per labeled one")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--algorithms", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast where it applies (CUDA, CPUs with native bf16); --no-amp for fp32")
    p.add_argument("--view-batches", choices=list(VIEW_BATCHES), default="auto",
                   help="MPL's view batching (auto: the device's choice, engine/defaults.py)")
    p.add_argument("--set", nargs="+", default=[], metavar="SECTION.FIELD=VALUE", dest="fields",
                   help="set config fields for every run, e.g. algorithm.unlabeled_weight=8 train.ema_decay=0.995")
    args = p.parse_args()
    dataset = load_dataset(args.dataset)
    target = pick_device("auto")
    mpl_cfg = configure("mpl", args.preset, args.amp, args.view_batches, args.fields)
    views = for_device(mpl_cfg, target).algorithm.view_batches
    device = device_label(target, args.amp)
    print(f"{args.dataset}, {args.labels_per_class} labels/class, preset {args.preset}, seeds {args.seeds}, "
          f"{' '.join(args.fields) + ', ' if args.fields else ''}"
          f"MPL: {views} view batches, {device}")
    print("| algorithm | test accuracy | wall time / run | steps/s | device |")
    print("|---|---|---|---|---|")
    for variant in args.algorithms:
        runs = []
        for s in args.seeds:  # each seed as it ends: a long run shows its progress, and a cut-short one its part
            runs.append(run_one(configure(variant, args.preset, args.amp, args.view_batches, args.fields), s, dataset,
                                args.labels_per_class, args.steps, args.mu))
            teacher = runs[-1]["teacher"]
            print(f"  {variant}, seed {s}: {runs[-1]['acc'] * 100:.2f}%, {runs[-1]['wall']:.0f} s"
                  + (f" (teacher {teacher * 100:.2f}%)" if teacher is not None else ""), flush=True)
        accs = [r["acc"] * 100 for r in runs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        wall = statistics.mean(r["wall"] for r in runs)
        sps = statistics.mean(r["steps_per_s"] for r in runs)
        print(f"| {variant} | {statistics.mean(accs):.2f} ± {std:.2f}% | {wall:.0f} s | {sps:.2f} | {device} |",
              flush=True)


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
