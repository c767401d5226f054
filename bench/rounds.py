"""What a retrain round should do with the reviewed labels: one MPL run, one set of accepted
pseudo-labels, then each kind of round on exactly those labels.

    python bench/rounds.py                                   # quick-demo, seed 0, every variant
    python bench/rounds.py --seeds 0 1 2 --variants supervised supervised-x3
    python bench/rounds.py --targets 0.95 0.9 0.85 --variants supervised-x3
    python bench/rounds.py --seeds 0 1 2 --variants supervised-x3 --iterate 3
    python bench/rounds.py --seeds 0 1 2 --mu 2 --val-per-class 200 --targets 0.9 \
        --variants supervised-x3-ts0.5 supervised-x6-ts0.5 supervised-x3-ts0.5-mx supervised-x6-ts0.5-mx

Per seed: MPL (the preset) -> pseudo-labels -> accept what passes the threshold whose estimated
precision is each of --targets (95% by default; the demo: 90%) -> each variant as a retrain
round (class-balanced labeled batches, as every round) -> test accuracy, its gain over the MPL
student, and wall time:
  supervised       supervised from scratch on the preset's steps (the app's round is -x6-ts0.5-mx-lr0.1)
  supervised-xN    the same with N times the steps (the accepted labels are many epochs' worth)
  uda, mpl         a semi-supervised round: the reviewed labels as its labeled set, the rest of
                   the pool as its unlabeled images, on the preset's steps
  finetune         supervised, starting from the MPL student's weights instead of from scratch
                   (the app's fine-tune round is finetune-x1-lr0.02)
  ...-lrF          any of them at learning rate F (e.g. finetune-x1-lr0.01)
  ...-strong       the labeled batch in its strong view (RandAugment, cutout): a noised student
  ...-wN           the round's model N channels wide (the preset's CNN: 16)
  ...-tsF          F of each labeled batch from the labels people gave (the app's rounds: 0.5)
  ...-emaF         the evaluated model an EMA of decay F (the default: 0.99)
  ...-mx           mixup of the labeled batch (the app's rounds from scratch, at -lr0.1)
  ...-pc           accept at a threshold per predicted class, each the lowest whose estimate for its
                   class reaches the target (class_thresholds_to_accept), instead of one for all

With --iterate N, each variant's round is followed by N-1 more, as a person would run them in the
app: the round's model labels the pool again (a new round of pseudo-labels, estimated on the
validation images), the earlier acceptances stay, the pending pseudo-labels that pass the new
round's threshold are accepted too, and the same kind of round trains again (self-training
iterated, as Noisy Student does; Xie et al. 2020). A finetune round starts from the MPL student each
time (the app's Rounds page would start it from the newest pseudo-labels' model).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpl_core.config import DataConfig  # noqa: E402
from mpl_core.engine.checkpoint import latest_checkpoint  # noqa: E402
from mpl_core.presets import build_run_config  # noqa: E402
from mpl_core.service.work import start_pseudo_labeling, start_retrain, start_training  # noqa: E402
from mpl_core.workspace.calibration import aim_for  # noqa: E402
from mpl_core.workspace.review import decide_rows, select_by_threshold, threshold_index  # noqa: E402
from mpl_core.workspace.workspace import create_workspace  # noqa: E402

VARIANTS = ("supervised", "supervised-x3", "supervised-x6", "uda", "mpl", "finetune-x1-lr0.02", "finetune-x3-lr0.02")


def round_config(variant: str, preset: str, seed: int, student: str = ""):
    """variant: an algorithm or "finetune", then optional -xN (N times the steps) and -lrF parts."""
    name, *parts = variant.split("-")
    algorithm = "supervised" if name == "finetune" else name
    cfg = build_run_config(preset, algorithm=algorithm, seed=seed, init_from=student if name == "finetune" else None)
    for part in parts:
        if part.startswith("lr"):
            cfg.train.lr = float(part[2:])
        elif part.startswith("x"):
            cfg.train.steps *= int(part[1:])
        elif part.startswith("w") and part[1:].isdigit():
            cfg.model.width = int(part[1:])
        elif part.startswith("ts"):
            cfg.train.trusted_share = float(part[2:])
        elif part == "pc":
            pass  # how the round's labels are accepted: see one_seed
        elif part == "mx":
            cfg.algorithm.mixup = True
        elif part.startswith("ema"):
            cfg.train.ema_decay = float(part[3:])
        elif part == "strong":
            cfg.algorithm.labeled_view = "strong"
        else:
            raise SystemExit(f"unknown part {part!r} of variant {variant!r}")
    return cfg


def one_seed(seed: int, variants: list[str], preset: str, targets: list[float], iterate: int = 1, mu: int | None = None,
             val_per_class: int | None = None) -> dict[tuple, dict]:
    """{(target, variant): result} for one MPL run; each variant's accepted set is undone before the next.
    With iterate > 1 also (target, variant + " round k") for the rounds after the first."""
    out = {}
    with tempfile.TemporaryDirectory() as root:
        data = DataConfig(seed=seed) if val_per_class is None else DataConfig(seed=seed, val_per_class=val_per_class)
        ws = create_workspace("rounds", data, root)
        st = start_training(ws, build_run_config(preset, algorithm="mpl", seed=seed, mu=mu)).join()
        assert st.state == "done", st.error
        assert start_pseudo_labeling(ws).join().state == "done"
        print(f"seed {seed}: MPL student {st.result['test_acc'] * 100:.2f}%, teacher "
              f"{st.result.get('teacher_test_acc', float('nan')) * 100:.2f}%", flush=True)
        student = str(latest_checkpoint(ws.run_dir(st.run_id)))
        first_round = ws.store.latest_round()  # the MPL teacher's: later rounds add rounds, undo keeps them
        for target in targets:
            for variant in variants:
                per_class = "pc" in variant.split("-")
                accept(ws, target, who=f"target {target}", round_=first_round, per_class=per_class)
                for k in range(1, iterate + 1):
                    key = (target, variant if k == 1 else f"{variant} round {k}")
                    t0 = time.perf_counter()
                    r = start_retrain(ws, round_config(variant, preset, seed, student)).join()
                    assert r.state == "done", r.error
                    acc = r.result["test_acc"]
                    out[key] = {"acc": acc, "gain": acc - st.result["test_acc"], "wall": time.perf_counter() - t0}
                    print(f"  {key[1]} at {target:.0%}: {acc * 100:.2f}% ({out[key]['gain'] * 100:+.2f} points), "
                          f"{out[key]['wall']:.0f} s", flush=True)
                    if k < iterate:  # the round's model labels the pool; accept what passes its threshold
                        assert start_pseudo_labeling(ws, r.run_id).join().state == "done"
                        accept(ws, target, who=f"target {target}", per_class=per_class)
                while ws.store.undo_last(f"target {target}"):
                    pass
    return out


def accept(ws, target: float, who: str, round_: int | None = None, per_class: bool = False) -> None:
    """Accept what passes the lowest threshold whose estimated precision reaches target (the demo's
    rule; per_class: each predicted class's own), in a round of pseudo-labels (the newest by default)."""
    index = threshold_index(ws, round_)
    threshold = aim_for(index, target, per_class).thresholds
    threshold = threshold if per_class else threshold[0]
    rows = ws.store.pseudo_labels(round_)
    above = select_by_threshold(rows, ws.store.current_decisions(), above=threshold)
    decide_rows(ws, rows, above, "accept", who)
    truth = ws.dataset().train.labels.numpy()[rows.idx[above]]
    true = float((truth == rows.label[above]).mean()) if len(above) else float("nan")
    where = (f"above {threshold:.3f}" if not per_class else
             "above " + " ".join(f"{t:.2f}" for t in threshold) + " (per class)")
    print(f"  target {target:.0%}: {len(above):,} more accepted {where}, truly {true * 100:.1f}% right", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick-demo")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--targets", type=float, nargs="+", default=[0.95], help="accept above the lowest threshold whose "
                   "estimated precision reaches each (the demo's: 0.9); each target is a set of rounds")
    p.add_argument("--mu", type=int, help="the MPL run's unlabeled images per labeled one (default: the preset's; "
                   "the demo: 2)")
    p.add_argument("--val-per-class", type=int, help="validation images a class (default: the Data page's 50; "
                   "the demo workspace: 200)")
    p.add_argument("--iterate", type=int, default=1, help="rounds per variant, each on the pseudo-labels of the "
                   "previous round's model (1: one round on the MPL teacher's)")
    args = p.parse_args()
    if args.iterate < 1:
        raise SystemExit("--iterate is the number of rounds per variant: at least 1")
    for v in args.variants:
        round_config(v, args.preset, 0)  # a typo fails now, not after the first MPL run
    runs = [one_seed(s, args.variants, args.preset, args.targets, args.iterate, args.mu, args.val_per_class)
            for s in args.seeds]
    print(f"\n{args.preset}, seeds {args.seeds}: test accuracy after the round, gain over the MPL student")
    print("| round | accepted at estimated precision | test accuracy | gain (points) | wall time |")
    print("|---|---|---|---|---|")
    for key in runs[0]:
        accs, gains = [100 * r[key]["acc"] for r in runs], [100 * r[key]["gain"] for r in runs]
        sd = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        print(f"| {key[1]} | {key[0]:.0%} | {statistics.mean(accs):.2f}%{sd} | {statistics.mean(gains):+.2f} | "
              f"{statistics.mean(r[key]['wall'] for r in runs):.0f} s |")


if __name__ == "__main__":
    main()
