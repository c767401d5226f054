"""Whether a workspace's validation images stand for its pool: when the truth falls outside the
estimate's interval, is it the luck of that draw of validation images, or the method?

    python bench/validation_draw.py --seeds 0 1 --val-per-class 200   # the demo workspace's split

For each seed, on Fashion-MNIST with 10 labels a class: the demo's MPL run (quick-demo, mu 2), then
its teacher's precision above a few thresholds on the seed's validation images, on its pool and on
the test set. Then each seed's teacher on each other seed's validation images, which for that
teacher are ordinary pool images: a draw that is easier than the pool for a teacher that never held
it out is easier by the luck of the draw. The validation images take part in training only as
unlabeled images, as the pool's do (Split.unlabeled_stream).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpl_core.config import DataConfig  # noqa: E402
from mpl_core.engine.checkpoint import latest_checkpoint  # noqa: E402
from mpl_core.engine.inference import predict_logits  # noqa: E402
from mpl_core.engine.state import load_model  # noqa: E402
from mpl_core.presets import DEMO_MU, DEMO_PRESET, build_run_config  # noqa: E402
from mpl_core.service.work import start_training  # noqa: E402
from mpl_core.workspace.workspace import create_workspace  # noqa: E402

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95)


def teacher_on_everything(seed: int, per_class: int, mu: int) -> dict:
    """The seed's MPL teacher's confidence and label on every training image and on the test set."""
    with tempfile.TemporaryDirectory() as root:
        ws = create_workspace("draw", DataConfig(seed=seed, val_per_class=per_class), root)
        run = start_training(ws, build_run_config(DEMO_PRESET, algorithm="mpl", seed=seed, mu=mu)).join()
        if run.state != "done":
            sys.exit(f"training {run.state}: {run.error}")
        ds, split = ws.dataset(), ws.split()
        model, _ = load_model(latest_checkpoint(ws.run_dir(run.run_id)), which="teacher")

        def predict(images):
            conf, label = torch.softmax(predict_logits(model, images, torch.device("cpu")), -1).max(-1)
            return conf.numpy(), label.numpy()

        (conf, label), (test_conf, test_label) = predict(ds.train.images), predict(ds.test.images)
        return {"conf": conf, "right": label == ds.train.labels.numpy(), "val": split.val.numpy(),
                "pool": split.unlabeled.numpy(), "test_conf": test_conf,
                "test_right": test_label == ds.test.labels.numpy()}


def precision(conf: np.ndarray, right: np.ndarray, t: float) -> str:
    passing = conf >= t
    return f"{right[passing].mean() * 100:.1f}% ({passing.sum():,})" if passing.any() else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--val-per-class", type=int, default=200)
    parser.add_argument("--mu", type=int, default=DEMO_MU)
    args = parser.parse_args()
    runs = {seed: teacher_on_everything(seed, args.val_per_class, args.mu) for seed in args.seeds}
    for seed, r in runs.items():
        print(f"\n## Seed {seed}'s teacher: precision above each threshold (images passing)\n")
        head = ["threshold", f"seed {seed}'s validation images", "its pool", "the test set"]
        head += [f"seed {other}'s validation images" for other in runs if other != seed]
        print(f"| {' | '.join(head)} |\n|{'---|' * len(head)}")
        for t in THRESHOLDS:
            cells = [precision(r["conf"][r["val"]], r["right"][r["val"]], t),
                     precision(r["conf"][r["pool"]], r["right"][r["pool"]], t),
                     precision(r["test_conf"], r["test_right"], t)]
            cells += [precision(r["conf"][o["val"]], r["right"][o["val"]], t) for other, o in runs.items()
                      if other != seed]
            print(f"| {t:.2f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
