"""What review is worth: a retrain round after accepting above the threshold, with and without K
decisions of a simulated reviewer (an oracle that answers with Fashion-MNIST's hidden labels).

    python bench/review_value.py                                  # seeds 0 1 2, K = 50 100 200 500
    python bench/review_value.py --seeds 0 --k 100 500            # a shorter run

Per seed: MPL (quick-demo) -> pseudo-labels -> accept what passes the threshold whose estimated
precision is 95% (as the demo does) -> then, from no decision each time, one of:
  threshold only | + K in "closest to the threshold" order | + K in "likely mistakes first" order
  | + K hand labels from the labeling queue | + K random pending pseudo-labels
-> a supervised class-balanced retrain (quick-demo) -> test accuracy, and the precision of the
labels the retrain uses beyond the given ones. The headline: test-accuracy points per 100 decisions.
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
from mpl_core.presets import build_run_config  # noqa: E402
from mpl_core.service.work import start_pseudo_labeling, start_retrain, start_training  # noqa: E402
from mpl_core.workspace.calibration import threshold_to_accept  # noqa: E402
from mpl_core.workspace.review import decide_rows, select_by_threshold, threshold_index  # noqa: E402
from mpl_core.workspace.review_session import ReviewSession  # noqa: E402
from mpl_core.workspace.simulate import oracle_review  # noqa: E402
from mpl_core.workspace.workspace import create_workspace  # noqa: E402

STRATEGIES = ("threshold only", "closest to the threshold", "likely mistakes first", "labeling queue", "random")


def pending_in_order(ws, strategy: str, k: int, threshold: float, rng) -> np.ndarray:
    view = ReviewSession(ws).view()
    if strategy == "labeling queue":
        return view.queue(k)
    pending = view.select(statuses=["pending"], sort=strategy if strategy != "random" else "pool order",
                          thresholds=[threshold] * len(view.class_names))
    return rng.choice(pending, min(k, len(pending)), replace=False) if strategy == "random" else pending[:k]


def added_precision(ws) -> float:
    """How many of the labels the retrain adds (accepted, relabeled, by hand) are right."""
    ds, dec = ws.dataset(), ws.store.current_decisions()
    keep = np.isin(dec["action"], ["accept", "relabel", "manual"])
    idx, label = dec["idx"][keep], dec["label"][keep]
    return float((ds.train.labels.numpy()[idx] == label).mean()) if len(idx) else float("nan")


def one_seed(seed: int, ks: list[int], preset: str) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as root:
        ws = create_workspace("value", DataConfig(seed=seed), root)
        t0 = time.time()
        st = start_training(ws, build_run_config(preset, algorithm="mpl", seed=seed)).join()
        assert st.state == "done", st.error
        assert start_pseudo_labeling(ws).join().state == "done"
        threshold = threshold_to_accept(threshold_index(ws), 0.95)
        print(f"seed {seed}: MPL student {st.result['test_acc'] * 100:.2f}%, threshold {threshold:.3f}, "
              f"{time.time() - t0:.0f} s", flush=True)
        rng = np.random.default_rng(seed)
        for strategy in STRATEGIES:
            for k in ([0] if strategy == "threshold only" else ks):
                while ws.store.undo_last():  # each strategy starts from no decision
                    pass
                rows = ws.store.pseudo_labels()
                above = select_by_threshold(rows, ws.store.current_decisions(), above=threshold)
                decide_rows(ws, rows, above, "accept", "threshold")
                if k:
                    positions = pending_in_order(ws, strategy, k, threshold, rng)
                    oracle_review(ws, positions, hand_labels=strategy == "labeling queue")
                r = start_retrain(ws, build_run_config(preset, algorithm="supervised", seed=seed)).join()
                assert r.state == "done", r.error
                out.append({"seed": seed, "strategy": strategy, "k": k, "test_acc": r.result["test_acc"],
                            "precision": added_precision(ws), "before": st.result["test_acc"]})
                print(f"  {strategy}, K={k}: {r.result['test_acc'] * 100:.2f}%", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--k", type=int, nargs="+", default=[50, 100, 200, 500])
    p.add_argument("--preset", default="quick-demo")
    args = p.parse_args()
    rows = [r for s in args.seeds for r in one_seed(s, args.k, args.preset)]
    base = {r["seed"]: r["test_acc"] for r in rows if r["strategy"] == "threshold only"}
    print(f"\n{args.preset}, seeds {args.seeds}: MPL student "
          f"{np.mean([r['before'] for r in rows if r['k'] == 0]) * 100:.2f}% before any retrain\n")
    print("| strategy | K | test accuracy after the retrain | labels added, precision | points per 100 decisions |")
    print("|---|---|---|---|---|")
    for strategy in STRATEGIES:
        for k in ([0] if strategy == "threshold only" else args.k):
            sel = [r for r in rows if r["strategy"] == strategy and r["k"] == k]
            acc = np.array([r["test_acc"] for r in sel]) * 100
            gain = np.mean([(r["test_acc"] - base[r["seed"]]) * 100 for r in sel]) * 100 / k if k else float("nan")
            spread = f" ± {acc.std():.2f}" if len(acc) > 1 else ""
            precision = np.mean([r["precision"] for r in sel]) * 100
            print(f"| {strategy} | {k} | {acc.mean():.2f}%{spread} | {precision:.1f}% "
                  f"| {'-' if not k else f'{gain:+.2f}'} |")


if __name__ == "__main__":
    main()
