"""How many random validation labels bring the estimate's 90% interval under a width (issue 38).

    python bench/validation_labels.py --arithmetic-only     # the interval method alone: a second
    python bench/validation_labels.py                       # + a Fashion-MNIST teacher: about 2 minutes

The estimate at a threshold counts the validation images that pass it (calibration.precision_interval,
a Jeffreys interval on k right of n): first the table of n it takes for the interval to be narrower
than 10, 5 and 2 points at each precision. Only the validation images that pass count, so the labels
to give are about n / coverage, where coverage is the share of the pool that passes the threshold.

Then on Fashion-MNIST (10 labels a class): the demo's MPL run (quick-demo, mu 2, seed --seed), its
teacher's pseudo-labels of the pool, and the lowest threshold whose true precision on the pool is
--precision or more. The bench plays the validation queue --draws times: a random sample of the pool
labeled in order (the hidden labels stand for the person's), and after N labels it computes the
interval at that threshold from those that pass, as the app would in the next round. It prints per N
the median width, the share of draws under --width, and how often the interval held the pool's
true precision; then the first N where the median width is under --width.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpl_core.config import DataConfig  # noqa: E402
from mpl_core.presets import DEMO_MU, DEMO_PRESET, build_run_config  # noqa: E402
from mpl_core.workspace.calibration import images_for_width, interval_width, precision_interval  # noqa: E402

PRECISIONS = (0.8, 0.85, 0.9, 0.95, 0.98)
WIDTHS = (0.10, 0.05, 0.02)
LABELS = (50, 100, 200, 300, 400, 500, 600, 800, 1000, 1500, 2000, 3000)


def arithmetic_table() -> None:
    print("## Validation images that pass, for the 90% interval to be under a width\n")
    print("| precision | " + " | ".join(f"under {w * 100:.0f} points" for w in WIDTHS) + " |")
    print("|---|" + "---|" * len(WIDTHS))
    for p in PRECISIONS:
        cells = []
        for w in WIDTHS:
            n = images_for_width(p, w)
            cells.append(f"{n:,} ({interval_width(p, n) * 100:.2f})")
        print(f"| {p:.2f} | " + " | ".join(cells) + " |")
    print("\n(n, and in brackets the width at n in points.)")


def teacher_pool(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The demo MPL run's teacher on its pool: confidence and whether its pseudo-label is right."""
    from mpl_core.service.work import start_pseudo_labeling, start_training
    from mpl_core.workspace.workspace import create_workspace
    with tempfile.TemporaryDirectory() as root:
        ws = create_workspace("bench", DataConfig(seed=seed), root)
        t0 = time.time()
        run = start_training(ws, build_run_config(DEMO_PRESET, algorithm="mpl", seed=seed, mu=DEMO_MU)).join()
        if run.state != "done":
            sys.exit(f"training {run.state}: {run.error}")
        pl = start_pseudo_labeling(ws).join()
        if pl.state != "done":
            sys.exit(f"pseudo-labeling {pl.state}: {pl.error}")
        rows = ws.store.pseudo_labels()
        truth = ws.dataset().train.labels.numpy()[rows.idx]
        print(f"\nseed {seed}: {DEMO_PRESET} MPL (mu {DEMO_MU}), {len(rows):,} pseudo-labels from the "
              f"{pl.result['model']}, {time.time() - t0:.0f} s")
        return rows.confidence.astype(np.float64), rows.label == truth


def queue_draws(conf: np.ndarray, right: np.ndarray, args) -> None:
    """Play the validation queue --draws times at the threshold of --precision; print the table."""
    grid = np.round(np.arange(0.0, 1.0, 0.01), 2)
    true_at = [right[conf >= t].mean() if (conf >= t).any() else 0.0 for t in grid]
    t = next(float(g) for g, p in zip(grid, true_at) if p >= args.precision)
    passes = conf >= t
    truth, coverage = right[passes].mean(), passes.mean()
    print(f"\nthreshold {t:.2f}: true precision {truth * 100:.1f}% on {passes.sum():,} of {len(conf):,} pool images "
          f"(coverage {coverage * 100:.1f}%); the arithmetic's n for under {args.width * 100:.0f} points at that "
          f"precision is {images_for_width(truth, args.width):,}, so about "
          f"{images_for_width(truth, args.width) / coverage:,.0f} random labels\n")
    rng = np.random.default_rng(args.seed)
    most = max(LABELS)
    widths, inside = np.zeros((args.draws, len(LABELS))), np.zeros((args.draws, len(LABELS)), dtype=bool)
    for d in range(args.draws):
        sample = rng.choice(len(conf), size=most, replace=False)  # the queue's order: a random sample
        n_pass, n_right = np.cumsum(passes[sample]), np.cumsum(passes[sample] & right[sample])
        for j, n in enumerate(LABELS):
            _, low, high = precision_interval(int(n_right[n - 1]), int(n_pass[n - 1]))
            widths[d, j], inside[d, j] = high - low, low <= truth <= high
    print("| random labels | passing (median) | median width | draws under "
          f"{args.width * 100:.0f} points | interval held the truth |\n|---|---|---|---|---|")
    for j, n in enumerate(LABELS):
        print(f"| {n:,} | {n * coverage:,.0f} | {np.median(widths[:, j]) * 100:.1f} points | "
              f"{(widths[:, j] < args.width).mean() * 100:.0f}% | {inside[:, j].mean() * 100:.0f}% |")
    under = [n for j, n in enumerate(LABELS) if np.median(widths[:, j]) < args.width]
    print(f"\nfirst N in the table whose median width is under {args.width * 100:.0f} points: "
          f"{under[0] if under else 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arithmetic-only", action="store_true", help="only the table of the interval method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", type=float, default=0.9, help="the precision whose threshold is scored")
    parser.add_argument("--width", type=float, default=0.05, help="the interval's width to get under")
    parser.add_argument("--draws", type=int, default=300, help="validation queues played")
    args = parser.parse_args()
    arithmetic_table()
    if not args.arithmetic_only:
        queue_draws(*teacher_pool(args.seed), args)


if __name__ == "__main__":
    main()
