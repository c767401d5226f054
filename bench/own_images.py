"""Own images at scale: import rate and memory, thumbnail pages, a ResNet-18 MPL step, pseudo-labeling.

    python bench/own_images.py                      # 10,000 generated 256-px JPEGs in 10 classes
    python bench/own_images.py --n 100000           # the issue's scale
    python bench/own_images.py --folder data/mine   # a folder of your own (labeled/<class>/, unlabeled/)

Prints one table. The import runs in a child process, so its peak RSS is the import's alone.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _write(args) -> None:
    path, cls, k, seed, px = args
    from PIL import Image
    rng = np.random.default_rng(seed)
    arr = (rng.random((px // 8, px // 8, 3)) * 90).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    y, x = rng.integers(0, px // 2, 2)
    arr[y: y + px // 2, x: x + px // 2] = np.array([(cls * 97) % 256, (cls * 57) % 256, (cls * 31) % 256])
    Image.fromarray(arr).save(path, quality=90)


def generate(root: Path, n: int, k: int, px: int, labeled_per_class: int = 20) -> None:
    """n JPEGs of px x px in k classes: labeled_per_class of each labeled, the rest unlabeled."""
    jobs = []
    for i in range(n):
        cls = i % k
        if i < k * labeled_per_class:
            folder = root / "labeled" / f"class{cls}"
        else:
            folder = root / "unlabeled"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((folder / f"img{i:06d}.jpg", cls, k, i, px))
    with mp.Pool() as pool:
        pool.map(_write, jobs, chunksize=256)


def import_child(folder: str, cache: str, size: int) -> None:
    """Runs in a child process: import into cache, print rate and peak RSS as JSON."""
    from mpl_core.data.imagefolder import load_image_folder
    t0 = time.perf_counter()
    ds = load_image_folder(folder, image_size=size, cache_dir=cache, rebuild=True)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": len(ds.train) + (len(ds.test) if ds.test is not None else 0), "seconds": seconds,
                      "peak_mb": peak_mb, "skipped": len(ds.report.skipped)}))


def tile_pages(folder: str, cache: str, size: int, pages: int = 20) -> list[float]:
    """Server-side time of a 100-tile page: thumbnails as data URIs and the sources' state."""
    from mpl_core.data.imagefolder import load_image_folder
    from mpl_core.workspace import media
    ds = load_image_folder(folder, image_size=size, cache_dir=cache)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(pages):
        rows = rng.choice(len(ds.train), 100, replace=False).tolist()
        t0 = time.perf_counter()
        media.display_uris(ds, rows)
        media.source_notes(ds, rows)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def mpl_step_rate(size: int, steps: int, batch: int, mu: int, device: str = "cpu") -> float:
    """Images/s of MPL steps with a ResNet-18 teacher and student (from scratch) at size px."""
    import torch

    from mpl_core.config import AlgorithmConfig, DataConfig, ModelConfig, RunConfig, TrainConfig
    from mpl_core.data.dataset import Dataset, ImageSet
    from mpl_core.data.splits import make_split
    from mpl_core.engine.train import train
    gen = torch.Generator().manual_seed(0)
    n = 400
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.arange(n) % 4
    pool = ImageSet(images, labels, [f"x/{i}" for i in range(n)])
    ds = Dataset("random", [str(i) for i in range(4)], pool, None, fully_labeled=True)
    cfg = RunConfig(DataConfig(labels_per_class=10, val_per_class=5), ModelConfig(name="resnet18", weights="none"),
                    AlgorithmConfig(name="mpl"), TrainConfig(steps=steps, batch_size=batch, mu=mu, finetune_steps=0,
                                                             eval_every=10**6, checkpoint_every=0, ema_decay=0,
                                                             device=device))
    rates = []
    train(cfg, ds, make_split(ds, cfg.data), on_progress=lambda p: rates.append(p.images_per_s))
    return rates[-2] if len(rates) > 1 else float("nan")


