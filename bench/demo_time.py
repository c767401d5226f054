"""How long the Home page's one-click demo takes, run as the app runs it (through Studio, in a job).

    python bench/demo_time.py                    # no one using the app: the job may take every core
    python bench/demo_time.py --someone-watching # a person interacting all along: one core stays the pages'
    python bench/demo_time.py --mu 4 --from-scratch   # mu 4, both rounds from scratch (the Rounds page's)
    python bench/demo_time.py --budget 0              # the retrain fine-tunes the teacher whatever the speed
    python bench/demo_time.py --fp32                  # no bf16 autocast: a slower CPU's demo, here
    python bench/demo_time.py --avx2                  # as on a CPU with AVX2 only (no AVX-512, no native bf16)
    python bench/demo_time.py --val-per-class 50      # the app's default validation size, not the demo's 200

A fresh workspace on the built-in Fashion-MNIST as the Home page makes it (10 labels per class to
train on, DEMO_VAL_PER_CLASS held out for the estimate: mpl_core.presets.demo_data), then the demo job with the
Home page's plan (mpl_core.presets.demo_plan): a supervised run on the labels alone, MPL on quick-demo
with mu 2, pseudo-labels, accept
above the threshold whose estimated precision is 90%, a class-balanced supervised retrain (from
scratch, the Rounds page's default round, where, at the MPL run's speed, the demo is projected to end within its
budget; else fine-tuning the MPL teacher), a simulated reviewer's 100 decisions and a review round
that goes on from the retrain's model, drawing half of each labeled batch from the labels people
gave. Prints the wall time of each phase and the numbers the demo shows: each model with its gain
over the best model before its step, chosen on validation.
--someone-watching touches the Studio every second, as the pages do on every interaction (not on
their polling).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpl_core import one_thread_outside_jobs  # noqa: E402 (the public API, as app.py)

one_thread_outside_jobs()  # as app.py: this process stands in for the app

from mpl_core import DEMO_VAL_PER_CLASS, Studio, demo_data, demo_plan  # noqa: E402
from mpl_core.presets import DEMO_PRESET, DemoPlan, build_retrain_config  # noqa: E402


def watch(studio: Studio, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        studio.touch()


def plan(args) -> DemoPlan:
    out = demo_plan(args.seed)
    out.train.train.mu = args.mu or out.train.train.mu
    out.budget_s = out.budget_s if args.budget is None else args.budget
    if args.from_scratch:
        out.retrain = build_retrain_config(DEMO_PRESET, fine_tune=False, algorithm="supervised", seed=args.seed)
        out.review, out.fine_tune, out.full_retrain = out.retrain, False, None
    if args.fp32:
        for cfg in (out.train, out.retrain, out.review, out.full_retrain):
            if cfg is not None:
                cfg.train.amp = False
    return out


AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def as_avx2_cpu() -> None:
    """--avx2: torch's and oneDNN's AVX2 kernels, read when torch loads, so this process runs itself
    again with them; and no native bf16, so training and pseudo-labeling run in fp32 as they would
    on such a CPU (with the ISA capped, bf16 would run in slow emulation instead)."""
    if any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **AVX2_ENV})
    from mpl_core.engine import inference
    inference.cpu_has_native_bf16 = lambda: False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--someone-watching", action="store_true", help="touch the app every second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mu", type=int, default=None, help="the MPL run's unlabeled images per labeled one")
    p.add_argument("--from-scratch", action="store_true",
                   help="retrain rounds from scratch (the Rounds page's default round) instead of fine-tuning")
    p.add_argument("--fp32", action="store_true", help="train without bf16 autocast, as on a CPU without native bf16")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds the demo is to end within (default: the app's); 0: never the round from scratch")
    p.add_argument("--val-per-class", type=int, default=DEMO_VAL_PER_CLASS,
                   help="validation images a class held out for the estimate (default: the demo workspace's)")
    p.add_argument("--avx2", action="store_true",
                   help="as on a CPU with AVX2 only: AVX2 kernels and fp32 throughout (see as_avx2_cpu)")
    args = p.parse_args()
    if args.avx2:
        as_avx2_cpu()
    with tempfile.TemporaryDirectory() as root:
        studio = Studio(root)
        data = demo_data(args.seed)
        data.val_per_class = args.val_per_class
        studio.create("demo", data)
        stop = threading.Event()
        if args.someone_watching:
            threading.Thread(target=watch, args=(studio, stop), daemon=True).start()
        t0 = time.perf_counter()
        job = studio.start("demo", "demo", **plan(args).start_args())
        while job.status().active:
            time.sleep(0.2)
        status, wall = job.status(), time.perf_counter() - t0
        stop.set()
    if status.state != "done":
        raise SystemExit(f"the demo ended {status.state}: {status.error or status.message}")
    r = status.result
    print(f"demo, seed {args.seed}, {'someone watching' if args.someone_watching else 'no one watching'}, "
          f"{status.device}")
    marks = r["phase_s"]  # (phase, seconds since the job began) as the job recorded them
    print("| phase | starts at (s) | takes (s) |\n|---|---|---|")
    for (name, start), (_, end) in zip(marks, marks[1:]):
        print(f"| {name} | {start:.0f} | {end - start:.0f} |")
    pct = {k: 100 * r[k] for k in ("before_test_acc", "after_test_acc", "est_precision", "est_low", "est_high",
                                   "true_precision")}
    teacher = r.get("teacher_test_acc")
    inside = {True: "inside", False: "outside", None: "no"}[r.get("truth_inside")]
    print(f"wall time {wall:.0f} s; MPL student {pct['before_test_acc']:.2f}% (its teacher: "
          f"{'-' if teacher is None else f'{100 * teacher:.2f}%'}) -> retrain {pct['after_test_acc']:.2f}%; "
          f"{r['accepted']:,} of {r['pseudo_labels']:,} pseudo-labels accepted at {r['threshold']:.3f}; precision "
          f"estimated {pct['est_precision']:.1f}% (90% interval {pct['est_low']:.1f}-{pct['est_high']:.1f}), "
          f"true {pct['true_precision']:.2f}%, {inside} the interval "
          f"({r['val_support']:,} validation images pass)")
    if r.get("projected_s") is not None:
        review = {"scratch": "a second round from scratch", "retrain": "going on from the retrain"}.get(
            r.get("review_from"), "-")
        steps = f" ({r['retrain_steps']:,} steps)" if r.get("retrain_steps") else ""
        print(f"the retrain started from {r['retrain_from']}{steps}, the review round: {review}; with rounds from "
              f"scratch the demo was projected to end at {r['projected_s']:.0f} s, its budget {r['budget_s']:.0f} s")
    if r.get("after_review_test_acc") is not None:
        print(f"after {r['reviewed']} simulated review decisions ({r['review_relabeled']} corrected): "
              f"{100 * r['after_review_test_acc']:.2f}%")
    print_stages(r["stages"])


def print_stages(stages: list[dict]) -> None:
    """The demo's models, each with its gain over the best model of the earlier steps on validation."""
    print("| model | validation | test | gain (points) over the best before, on validation |\n|---|---|---|---|")
    for s in stages:
        gain = "-" if s["gain"] is None else f"{100 * s['gain']:+.2f} over {s['best_before']}"
        print(f"| {s['name']} | {100 * s['val_acc']:.2f}% | {100 * s['test_acc']:.2f}% | {gain} |")


if __name__ == "__main__":
    main()
