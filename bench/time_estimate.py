"""The run-time estimate against the real run: what the Train page says before Start, then the run.

    python bench/time_estimate.py                        # Fashion-MNIST quick-demo MPL, own images quick-demo MPL
    python bench/time_estimate.py --steps 200 --threads 1   # shorter runs (fine-tune steps in proportion)
    python bench/time_estimate.py --models               # no runs: the probe alone, for the choices "auto"
                                                         # had for own images (docs/speed.md)

Each case builds a workspace in a temporary data root (own images: --images generated 128-px JPEGs
in --classes classes, imported at the automatic size, 64 px on a CPU), times a probe as the Studio
does (service/run_time.py: a thread of its own, every core unless --threads), then trains the run
as a job started from the app does (service/work.start_training, checkpoints included) and prints
the estimate beside the job's wall time, and the seconds a step of each. Weights: from scratch.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from own_images import generate  # noqa: E402

from mpl_core.config import DataConfig, RunConfig  # noqa: E402
from mpl_core.engine.algorithms import get_algorithm  # noqa: E402
from mpl_core.engine.models import role_model  # noqa: E402
from mpl_core.engine.timing import estimate_run  # noqa: E402
from mpl_core.presets import build_run_config  # noqa: E402
from mpl_core.service.job import BACKGROUND_NICE  # noqa: E402
from mpl_core.service.run_time import probe_in_thread  # noqa: E402
from mpl_core.service.studio import usable_cores  # noqa: E402
from mpl_core.service.work import start_training  # noqa: E402
from mpl_core.workspace.workspace import create_workspace, open_workspace  # noqa: E402


def workspace(root: Path, case: str, args, image_size: int = 0):
    if case == "fashion-mnist":
        return create_workspace("fmnist", DataConfig(dataset="fashion-mnist"), root)
    folder = root / "photos"
    if not folder.exists():
        generate(folder, args.images, args.classes, 128, labeled_per_class=args.labels)
    name = f"photos-{image_size}"
    if (root / "workspaces" / name).exists():
        return open_workspace(name, root)
    return create_workspace(name, DataConfig(dataset="photos", image_size=image_size), root)


def config(args, **overrides) -> RunConfig:
    cfg = build_run_config(args.preset, algorithm=args.algorithm, weights="none", threads=args.threads or None,
                           **overrides)
    if args.steps:  # fine-tune steps in the preset's proportion
        share = cfg.train.finetune_steps / cfg.train.steps
        cfg.train.steps, cfg.train.finetune_steps = args.steps, round(args.steps * share)
    return cfg


def compare(ws, cfg: RunConfig, threads: int) -> dict:
    """The estimate (a probe, as the Studio times one), then the run as a job; their seconds."""
    dataset, split = ws.dataset(), ws.split()
    timing = probe_in_thread(ws, cfg, threads)
    estimate = estimate_run(cfg, timing, dataset, split)
    t0 = time.perf_counter()
    status = start_training(ws, cfg, nice=BACKGROUND_NICE).join()  # at the priority the app's jobs run
    real = time.perf_counter() - t0
    if status.state != "done":
        raise SystemExit(f"the run ended {status.state}: {status.error}")
    rows = [r for r in ws.store.metric_rows(ws.store.runs()[-1]["id"]) if r["phase"] == "train"]
    per_step = cfg.train.batch_size * (1 + cfg.train.mu if get_algorithm(cfg.algorithm.name).unlabeled else 1)
    return {"timing": timing, "estimate": estimate, "real": real, "real_step_s": per_step / rows[-1]["images_per_s"]}


def model_rows(root: Path, args) -> None:
    """The probe alone for the own-images choices: model and size, seconds a step, the preset's minutes."""
    print(f"| model | size | s a step | s a fine-tune step | {args.preset}, minutes | probe s |")
    print("|---|---|---|---|---|---|")
    for model, size in (("resnet18", 64), ("cnn", 64), ("resnet18", 32), ("cnn", 32)):
        ws = workspace(root, "photos", args, size)
        cfg = build_run_config(args.preset, algorithm=args.algorithm, weights="none", model=model)
        timing = probe_in_thread(ws, cfg, args.threads or usable_cores())
        minutes = estimate_run(cfg, timing, ws.dataset(), ws.split()).total_s / 60
        print(f"| {model} | {size} px | {timing.step_s:.3f} | {timing.finetune_step_s:.3f} | {minutes:.1f} | "
              f"{timing.probe_s:.1f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick-demo")
    p.add_argument("--algorithm", default="mpl")
    p.add_argument("--steps", type=int, default=0, help="main steps (0: the preset's); fine-tune in proportion")
    p.add_argument("--threads", type=int, default=0, help="CPU threads of probe and run (0: every core)")
    p.add_argument("--images", type=int, default=400, help="generated own images")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--labels", type=int, default=20, help="labeled images a class of the generated set")
    p.add_argument("--cases", nargs="+", default=["fashion-mnist", "own images"])
    p.add_argument("--models", action="store_true", help="only the probe, for the own-images model choices")
    args = p.parse_args()
    threads = args.threads or usable_cores()
    with tempfile.TemporaryDirectory() as tmp:
        if args.models:
            return model_rows(Path(tmp), args)
        print("| case | model, size | steps + fine-tune | estimate | real | error | s a step: probe / run |")
        print("|---|---|---|---|---|---|---|")
        for case in args.cases:
            ws = workspace(Path(tmp), case, args)
            cfg = config(args)
            r = compare(ws, cfg, threads)
            size = ws.dataset().image_size
            model = role_model(dataclasses.replace(cfg.model, image_size=size), "teacher")[0]
            est, real = r["estimate"].total_s, r["real"]
            print(f"| {case} | {model}, {size} px | {cfg.train.steps} + {cfg.train.finetune_steps} | {est:.0f} s | "
                  f"{real:.0f} s | {100 * (est - real) / real:+.0f}% | {r['timing'].step_s:.3f} / "
                  f"{r['real_step_s']:.3f} |", flush=True)
            print(f"<!-- {case}: {r['timing']} -->", flush=True)
        print(f"\n{threads} thread(s) for probe and run")


if __name__ == "__main__":
    main()
