"""The CPU settings engine/defaults.py chose between, timed side by side on the default MPL step.

    python bench/cpu_choices.py                          # channels_last, NCHW, forced bf16
    python bench/cpu_choices.py --variants channels_last compile --rounds 5 --steps 6

WRN-28-2, 32x32, B=8, mu=2, fp32, separate view batches (the default on a CPU). The variants run
interleaved, a few steps each per round, so that a neighbour's load on a shared machine hits them
alike; prints each variant's median steps/s and its rounds:
  channels_last   the default layout
  nchw            contiguous NCHW tensors and weights
  bf16            bf16 autocast forced on, also where the CPU has no native bf16 (emulated)
  compile         torch.compile of both models (the first round compiles; minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from throughput import learners  # noqa: E402

from mpl_core.config import AlgorithmConfig  # noqa: E402
from mpl_core.engine.algorithms import Batch, FeedbackState, mpl_step  # noqa: E402
from mpl_core.engine.augment import make_batch  # noqa: E402

VARIANTS = ("channels_last", "nchw", "bf16", "compile")


def make_step(variant: str, images, labels, gen, b: int, mu: int):
    teacher, student = learners(torch.device("cpu"), channels_last=variant != "nchw", model="wrn-28-2")
    if variant == "compile":
        teacher.model, student.model = (torch.compile(m.model, dynamic=False) for m in (teacher, student))
    algo, state = AlgorithmConfig(name="mpl", threshold=0.6, view_batches="separate"), FeedbackState()

    def one(step: int) -> None:
        li, ui = torch.randint(4000, (b,), generator=gen), torch.randint(len(images), (b * mu,), generator=gen)
        batch = make_batch(images, labels, li, ui, gen)
        if variant == "nchw":
            batch = Batch(batch.x_l.contiguous(), batch.y_l, batch.u_weak.contiguous(), batch.u_strong.contiguous())
        if variant == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                mpl_step(teacher, student, batch, algo, step, state)
        else:
            mpl_step(teacher, student, batch, algo, step, state)
    return one


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=["channels_last", "nchw", "bf16"])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    args = p.parse_args()
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6000, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (6000,), generator=gen)
    steps = {v: make_step(v, images, labels, gen, 8, 2) for v in args.variants}
    rates: dict[str, list[float]] = {v: [] for v in args.variants}
    n = 0
    for one in steps.values():  # warm-up (and compilation) outside the timed rounds
        for _ in range(2):
            one(n)
            n += 1
    for _ in range(args.rounds):
        for v, one in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                one(n)
                n += 1
            rates[v].append(args.steps / (time.perf_counter() - t0))
    print(f"WRN-28-2, B=8, mu=2, separate view batches, CPU, {torch.get_num_threads()} threads; "
          f"{args.rounds} interleaved rounds of {args.steps} steps")
    base = statistics.median(rates[args.variants[0]])
    for v in args.variants:
        mid = statistics.median(rates[v])
        print(f"{v}: median {mid:.3f} steps/s ({mid / base:.2f}x {args.variants[0]}), rounds "
              + ", ".join(f"{r:.2f}" for r in rates[v]))


if __name__ == "__main__":
    main()
