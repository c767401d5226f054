"""Accuracy benchmark: the four algorithms (and both MPL feedback signs) on the same budget.

    python bench/accuracy.py --preset cpu-10min --seeds 0 1
    python bench/accuracy.py --preset quick-demo --algorithms supervised mpl --seeds 0
    python bench/accuracy.py --preset cpu-10min --algorithms mpl --no-amp     # fp32 where bf16 would apply
    python bench/accuracy.py --preset quick-demo --algorithms mpl --mu 2      # another batch shape
    python bench/accuracy.py --algorithms mpl --set algorithm.unlabeled_weight=8   # any config field

    python bench/accuracy.py --preset quick-demo --budget-seconds 60 --seeds 0 1 2   # the same wall time each

Prints a markdown table: test accuracy (mean +- std over seeds), wall time, steps/s, device. With
--budget-seconds every algorithm trains for the same wall time on this device: its steps (and MPL's
fine-tune steps, in the preset's proportion) are sized from a short timed probe (engine/timing.py) so that its
learning-rate schedule ends at about the budget, and the run stops at the budget wherever it is
(TrainControl.deadline_s; set-up counts, the final evaluation does not). The table then adds the
steps each ran and the time each took to reach 95% of its final validation accuracy.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mpl_core.config import VIEW_BATCHES, RunConfig  # noqa: E402
from mpl_core.data.sources import load_dataset  # noqa: E402
from mpl_core.data.splits import make_split  # noqa: E402
from mpl_core.engine.algorithms import get_algorithm  # noqa: E402
from mpl_core.engine.defaults import for_device  # noqa: E402
from mpl_core.engine.timing import time_steps  # noqa: E402
from mpl_core.engine.train import TrainControl, device_label, pick_device, train  # noqa: E402
from mpl_core.presets import build_run_config  # noqa: E402
from mpl_core.workspace.results import handed_back  # noqa: E402

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


def run_one(cfg: RunConfig, seed: int, dataset, labels_per_class: int, steps: int | None, mu: int | None,
            budget_s: float | None = None) -> dict:
    cfg.data.labels_per_class, cfg.data.seed, cfg.train.seed = labels_per_class, seed, seed
    cfg.train.steps = steps or cfg.train.steps
    cfg.train.mu = mu or cfg.train.mu
    cfg.train.checkpoint_every = 0
    split = make_split(dataset, cfg.data)
    if budget_s is not None:
        cfg = fit_budget(cfg, dataset, split, budget_s)
    t0 = time.perf_counter()
    result = train(cfg, dataset, split, control=TrainControl(deadline_s=budget_s))
    wall = time.perf_counter() - t0
    done = result.step + result.finetune_step
    role, _, handed = handed_back(result.metrics)
    return {"acc": result.metrics["test_acc"], "handed": handed, "role": role, "wall": wall, "train_s": result.train_s,
            "steps_per_s": done / result.train_s, "teacher": result.metrics.get("teacher_test_acc"),
            "steps": done, "cut": result.stopped, "t95": time_to_reach(result.history, 0.95)}


# --- the same wall time for every algorithm ----------------------------------------------------------

MIN_STEPS = 30  # a budget too short for this many steps gets them anyway
# Steps sized for 10% past the budget, so that a probe 10% too slow still fills it: the deadline, not a
# short schedule, ends the run, where the cosine schedule is at 2% of its peak rate.
OVERSHOOT = 1.1


def fit_budget(cfg: RunConfig, dataset, split, budget_s: float) -> RunConfig:
    """cfg with its steps (and fine-tune steps, in the same proportion) sized so that training ends at
    about budget_s on this device, from a probe of the same config (engine/timing.time_steps: the
    set-up and the seconds a step of each phase; the evaluations are left to the deadline)."""
    share = cfg.train.finetune_steps / cfg.train.steps if get_algorithm(cfg.algorithm.name).finetune else 0.0
    timing = time_steps(cfg, dataset, split)
    per_step = max(1e-6, timing.step_s + share * timing.finetune_step_s)
    steps = max(MIN_STEPS, int(OVERSHOOT * (budget_s - timing.set_up_s) / per_step))
    t = dataclasses.replace(cfg.train, steps=steps, finetune_steps=round(steps * share),
                            warmup_steps=min(cfg.train.warmup_steps, steps // 10), eval_every=max(10, steps // 20))
    return dataclasses.replace(cfg, train=t)


def time_to_reach(history: list[dict], share: float) -> float | None:
    """Seconds from the start until the validation accuracy first reached `share` of its last value."""
    curve = [(row["t"], row["val_acc"]) for row in history if "val_acc" in row and row["val_acc"] == row["val_acc"]]
    if not curve:  # no evaluation, or no validation split (NaN)
        return None
    final = curve[-1][1]
    return next(t for t, acc in curve if acc >= share * final)


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
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="train every algorithm for this wall time on this device (see the module's doc)")
    args = p.parse_args()
    dataset = load_dataset(args.dataset)
    target = pick_device("auto")
    mpl_cfg = configure("mpl", args.preset, args.amp, args.view_batches, args.fields)
    views = for_device(mpl_cfg, target).algorithm.view_batches
    device = device_label(target, args.amp)
    budget = f"{args.budget_seconds:g} s each" if args.budget_seconds else f"preset {args.preset}'s steps"
    print(f"{args.dataset}, {args.labels_per_class} labels/class, preset {args.preset}, {budget}, seeds {args.seeds}, "
          f"{' '.join(args.fields) + ', ' if args.fields else ''}"
          f"MPL: {views} view batches, {device}")
    print("| algorithm | test accuracy (student) | the model it hands back | wall time / run | steps/s | steps | "
          "time to 95% of final (val) | device |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in args.algorithms:
        runs = []
        for s in args.seeds:  # each seed as it ends: a long run shows its progress, and a cut-short one its part
            runs.append(run_one(configure(variant, args.preset, args.amp, args.view_batches, args.fields), s, dataset,
                                args.labels_per_class, args.steps, args.mu, args.budget_seconds))
            print("  " + seed_line(variant, s, runs[-1]), flush=True)
        print(table_row(variant, runs, device), flush=True)


def seed_line(variant: str, seed: int, r: dict) -> str:
    teacher = f" (teacher {r['teacher'] * 100:.2f}%; hands back the {r['role']})" if r["teacher"] is not None else ""
    cut = ", cut at the budget" if r["cut"] else ""
    return (f"{variant}, seed {seed}: {r['acc'] * 100:.2f}%{teacher}, {r['steps']:,} steps, trained "
            f"{r['train_s']:.1f} s ({r['wall']:.0f} s with the final evaluation){cut}")


def table_row(variant: str, runs: list[dict], device: str) -> str:
    accs, handed = [r["acc"] * 100 for r in runs], [r["handed"] * 100 for r in runs]
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    mean = {k: statistics.mean(r[k] for r in runs) for k in ("wall", "steps_per_s", "steps")}
    t95 = [r["t95"] for r in runs if r["t95"] is not None]
    reach = f"{statistics.mean(t95):.0f} s" if t95 else "-"
    return (f"| {variant} | {statistics.mean(accs):.2f} ± {std:.2f}% | {statistics.mean(handed):.2f}% | "
            f"{mean['wall']:.0f} s | "
            f"{mean['steps_per_s']:.2f} | {mean['steps']:,.0f} | {reach} | {device} |")


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
