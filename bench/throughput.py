"""MPL steps/s: MPL Studio's step against a reference loop written the way the public ports are.

    python bench/throughput.py                       # CPU-sized shape (B=8, mu=2), WRN-28-2, 32x32
    python bench/throughput.py --shape paper --device cuda    # B=128, mu=7 (896 unlabeled, two views)

Reference: per-sample PIL augmentation (random crop + flip; RandAugment(2, 10) + cutout for the
strong view) in DataLoader workers, fp32, contiguous (NCHW) tensors, one forward per view
(`mpl_core.reference`). MPL Studio: uint8 images on the device, both views made on the device
in whole batches (`mpl_core.augment`), one concatenated forward per model, channels_last, and
optionally bf16 autocast (on CUDA, and on CPUs with native bf16: AMX or AVX512-BF16) and
torch.compile. Both run the same MPL update on the same WRN-28-2. Where bf16 applies, the reference
loop also runs under the same autocast, to show how much of the gain is bf16 alone.
Prints steps/s, images/s, the ratio, the time of the first steps (compilation), the FLOPs each
loop computes per step (counted by torch: the concatenated forward also backpropagates through
the weak view, as the official code's joint batch does, so it computes more than the reference)
and the achieved FLOP rate. That rate is also given as a share of the rate a large matrix product
reaches on the same device in the same precision, measured first ("of GEMM": how close the step
comes to what the device does at its best here), and as MFU when --peak-tflops gives the vendor's
peak (e.g. 989 for an H100's dense bf16).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpl_core.config import AlgorithmConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from mpl_core.engine.algorithms import Batch, FeedbackState, mpl_step  # noqa: E402
from mpl_core.engine.augment import make_batch  # noqa: E402
from mpl_core.engine.defaults import default_view_batches  # noqa: E402
from mpl_core.engine.inference import autocast_for, bf16_autocast_applies  # noqa: E402
from mpl_core.engine.models import build_model  # noqa: E402
from mpl_core.engine.reference import reference_mpl_step, reference_mpl_step_joint  # noqa: E402
from mpl_core.engine.sampling import to_device  # noqa: E402
from mpl_core.engine.state import make_learner  # noqa: E402

SHAPES = {"cpu": (8, 2), "paper": (128, 7)}


class PILViews(Dataset):
    """The ports' data path: a PIL image per sample, torchvision transforms, ToTensor."""

    def __init__(self, images, labels, strong: bool):
        from torchvision import transforms as T
        self.images, self.labels = images, labels
        weak = [T.RandomCrop(32, padding=2, padding_mode="reflect"), T.RandomHorizontalFlip()]
        self.weak = T.Compose(weak + [T.ToTensor()])
        self.strong = T.Compose(weak + [T.RandAugment(2, 10), T.ToTensor(),
                                                 T.RandomErasing(p=1.0, scale=(0.25, 0.25), ratio=(1, 1))]) \
            if strong else None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image
        img = Image.fromarray(self.images[i].permute(1, 2, 0).numpy())
        if self.strong is None:
            return self.weak(img), self.labels[i]
        return self.weak(img), self.strong(img)


def learners(device, channels_last: bool, model: str = "wrn-28-2"):
    cfg = RunConfig(train=TrainConfig(steps=1000, lr=0.05, warmup_steps=0))
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(2):
            m = build_model(ModelConfig(name=model, num_classes=10, in_channels=3, image_size=32)).to(device)
            if channels_last:
                m = m.to(memory_format=torch.channels_last)
            out.append(make_learner(m, 0.05, cfg, 1000, 0))
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


REFERENCE_STEPS = {"reference": reference_mpl_step, "reference-joint": reference_mpl_step_joint}


def run_reference(images, labels, b, mu, steps, device, workers, model, amp=False, views="reference") -> Timing:
    """views: "reference" (a forward per view) or "reference-joint" (the official code's and the
    port's joint batches)."""
    teacher, student = learners(device, channels_last=False, model=model)
    algo = AlgorithmConfig(name="mpl", threshold=0.6)
    pin = device.type == "cuda"  # as the ports do: pinned batches, so the copies can overlap
    lab = DataLoader(PILViews(images[:4000], labels[:4000], strong=False), batch_size=b, shuffle=True,
                     num_workers=workers, drop_last=True, persistent_workers=workers > 0, pin_memory=pin)
    unl = DataLoader(PILViews(images, labels, strong=True), batch_size=b * mu, shuffle=True,
                     num_workers=workers, drop_last=True, persistent_workers=workers > 0, pin_memory=pin)
    li, ui, state = iter(lab), iter(unl), FeedbackState()

    def one(step):
        x_l, y_l = next(li)
        u_w, u_s = next(ui)
        batch = Batch(*(t.to(device, non_blocking=True) for t in (x_l, y_l, u_w, u_s)))
        with autocast_for(device, amp):
            m = REFERENCE_STEPS[views](teacher, student, batch, algo, step, state)
        float(m["t_loss"])  # the ports log (and so sync) every step
    return timed(one, steps, device)