def labeling_rates(folder: str, cache: str, size: int, limit: int, device: str = "cpu") -> tuple[float, float]:
    """Images/s of pseudo-labeling (predict_pool) and of a bare forward loop over the same cache."""
    import torch

    from mpl_core.config import ModelConfig
    from mpl_core.data.imagefolder import load_image_folder
    from mpl_core.engine.models import build_model
    from mpl_core.engine.predict import pool_probabilities
    ds = load_image_folder(folder, image_size=size, cache_dir=cache)
    model = build_model(ModelConfig(name="resnet18", num_classes=len(ds.class_names), in_channels=3,
                                    image_size=size, weights="none")).eval()
    dev = torch.device(device)
    model = model.to(dev, memory_format=torch.channels_last)
    rows = torch.arange(min(limit, len(ds.train)))
    t0 = time.perf_counter()
    pool_probabilities(model, ds.train.images, dev, batch_size=256, indices=rows)
    ours = len(rows) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(rows), 256):
            x = ds.train.images[start: start + 256].to(dev).float().div(255)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                model(x.contiguous(memory_format=torch.channels_last)).float().softmax(-1).cpu()
    bare = len(rows) / (time.perf_counter() - t0)
    return ours, bare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000, help="images to generate")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--px", type=int, default=256, help="side of the generated JPEGs")
    p.add_argument("--size", type=int, default=128, help="training size of the import")
    p.add_argument("--folder", default=None, help="measure this folder instead of generated images")
    p.add_argument("--keep", default=None, help="generate into (and keep) this folder")
    p.add_argument("--step-size", type=int, default=64, help="image size of the MPL step measure")
    p.add_argument("--label-n", type=int, default=5000, help="images pseudo-labeled in the labeling measure")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--device", default="cpu", help="where the MPL step runs (cuda: B=64, mu=7)")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        import_child(args.child[0], args.child[1], int(args.child[2]))
        return
    work = Path(args.keep or tempfile.mkdtemp(prefix="own-images-"))
    folder = Path(args.folder) if args.folder else work / "images"
    if not args.folder and not (folder / "labeled").exists():
        t0 = time.perf_counter()
        generate(folder, args.n, args.classes, args.px)
        print(f"generated {args.n:,} {args.px}-px JPEGs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    cache = str(work / f"cache-{args.size}")
    out = subprocess.run([sys.executable, __file__, "--child", str(folder), cache, str(args.size)],
                         capture_output=True, text=True, check=True)
    imp = json.loads(out.stdout.strip().splitlines()[-1])
    pages = tile_pages(str(folder), cache, args.size)
    rows = [("import (decode, resize, cache, thumbnails)", f"{imp['n'] / imp['seconds']:.0f} images/s",
             f"{imp['n']:,} images in {imp['seconds']:.1f} s at {args.size} px; peak RSS {imp['peak_mb']:.0f} MB"),
            ("100-tile page from the cache, server side", f"{np.median(pages):.1f} ms median",
             f"p95 {np.percentile(pages, 95):.1f} ms over {len(pages)} pages")]
    if not args.skip_train:
        batch, mu = (64, 7) if args.device == "cuda" else (8, 2)
        rate = mpl_step_rate(args.step_size, steps=30 if args.device == "cuda" else 12, batch=batch, mu=mu,
                             device=args.device)
        rows.append((f"MPL step, ResNet-18 teacher and student, {args.step_size} px, B={batch}, mu={mu}",
                     f"{rate:.0f} images/s", f"{args.device}, default precision, from scratch"))
        ours, bare = labeling_rates(str(folder), cache, args.size, args.label_n, args.device)
        rows.append((f"pseudo-labeling, ResNet-18 at {args.size} px", f"{ours:.0f} images/s",
                     f"bare forward loop {bare:.0f} images/s: {ours / bare:.2f}x"))
    import torch
    print(f"\nown images: {folder} | torch {torch.__version__} | {torch.get_num_threads()} threads\n")
    print(f"| {'measure':<58} | {'result':<18} | detail |")
    print(f"|{'-' * 60}|{'-' * 20}|--------|")
    for name, result, detail in rows:
        print(f"| {name:<58} | {result:<18} | {detail} |")


if __name__ == "__main__":
    main()
