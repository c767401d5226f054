"""Pseudo-label throughput over 60k images vs a bare forward loop on the same model (target >= 0.9x).

    python bench/inference.py                       # Fashion-MNIST train set, the default CNN
    python bench/inference.py --model wrn-28-2 --n 10000 --device cuda

Rows: a bare `model(x)` loop over the same uint8 batches (the ceiling); MPL Studio's pseudo-label
path (batched inference, softmax, confidence/margin/entropy); and the same plus writing the round
to SQLite, which is what a pseudo-label job does end to end. Best of --repeats runs each.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mpl_core.config import ModelConfig  # noqa: E402
from mpl_core.data.sources import load_fashion_mnist  # noqa: E402
from mpl_core.engine.inference import predict_logits  # noqa: E402
from mpl_core.engine.models import build_model  # noqa: E402
from mpl_core.engine.train import device_label, pick_device  # noqa: E402
from mpl_core.workspace.store import Store, summarize_probs  # noqa: E402


@torch.no_grad()
def bare_loop(model, images, device, batch_size):
    model.eval()
    for start in range(0, len(images), batch_size):
        model(images[start: start + batch_size].to(device).float().div_(255))
    if device.type == "cuda":
        torch.cuda.synchronize()


def pseudo_label_path(model, images, device, batch_size):
    probs = torch.softmax(predict_logits(model, images, device, batch_size=batch_size), -1).numpy()
    return probs, summarize_probs(probs)


def with_store(model, images, device, batch_size):
    probs, _ = pseudo_label_path(model, images, device, batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        n = len(images)
        Store(Path(tmp) / "s.sqlite").add_pseudo_labels(1, "teacher", [f"train/{i:05d}" for i in range(n)],
                                                        np.arange(n), probs, {})


def best_of(fn, repeats: int, *args) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--n", type=int, default=60000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = pick_device(args.device)
    if args.model == "wrn-28-2":
        images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8)
        cfg = ModelConfig(name="wrn-28-2", in_channels=3, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    else:
        images = load_fashion_mnist(download=False).train.images[: args.n]
        cfg = ModelConfig(name=args.model, width=args.width)
    model = build_model(cfg).to(device, memory_format=torch.channels_last)
    bare_loop(model, images[:2048], device, args.batch_size)  # warm-up
    rows = [("bare forward loop", best_of(bare_loop, args.repeats, model, images, device, args.batch_size)),
            ("pseudo-label inference", best_of(pseudo_label_path, args.repeats, model, images, device,
                                               args.batch_size)),
            ("inference + SQLite write", best_of(with_store, args.repeats, model, images, device, args.batch_size))]
    print(f"{args.model} (width {args.width}), {args.n:,} images, batch {args.batch_size}, {device_label(device)}")
    print("| path | seconds | images/s | vs bare loop |")
    print("|---|---|---|---|")
    for name, sec in rows:
        print(f"| {name} | {sec:.2f} | {args.n / sec:,.0f} | {rows[0][1] / sec:.2f}x |")


if __name__ == "__main__":
    main()