def run_fast(images, labels, b, mu, steps, device, amp, model, compile_=False, views="joint") -> Timing:
    teacher, student = learners(device, channels_last=True, model=model)
    if compile_:  # as TrainConfig.compile does it: one static-shape graph per pass
        # A fresh start per row: dynamo caches graphs per code object (every model instance shares
        # forward's), and past its recompile limit it would silently run the later rows eagerly.
        torch._dynamo.reset()
        teacher.model, student.model = (torch.compile(m.model, dynamic=False) for m in (teacher, student))
    algo = AlgorithmConfig(name="mpl", threshold=0.6, view_batches=views)
    imgs, labs = images.to(device), labels.to(device)
    gen, aug = torch.Generator().manual_seed(0), torch.Generator(device=device).manual_seed(1)
    state = FeedbackState()

    def one(step):
        li = to_device(torch.randint(4000, (b,), generator=gen), device)  # as the training loop does
        ui = to_device(torch.randint(len(imgs), (b * mu,), generator=gen), device)
        batch = make_batch(imgs, labs, li, ui, aug)
        with autocast_for(device, amp):
            m = mpl_step(teacher, student, batch, algo, step, state)
        if step % 10 == 0:
            float(m["t_loss"])  # one host sync per log, as the training loop does
    return timed(one, steps, device, count=not compile_)


@dataclass
class Timing:
    steps_per_s: float
    warmup_s: float  # the first steps (torch.compile compiles here)
    flops: float  # FLOPs of one step, counted by torch (0 where it cannot count: compiled graphs)


@dataclass
class Row:
    label: str
    timing: Timing
    amp: bool  # bf16 autocast: its FLOP rate is compared with the bf16 matrix product's
    views: str  # "joint", "separate", "reference" or "reference-joint": a compiled row takes its view
    # batching's eager FLOPs


FAST_LABELS = {  # (bf16, view batches, compiled) -> row label
    (False, "joint", False): "MPL Studio (device augmentation, concatenated forwards, channels_last, fp32)",
    (True, "joint", False): "MPL Studio, bf16 autocast",
    (False, "separate", False): "MPL Studio, fp32, separate view batches",
    (True, "separate", False): "MPL Studio, bf16, separate view batches",
    (False, "joint", True): "MPL Studio, fp32, torch.compile",
    (True, "joint", True): "MPL Studio, bf16, torch.compile",
    (False, "separate", True): "MPL Studio, fp32, separate view batches, torch.compile",
    (True, "separate", True): "MPL Studio, bf16, separate view batches, torch.compile",
}


def timed(one, steps, device, warmup=3, count=True) -> Timing:
    from torch.utils.flop_counter import FlopCounterMode
    t0 = time.perf_counter()
    for s in range(warmup):
        one(s)
    sync(device)
    t1 = time.perf_counter()
    for s in range(steps):
        one(warmup + s)
    sync(device)
    rate = steps / (time.perf_counter() - t1)
    if not count:
        return Timing(rate, t1 - t0, 0.0)
    with FlopCounterMode(display=False) as counter:  # one more step, counted: what this loop computes
        one(warmup + steps)
    return Timing(rate, t1 - t0, float(counter.get_total_flops()))


