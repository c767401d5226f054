"""Data-parallel scaling: MPL images/s with 1, 2, ... processes under torchrun.

    python bench/scaling.py --procs 1 2 --device cpu --threads 1      # gloo on a CPU
    python bench/scaling.py --procs 1 2 4 8 --device cuda --model wrn-28-2 --batch-size 64 --mu 7

Each row is one `torchrun --standalone --nproc_per_node=N -m mpl_core train` on Fashion-MNIST
(never downloaded here: it must be installed), with the batch per process fixed, so N processes
train on N times the images per step. Prints global images/s (the training loop's own count,
from result.json), the speed-up over one process and the scaling efficiency (speed-up / N).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(n: int, args, out: Path) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "-m", "mpl_core", "train", "--model", args.model, "--steps", str(args.steps), "--finetune-steps", "0",
           "--eval-every", "0", "--checkpoint-every", "0", "--batch-size", str(args.batch_size), "--mu", str(args.mu),
           "--device", args.device, "--threads", str(args.threads), "--out", str(out), "--no-resume", "--quiet",
           "--data-root", str(ROOT / "data")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads or 1)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{n} processes failed:\n{done.stderr[-2000:]}")
    history = json.loads((out / "result.json").read_text())["history"]
    return [r for r in history if r["phase"] == "train"][-1]["images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="cnn")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16, help="labeled images per process and step")
    p.add_argument("--mu", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (CPU)")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.procs:
            rows.append((n, run(n, args, Path(tmp) / str(n))))
    base = rows[0][1] / rows[0][0]
    print(f"MPL, {args.model}, Fashion-MNIST, B={args.batch_size} and mu={args.mu} per process, {args.steps} steps, "
          f"device {args.device}, {args.threads} thread(s) per process")
    print("| processes | images/s (all) | speed-up | efficiency |")
    print("|---|---|---|---|")
    for n, rate in rows:
        print(f"| {n} | {rate:,.0f} | {rate / rows[0][1]:.2f}x | {100 * rate / (base * n):.0f}% |")


if __name__ == "__main__":
    main()
