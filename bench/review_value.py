"""What review is worth: a retrain round after accepting above the threshold, with and without K
decisions of a simulated reviewer (an oracle that answers with Fashion-MNIST's hidden labels).

    python bench/review_value.py --mu 2                           # seeds 0 1 2, K = 50 100 200 500
    python bench/review_value.py --mu 2 --seeds 0 --k 100 500     # a shorter run
    python bench/review_value.py --mu 2 --k 100 --strategies "likely mistakes first" \
        --round finetune-teacher continue --trusted-share 0 0.25 0.5  # the demo's kind of round, and weighting

Per seed: MPL (quick-demo) -> pseudo-labels -> accept what passes the threshold whose
estimated precision is --target (90%, as the demo does) -> then, from no decision each time, one of:
  threshold only | + K in "closest to the threshold" order | + K in "likely mistakes first" order
  | + K hand labels from the labeling queue | + K random pending pseudo-labels
-> a supervised class-balanced retrain round (by default the Rounds page's) -> test accuracy, and
the precision of the labels the round uses beyond the given ones. The headline: test-accuracy points per 100 decisions.

--round says which retrain: "scratch" (the preset's steps from scratch), "retrain" (the Rounds
page's from scratch: build_retrain_config, 6x the steps with mixup), "finetune" (the MPL student fine-tuned
on the preset's steps), "finetune-teacher" (the demo's: the MPL teacher, the same way) or
"continue" (after review, the threshold-only round's model fine-tuned on --continue-steps: the
demo's second round without a second full round; it goes on from the finetune-teacher round
where that is measured too, else from the finetune one, else from the retrain one; --continue-from
says which). --trusted-share draws that share of each
labeled batch from the labels people gave (the given ones and the reviewer's relabels and hand
labels): a round among tens of thousands of accepted pseudo-labels otherwise sees each decision
about once.
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
from mpl_core.presets import (  # noqa: E402
    DEMO_MU,
    DEMO_TARGET_PRECISION,
    RETRAIN_TRUSTED_SHARE,
    build_retrain_config,
    build_run_config,
)
from mpl_core.service.work import start_pseudo_labeling, start_retrain, start_training  # noqa: E402
from mpl_core.workspace.calibration import aim_for  # noqa: E402
from mpl_core.workspace.review import decide_rows, select_by_threshold, threshold_index  # noqa: E402
from mpl_core.workspace.review_session import ReviewSession  # noqa: E402
from mpl_core.workspace.simulate import oracle_review  # noqa: E402
from mpl_core.workspace.workspace import create_workspace  # noqa: E402

STRATEGIES = ("threshold only", "closest to the threshold", "likely mistakes first", "labeling queue", "random")


def pending_in_order(ws, strategy: str, k: int, thresholds: list[float], rng) -> np.ndarray:
    view = ReviewSession(ws).view()
    if strategy == "labeling queue":
        return view.queue(k)
    pending = view.select(statuses=["pending"], sort=strategy if strategy != "random" else "pool order",
                          thresholds=thresholds)
    return rng.choice(pending, min(k, len(pending)), replace=False) if strategy == "random" else pending[:k]


def added_precision(ws) -> float:
    """How many of the labels the retrain adds (accepted, relabeled, by hand) are right."""
    ds, dec = ws.dataset(), ws.store.current_decisions()
    keep = np.isin(dec["action"], ["accept", "relabel", "manual"])
    idx, label = dec["idx"][keep], dec["label"][keep]
    return float((ds.train.labels.numpy()[idx] == label).mean()) if len(idx) else float("nan")


def round_config(args, kind: str, seed: int, share: float, init_from: str | None):
    """The retrain round `kind` (see --round) drawing `share` of its labeled batches from trusted labels."""
    if kind == "scratch":
        cfg = build_run_config(args.preset, algorithm="supervised", seed=seed)
    elif kind == "retrain":
        cfg = build_retrain_config(args.preset, fine_tune=False, algorithm="supervised", seed=seed)
    else:
        steps = args.continue_steps if kind == "continue" else args.finetune_steps
        cfg = build_retrain_config(args.preset, fine_tune=True, algorithm="supervised", seed=seed, steps=steps,
                                   init_from=init_from, init_role="teacher" if kind == "finetune-teacher" else None)
    cfg.train.trusted_share = share
    return cfg


def first_share(args, share: float) -> float:
    """The trusted share of the threshold-only round that a "continue" round at `share` starts from."""
    return share if args.first_share is None else args.first_share


CONTINUES_FROM = ["finetune-teacher", "finetune", "retrain"]  # a "continue" round's start, first measured


def continued(args) -> str:
    """The threshold-only round that a "continue" round goes on from."""
    return args.continue_from or next(kind for kind in CONTINUES_FROM if kind in args.round)


def continued_missing(args) -> bool:
    """Whether --round lacks the round a continue round would go on from."""
    return args.continue_from not in args.round if args.continue_from else not set(CONTINUES_FROM) & set(args.round)


def retrain(ws, cfg) -> tuple[float, int]:
    r = start_retrain(ws, cfg).join()
    assert r.state == "done", r.error
    return r.result["test_acc"], r.run_id


def one_seed(seed: int, args) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as root:
        data = DataConfig(seed=seed) if args.val_per_class is None else \
            DataConfig(seed=seed, val_per_class=args.val_per_class)
        ws = create_workspace("value", data, root)
        t0 = time.time()
        st = start_training(ws, build_run_config(args.preset, algorithm="mpl", seed=seed, mu=args.mu)).join()
        assert st.state == "done", st.error
        assert start_pseudo_labeling(ws).join().state == "done"
        index = threshold_index(ws)
        aim = aim_for(index, args.target, args.per_class)
        thresholds, accepted = aim.thresholds, aim.stats
        where = " ".join(f"{t:.2f}" for t in thresholds) if args.per_class else f"{thresholds[0]:.3f}"
        print(f"seed {seed}: MPL student {st.result['test_acc'] * 100:.2f}% (teacher "
              f"{st.result['teacher_test_acc'] * 100:.2f}%), threshold {where}: {accepted.passed:,} accepted, "
              f"estimated {accepted.est_precision * 100:.1f}%, truly {accepted.true_precision * 100:.1f}%, "
              f"{time.time() - t0:.0f} s", flush=True)
        rng = np.random.default_rng(seed)
        first = {}  # (round, share) -> the threshold-only round's run, which "continue" starts from
        for strategy in ["threshold only"] + [s for s in args.strategies if s != "threshold only"]:
            for k in ([0] if strategy == "threshold only" else args.k):
                while ws.store.undo_last():  # each strategy starts from no decision
                    pass
                rows = ws.store.pseudo_labels()
                above = select_by_threshold(rows, ws.store.current_decisions(), above=thresholds)
                decide_rows(ws, rows, above, "accept", "threshold")
                if k:
                    positions = pending_in_order(ws, strategy, k, thresholds, rng)
                    oracle_review(ws, positions, hand_labels=strategy == "labeling queue")
                for kind in args.round:
                    shares = args.trusted_share
                    if k == 0 and args.first_share is not None:
                        shares = [args.first_share]
                    for share in shares:
                        if k == 0 and kind == "continue":
                            continue  # the threshold-only round is the one it continues
                        start = None
                        if kind.startswith("finetune"):
                            start = str(ws.run_dir(st.run_id))
                        elif kind == "continue":  # from the threshold-only round it continues (K = 0)
                            start = str(ws.run_dir(first[(continued(args), first_share(args, share))]))
                        t1 = time.time()
                        acc, run = retrain(ws, round_config(args, kind, seed, share, start))
                        if k == 0:
                            first[(kind, share)] = run
                        out.append({"seed": seed, "strategy": strategy, "k": k, "round": kind, "share": share,
                                    "test_acc": acc, "precision": added_precision(ws),
                                    "before": st.result["test_acc"], "teacher": st.result["teacher_test_acc"],
                                    "seconds": time.time() - t1})
                        print(f"  {strategy}, K={k}, {kind}, trusted share {share}: {acc * 100:.2f}% "
                              f"({time.time() - t1:.0f} s)", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--k", type=int, nargs="+", default=[50, 100, 200, 500])
    p.add_argument("--preset", default="quick-demo")
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES[1:]), choices=STRATEGIES[1:])
    p.add_argument("--target", type=float, default=DEMO_TARGET_PRECISION,
                   help="accept above the threshold estimated at this precision (default: the demo's)")
    p.add_argument("--mu", type=int, default=None,
                   help=f"the MPL run's unlabeled images per labeled one (default: the preset's; the demo: {DEMO_MU})")
    p.add_argument("--per-class", action="store_true",
                   help="accept above a threshold per predicted class, each the lowest whose own estimate reaches "
                        "--target (class_thresholds_to_accept)")
    p.add_argument("--val-per-class", type=int, default=None,
                   help="validation images a class (default: the Data page's 50; the demo workspace: 200)")
    p.add_argument("--round", nargs="+", default=["retrain"],
                   choices=["scratch", "retrain", "finetune", "finetune-teacher", "continue"],
                   help="default: the Rounds page's default round")
    p.add_argument("--trusted-share", type=float, nargs="+", default=[RETRAIN_TRUSTED_SHARE])
    p.add_argument("--continue-steps", type=int, default=200)
    p.add_argument("--continue-from", choices=CONTINUES_FROM, default=None,
                   help="the threshold-only round a continue round goes on from (default: finetune-teacher, "
                        "finetune or retrain, the first measured)")
    p.add_argument("--finetune-steps", type=int, default=None, help="finetune rounds' steps (default: the preset's)")
    p.add_argument("--first-share", type=float, default=None,
                   help="the threshold-only round's trusted share, which continue rounds start from (default: each "
                        "share its own)")
    args = p.parse_args()
    if "continue" in args.round and continued_missing(args):
        p.error("--round continue goes on from a finetune or retrain round's model: give --round finetune-teacher "
                "continue (or retrain continue)")
    rows = [r for s in args.seeds for r in one_seed(s, args)]
    first = {(r["seed"], r["round"], r["share"]): r["test_acc"] for r in rows if r["k"] == 0}

    def base(r: dict) -> float:
        """The threshold-only round a row's gain counts from (a continue round: the one it started from)."""
        kind = continued(args) if r["round"] == "continue" else r["round"]
        return first[(r["seed"], kind, first_share(args, r["share"]))]

    rule = "per class" if args.per_class else "one threshold for all"
    print(f"\n{args.preset}, seeds {args.seeds}, accepted at an estimated {args.target:.0%} ({rule}): MPL student "
          f"{np.mean([r['before'] for r in rows if r['k'] == 0]) * 100:.2f}% (its teacher "
          f"{np.mean([r['teacher'] for r in rows if r['k'] == 0]) * 100:.2f}%) before any retrain\n")
    print("| strategy | K | round | trusted share | test accuracy after the round | labels added, precision "
          "| points per 100 decisions | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for key in dict.fromkeys((r["strategy"], r["k"], r["round"], r["share"]) for r in rows):
        sel = [r for r in rows if (r["strategy"], r["k"], r["round"], r["share"]) == key]
        strategy, k, kind, share = key
        acc = np.array([r["test_acc"] for r in sel]) * 100
        gain = np.mean([(r["test_acc"] - base(r)) * 100 for r in sel]) * 100 / k if k else None
        spread = f" ± {acc.std():.2f}" if len(acc) > 1 else ""
        precision = np.mean([r["precision"] for r in sel]) * 100
        print(f"| {strategy} | {k} | {kind} | {share:g} | {acc.mean():.2f}%{spread} | {precision:.1f}% "
              f"| {'-' if gain is None else f'{gain:+.2f}'} | {np.mean([r['seconds'] for r in sel]):.0f} |")


if __name__ == "__main__":
    main()