def gemm_tflops(device, dtype, n: int, reps: int = 10) -> float:
    """The rate of an n x n matrix product: what this device reaches in this precision at best.

    fp32 on CUDA runs with the TF32 setting cuDNN's convolutions use (on by default), so that the
    fp32 rows are compared with what their convolutions can reach."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        a, b = (torch.randn(n, n, generator=gen, device=device).to(dtype) for _ in range(2))
        for _ in range(2):
            a @ b
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def measure(args, device, images, labels, b, mu) -> list[Row]:
    """One run of every row: the two references, then MPL Studio's variants."""
    run = dict(images=images, labels=labels, b=b, mu=mu, steps=args.steps, device=device, model=args.model)
    bf16 = bf16_autocast_applies(device)  # CUDA, or a CPU with native bf16; elsewhere the row would repeat fp32
    rows = [Row("reference (PIL in DataLoader workers, fp32, a forward per view)",
                run_reference(workers=args.workers, **run), amp=False, views="reference"),
            Row("reference, joint view batches (the official code and the port: one forward per model, fp32)",
                run_reference(workers=args.workers, views="reference-joint", **run), amp=False,
                views="reference-joint")]
    if bf16:  # how much of the gain is bf16 alone: the reference loop under the same autocast
        rows.append(Row("reference, bf16 autocast", run_reference(workers=args.workers, amp=True, **run),
                        amp=True, views="reference"))
    default = (bf16, default_view_batches(device), False)  # what a run with the defaults computes here
    for compiled in (False,) if args.no_compile else (False, True):
        for views in ("joint", "separate"):
            for amp in (False, True) if bf16 else (False,):
                label = FAST_LABELS[amp, views, compiled] + (" **(default here)**" if default == (amp, views, compiled)
                                                             else "")
                rows.append(Row(label, run_fast(amp=amp, views=views, compile_=compiled, **run), amp, views))
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=sorted(SHAPES), default="cpu")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1,
                   help="run every row this many times and print medians (runs on a shared machine vary)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    p.add_argument("--model", default="wrn-28-2", help="wrn-28-2 (the paper's) or cnn (the app's default)")
    p.add_argument("--shape-b", type=int, default=0, help="override B")
    p.add_argument("--shape-mu", type=int, default=0, help="override mu")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="the device's peak, for MFU")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (a minute each on a CPU)")
    args = p.parse_args()
    device = torch.device(args.device)
    b, mu = SHAPES[args.shape]
    b, mu = args.shape_b or b, args.shape_mu or mu
    gen = torch.Generator().manual_seed(0)
    # Enough images that the reference's unlabeled loader lasts the timed steps without a new
    # epoch (the paper's shape takes 896 a step).
    n = max(6000, b * mu * (args.steps + 5))
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    per_step = b * (1 + mu)
    runs = [measure(args, device, images, labels, b, mu) for _ in range(args.repeats)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model}, 32x32, B={b}, mu={mu} ({per_step} images per step), {args.steps} timed steps, {name}"
          + (f"; medians of {args.repeats} runs, each ratio's range in brackets" if args.repeats > 1 else ""))
    n = 8192 if device.type == "cuda" else 2048
    gemm = {"fp32": gemm_tflops(device, torch.float32, n),
            "bf16": gemm_tflops(device, torch.bfloat16, n) if bf16_autocast_applies(device) else 0.0}
    print("GEMM " + ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in gemm.items() if v) + f" ({n}x{n} matrix product)")
    print("| loop | steps/s | images/s | vs reference (per view) | vs reference (joint) | first 3 steps (s) "
          "| GFLOP/step | TFLOP/s | of GEMM" + (" | MFU |" if args.peak_tflops else " |"))
    print("|---|---|---|---|---|---|---|---|---" + ("|---|" if args.peak_tflops else "|"))
    # compiled graphs hide their FLOPs: they take the eager count of their view batching
    eager_flops = {r.views: r.timing.flops for r in runs[0] if r.timing.flops}
    for i, row in enumerate(runs[0]):
        rates = [rows[i].timing.steps_per_s for rows in runs]
        rate = statistics.median(rates)
        flops = row.timing.flops or eager_flops[row.views]
        tflops = rate * flops / 1e12
        peak = gemm["bf16" if row.amp else "fp32"]
        mfu = f" | {100 * tflops / args.peak_tflops:.1f}% |" if args.peak_tflops else " |"
        ratios = [[rows[i].timing.steps_per_s / rows[base].timing.steps_per_s for rows in runs] for base in (0, 1)]
        warmup = statistics.median(rows[i].timing.warmup_s for rows in runs)
        print(f"| {row.label} | {rate:.2f} | {rate * per_step:,.0f} | {_spread(ratios[0])} | {_spread(ratios[1])} | "
              f"{warmup:.1f} | {flops / 1e9:.1f} | {tflops:.3f} | {100 * tflops / peak:.0f}%{mfu}")


def _spread(ratios: list[float]) -> str:
    """The median ratio, and with several runs its range: "1.52x (1.48-1.60)"."""
    mid = f"{statistics.median(ratios):.2f}x"
    return mid if len(ratios) == 1 else f"{mid} ({min(ratios):.2f}-{max(ratios):.2f})"


if __name__ == "__main__":
    main()
