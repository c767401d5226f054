"""Estimated vs true precision of pseudo-labels across thresholds, on Fashion-MNIST.

    python bench/calibration.py --preset quick-demo
    python bench/calibration.py --preset cpu-10min --model student

Trains a run in a scratch workspace, pseudo-labels the whole unlabeled pool (about 59k images),
and prints, per global threshold: how many pass, the calibrated estimate from the 500-image
validation split, the true precision, the model's raw mean confidence, and both gaps.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpl_core.config import DataConfig  # noqa: E402
from mpl_core.presets import build_run_config  # noqa: E402
from mpl_core.service.work import start_pseudo_labeling, start_training  # noqa: E402
from mpl_core.workspace.review import threshold_index  # noqa: E402
from mpl_core.workspace.workspace import create_workspace  # noqa: E402

THRESHOLDS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="quick-demo")
    parser.add_argument("--algorithm", default="mpl")
    parser.add_argument("--model", default="auto", help="auto = teacher for MPL")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        ws = create_workspace("bench", DataConfig(seed=args.seed), root)
        cfg = build_run_config(args.preset, algorithm=args.algorithm, seed=args.seed)
        t0 = time.time()
        st = start_training(ws, cfg).join()
        if st.state != "done":
            sys.exit(f"training {st.state}: {st.error}")
        pl = start_pseudo_labeling(ws, model=args.model).join()
        if pl.state != "done":
            sys.exit(f"pseudo-labeling {pl.state}: {pl.error}")
        print(f"{args.algorithm} {args.preset}, seed {args.seed}: student test {st.result['test_acc'] * 100:.2f}%, "
              f"{pl.result['count']} pseudo-labels from the {pl.result['model']}, {time.time() - t0:.0f} s")
        rows = threshold_index(ws).sweep(THRESHOLDS)
    print("| threshold | passed | coverage | estimated | validation images behind it | true | est - true "
          "| raw confidence | raw - true |")
    print("|---|---|---|---|---|---|---|---|---|")
    gaps = []
    for r in rows:
        if not r["passed"]:
            print(f"| {r['threshold']:.2f} | 0 | 0% | - | - | - | - | - | - |")
            continue
        gap, raw = r["est_precision"] - r["true_precision"], r["mean_confidence"] - r["true_precision"]
        gaps.append(abs(gap))
        print(f"| {r['threshold']:.2f} | {r['passed']} | {r['coverage'] * 100:.1f}% | {r['est_precision'] * 100:.1f}% "
              f"| {r['val_support']} | {r['true_precision'] * 100:.1f}% | {gap * 100:+.1f} "
              f"| {r['mean_confidence'] * 100:.1f}% "
              f"| {raw * 100:+.1f} |")
    print(f"largest |estimated - true|: {max(gaps) * 100:.1f} points")


if __name__ == "__main__":
    main()
