"""Estimated vs true precision of pseudo-labels across thresholds, on Fashion-MNIST, with intervals.

    python bench/calibration.py --preset quick-demo                  # one seed, the app's estimate
    python bench/calibration.py --preset quick-demo --seeds 0 1 2    # + the comparison of estimators

For each seed: trains a run in a scratch workspace, pseudo-labels the whole unlabeled pool (about
59k images) and prints, per global threshold, how many pass, the app's estimate with its 90%
interval and the validation images behind it, and the true precision. With --compare (on by
default for several seeds) it also scores the alternatives over every (seed, threshold) pair,
thresholds 0.50 to 0.99: isotonic regression (the former estimate), temperature scaling and
Kumar et al.'s scaling-binning ("Verified uncertainty calibration", 2019), each with a bootstrap
interval over the validation split, Bayesian histogram binning weighted by the pool's
confidences, PPI++ (prediction-powered inference, power-tuned) and the app's count of validation
images with a Jeffreys interval. Per class too.

With --repeat, it scores the intervals over --draws validation sets drawn from the pool at every
threshold: one seed's split is one draw, so 3 seeds' coverage swings with the luck of 3 draws.
--val-per-class scores validation sets of other sizes: how many held-out labels a target needs.

With --choice, it also checks the demo's choice of threshold: the lowest whose estimate reaches
--target. That choice favours thresholds whose few validation images happened to be right (a
winner's curse), so the interval of the chosen threshold may hold the truth less often than the
intervals of thresholds fixed in advance. It draws --draws validation sets of the same size from
the pool (whose hidden labels the bench knows), applies each rule of choice to each, and counts
how often the chosen threshold's interval holds its true precision, and how often the accepted
pseudo-labels truly reach the target. One rule picks a threshold per class (class_thresholds_to_accept,
the Review page's Set thresholds with per-class thresholds on).
"""
from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpl_core.config import DataConfig  # noqa: E402
from mpl_core.presets import build_run_config  # noqa: E402
from mpl_core.service.work import start_pseudo_labeling, start_training  # noqa: E402
from mpl_core.workspace.calibration import (  # noqa: E402
    Calibration,
    ThresholdIndex,
    class_thresholds_to_accept,
    fit_calibration,
    precision_interval,
    threshold_to_accept,
)
from mpl_core.workspace.review import threshold_index  # noqa: E402
from mpl_core.workspace.workspace import create_workspace  # noqa: E402

SHOWN = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]
SCORED = [round(x, 2) for x in np.arange(0.50, 0.99, 0.01)] + [0.99]
EDGES = np.array([0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 1.0 + 1e-9])
BOOT = 100
NO_CALIBRATION = Calibration(np.array([0.0, 1.0]), np.array([0.0, 1.0]), 0)  # the count estimate needs none


def run_seed(preset: str, algorithm: str, seed: int, mu: int | None = None) -> dict:
    """Train, pseudo-label; the pool's and the validation split's probabilities, and the app's sweep."""
    import torch

    from mpl_core.engine.checkpoint import latest_checkpoint
    from mpl_core.engine.inference import predict_logits
    from mpl_core.engine.state import load_model
    with tempfile.TemporaryDirectory() as root:
        ws = create_workspace("bench", DataConfig(seed=seed), root)
        t0 = time.time()
        st = start_training(ws, build_run_config(preset, algorithm=algorithm, seed=seed, mu=mu)).join()
        if st.state != "done":
            sys.exit(f"training {st.state}: {st.error}")
        pl = start_pseudo_labeling(ws).join()
        if pl.state != "done":
            sys.exit(f"pseudo-labeling {pl.state}: {pl.error}")
        rows, ds, split = ws.store.pseudo_labels(), ws.dataset(), ws.split()
        model, _ = load_model(latest_checkpoint(ws.run_dir(st.run_id)), which=pl.result["model"])
        val_probs = torch.softmax(predict_logits(model, ds.train.images, torch.device("cpu"), indices=split.val), -1)
        print(f"\nseed {seed}: {algorithm} {preset}, student test {st.result['test_acc'] * 100:.2f}%, "
              f"{pl.result['count']} pseudo-labels from the {pl.result['model']}, {time.time() - t0:.0f} s")
        return {"sweep": threshold_index(ws).sweep(SHOWN), "pool_probs": rows.probs.astype(np.float64),
                "pool_conf": rows.confidence.astype(np.float64), "pool_label": rows.label,
                "truth": ds.train.labels.numpy()[rows.idx], "val_probs": val_probs.numpy().astype(np.float64),
                "val_truth": ds.train.labels.numpy()[split.val.numpy()]}


def kept_seed(args, seed: int) -> dict:
    """run_seed's result, from --keep where it is there."""
    mu = f"-mu{args.mu}" if args.mu else ""
    path = args.keep / f"{args.preset}-{args.algorithm}{mu}-{seed}.pkl" if args.keep else None
    if path and path.exists():
        return pickle.loads(path.read_bytes())
    d = run_seed(args.preset, args.algorithm, seed, args.mu)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(d))
    return d


def table_head(*columns: str) -> None:
    """A markdown table's header row and its rule."""
    print(f"| {' | '.join(columns)} |")
    print("|" + "---|" * len(columns))


def truth_inside(r: np.ndarray) -> np.ndarray:
    """Per row of (threshold, validation images, true, estimate, low, high): the truth in [low, high]."""
    return (r[:, 2] >= r[:, 4]) & (r[:, 2] <= r[:, 5])


def print_sweep(sweep: list[dict]) -> None:
    table_head("threshold", "passed", "coverage", "estimated", "90% interval", "validation images", "true", "inside")
    for r in sweep:
        if not r["passed"]:
            print(f"| {r['threshold']:.2f} | 0 | 0% | - | - | - | - | - |")
            continue
        inside = r["est_low"] <= r["true_precision"] <= r["est_high"]
        print(f"| {r['threshold']:.2f} | {r['passed']} | {r['coverage'] * 100:.1f}% | {r['est_precision'] * 100:.1f}% "
              f"| {r['est_low'] * 100:.1f}–{r['est_high'] * 100:.1f}% | {r['val_support']} "
              f"| {r['true_precision'] * 100:.1f}% | {'yes' if inside else 'no'} |")


# --- the alternatives (bench only) --------------------------------------------------------------------

def fit_temperature(logp: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the validation NLL (golden-section search on log T)."""
    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(1, keepdims=True)
        return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1))).mean())
    lo, hi = np.log(0.05), np.log(20.0)
    for _ in range(50):
        a, b = lo + (hi - lo) * 0.382, lo + (hi - lo) * 0.618
        lo, hi = (lo, b) if nll(a) < nll(b) else (a, hi)
    return float(np.exp((lo + hi) / 2))


def scaled_conf(logp: np.ndarray, t: float) -> np.ndarray:
    z = logp / t
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(1, keepdims=True)).max(1)


def scaling_binning(logp: np.ndarray, y: np.ndarray, rng, bins: int = 10):
    """Kumar et al.: a temperature fitted on one half; equal-mass bins of the scaled confidence on
    the other half, each bin's value the mean scaled confidence in it."""
    order = rng.permutation(len(y))
    a, b = order[: len(y) // 2], order[len(y) // 2:]
    t = fit_temperature(logp[a], y[a])
    s = scaled_conf(logp[b], t)
    edges = np.quantile(s, np.linspace(0, 1, bins + 1))
    edges[0], edges[-1] = 0.0, 1.0 + 1e-9
    which = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, bins - 1)
    values = np.array([s[which == k].mean() if (which == k).any() else (edges[k] + edges[k + 1]) / 2
                       for k in range(bins)])
    return lambda lp: values[np.clip(np.searchsorted(edges, scaled_conf(lp, t), side="right") - 1, 0, bins - 1)]


def bayes_bins(vconf, vok, pool_conf_passed, rng, draws: int = 4000, strength: float = 2.0) -> np.ndarray:
    """Draws of the precision of what passes: per confidence bin a Beta posterior of the validation
    accuracy (prior: the mean confidence, `strength` images' worth), weighted by the pool in it."""
    vb = np.clip(np.searchsorted(EDGES, vconf, side="right") - 1, 0, len(EDGES) - 2)
    pb = np.clip(np.searchsorted(EDGES, pool_conf_passed, side="right") - 1, 0, len(EDGES) - 2)
    w = np.bincount(pb, minlength=len(EDGES) - 1) / max(1, len(pool_conf_passed))
    out = np.zeros(draws)
    for b in np.nonzero(w)[0]:
        n, k = int((vb == b).sum()), int(vok[vb == b].sum())
        m = vconf[vb == b].mean() if n else (EDGES[b] + EDGES[b + 1]) / 2
        out += w[b] * rng.beta(k + strength * m, n - k + strength * (1 - m), draws)
    return out


def ppi(v_ok: np.ndarray, v_f: np.ndarray, p_f: np.ndarray, z: float = 1.6449) -> tuple[float, float, float]:
    """Prediction-powered inference, power-tuned (Angelopoulos, Duchi and Zrnic, "PPI++", 2023): the
    validation images' rate of right answers, corrected by how far their confidence `v_f` is from the
    pool's `p_f` (a control variate), with a normal 90% interval. The correction removes the part of
    the sampling error that confidence predicts (a validation sample easier than the pool)."""
    n, big_n = len(v_ok), len(p_f)
    if n < 2:
        return float("nan"), float("nan"), float("nan")
    y = v_ok.astype(float)
    cov = float(np.cov(y, v_f)[0, 1])
    var_f = float(v_f.var(ddof=1)) or 1e-12
    lam = cov / ((1 + n / big_n) * var_f)
    est = float(y.mean() + lam * (p_f.mean() - v_f.mean()))
    # the rate's variance from a Jeffreys-smoothed rate, so that all right (or all wrong) still has width
    p = (y.sum() + 0.5) / (n + 1)
    se = float(np.sqrt(max(p * (1 - p) + lam ** 2 * var_f * (1 + n / big_n) - 2 * lam * cov, 0.0) / n))
    return est, max(0.0, est - z * se), min(1.0, est + z * se)


def compare(seeds: list[dict]) -> None:
    results: dict[str, list] = {}
    per_class: dict[str, list] = {}
    for d in seeds:
        rng = np.random.default_rng(0)
        vp, vy = d["val_probs"], d["val_truth"]
        vlogp, plogp = np.log(np.clip(vp, 1e-12, 1)), np.log(np.clip(d["pool_probs"], 1e-12, 1))
        vc, vl = vp.max(1), vp.argmax(1)
        vok = vl == vy
        pc, pl, truth = d["pool_conf"], d["pool_label"], d["truth"]
        temperature = fit_temperature(vlogp, vy)
        t_val = scaled_conf(vlogp, temperature)  # PPI++'s second control variate, on the validation side
        point = {"isotonic": fit_calibration(vc, vok)(pc),
                 "temperature": scaled_conf(plogp, temperature),
                 "scaling-binning": scaling_binning(vlogp, vy, np.random.default_rng(1))(plogp)}
        boots = {k: [] for k in point}
        for _ in range(BOOT):
            i = rng.integers(0, len(vy), len(vy))
            boots["isotonic"].append(fit_calibration(vc[i], vok[i])(pc))
            boots["temperature"].append(scaled_conf(plogp, fit_temperature(vlogp[i], vy[i])))
            boots["scaling-binning"].append(scaling_binning(vlogp[i], vy[i], rng)(plogp))
        boots = {k: np.asarray(v) for k, v in boots.items()}
        for t in SCORED:
            m = pc >= t
            if not m.any():
                continue
            vm = vc >= t
            true, n_val = float((pl[m] == truth[m]).mean()), int(vm.sum())
            rows = {f"{k} + bootstrap": (point[k][m].mean(), *np.percentile(boots[k][:, m].mean(1), [5, 95]))
                    for k in point}
            draws = bayes_bins(vc, vok, pc[m], rng)
            rows["Bayesian bins (pool-weighted)"] = (draws.mean(), *np.percentile(draws, [5, 95]))
            rows["count + Jeffreys (the app's)"] = precision_interval(int(vok[vm].sum()), n_val)
            rows["PPI++ on the confidence"] = ppi(vok[vm], vc[vm], pc[m])
            rows["PPI++ on the temperature-scaled confidence"] = ppi(vok[vm], t_val[vm], point["temperature"][m])
            for name, (est, lo, hi) in rows.items():
                results.setdefault(name, []).append((t, n_val, true, est, lo, hi))
            for c in range(len(vp[0])):
                mc, vm = m & (pl == c), (vl == c) & (vc >= t)
                if mc.sum() < 20:
                    continue
                true_c = float((truth[mc] == c).mean())
                per_class.setdefault("count + Jeffreys (the app's)", []).append(
                    (true_c, *precision_interval(int(vok[vm].sum()), int(vm.sum()))[1:]))
                draws = bayes_bins(vc[vl == c], vok[vl == c], pc[mc], rng, draws=2000)
                per_class.setdefault("Bayesian bins (pool-weighted)", []).append(
                    (true_c, *np.percentile(draws, [5, 95])))
    print(f"\n## Estimators over {len(seeds)} seed(s) x thresholds {SCORED[0]:.2f}-{SCORED[-1]:.2f}\n")
    table_head("estimator", "true precision inside the 90% interval", "mean width",
               "largest error where >= 200 validation images pass", "mean error", "inside, thresholds >= 0.9")
    for name, r in results.items():
        r = np.asarray(r, dtype=float)  # threshold, n_val, true, est, lo, hi
        inside = truth_inside(r)
        big, high = r[:, 1] >= 200, r[:, 0] >= 0.9
        worst = np.max(np.abs(r[big, 3] - r[big, 2])) * 100 if big.any() else float("nan")
        print(f"| {name} | {inside.mean() * 100:.1f}% of {len(r)} | {np.mean(r[:, 5] - r[:, 4]) * 100:.1f} points "
              f"| {worst:.1f} points | {np.nanmean(np.abs(r[:, 3] - r[:, 2])) * 100:.1f} points "
              f"| {inside[high].mean() * 100:.1f}% |")
    print()
    table_head("per class (>= 20 pool images pass)", "true precision inside the 90% interval", "mean width")
    for name, r in per_class.items():
        r = np.asarray(r, dtype=float)
        inside = (r[:, 0] >= r[:, 1]) & (r[:, 0] <= r[:, 2])
        print(f"| {name} | {inside.mean() * 100:.1f}% of {len(r)} | {np.mean(r[:, 2] - r[:, 1]) * 100:.1f} points |")


# --- the demo's choice of threshold -------------------------------------------------------------------
def choice(seeds: list[dict], target: float, draws: int, per_class: int) -> None:
    """Each rule picks a threshold from a validation set drawn from the pool; score the pick."""
    rules = {"lowest estimate >= target, on all validation images (the demo's)": False,
             "choose on half of them, estimate on the other half": True,
             "per class: each class's lowest estimate >= target (mean of the thresholds)": "per class"}
    results: dict[str, list] = {name: [] for name in rules}
    for d in seeds:
        rng = np.random.default_rng(1)
        pc, pl, truth = d["pool_conf"], d["pool_label"], d["truth"]
        k = int(pl.max()) + 1
        full = ThresholdIndex(pl, pc, k, NO_CALIBRATION, truth=truth)
        for _ in range(draws):
            drawn = draw_validation(rng, truth, per_class)
            rng.shuffle(drawn)
            for name, split in rules.items():
                halves = split is True
                chooser = _index(pl, pc, k, drawn[: len(drawn) // 2] if halves else drawn, truth)
                teller = _index(pl, pc, k, drawn[len(drawn) // 2:], truth) if halves else chooser
                t = class_thresholds_to_accept(chooser, target) if split == "per class" else \
                    threshold_to_accept(chooser, target)
                told, true = teller.stats(t), full.stats(t)
                results[name].append((float(np.mean(t)), told.est_precision, told.est_low, told.est_high,
                                      true.true_precision, true.passed))
    print(f"\n## The demo's choice of threshold: {draws} validation sets of {per_class} per class drawn from the pool "
          f"per seed, {len(seeds)} seed(s), target {target:.0%}\n")
    table_head("rule", "chosen threshold (median)", "accepted (median)", "truth inside the 90% interval",
               "true precision >= target", "true precision (mean)", "estimate (mean)", "interval width (mean)")
    for name, r in results.items():
        r = np.asarray(r, dtype=float)  # threshold, est, low, high, true, passed
        ok = (r[:, 5] > 0) & ~np.isnan(r[:, 2])  # no validation image passes: no interval to score
        if (~ok).any():
            print(f"({name}: {int((~ok).sum())} of {len(r)} picks had no validation image behind them; left out)")
        inside = (r[ok, 4] >= r[ok, 2]) & (r[ok, 4] <= r[ok, 3])
        print(f"| {name} | {np.median(r[:, 0]):.3f} | {np.median(r[:, 5]):,.0f} | {inside.mean() * 100:.1f}% "
              f"| {(r[ok, 4] >= target).mean() * 100:.1f}% | {np.mean(r[ok, 4]) * 100:.1f}% "
              f"| {np.mean(r[ok, 1]) * 100:.1f}% | {np.mean(r[ok, 3] - r[ok, 2]) * 100:.1f} points |")


def draw_validation(rng, truth: np.ndarray, per_class: int) -> np.ndarray:
    """Pool rows standing in for a validation split: per_class of each class, drawn without replacement."""
    return np.concatenate([rng.choice(np.nonzero(truth == c)[0], per_class, replace=False)
                           for c in range(int(truth.max()) + 1)])


def repeated(seeds: list[dict], draws: int, per_class: int) -> None:
    """How often each estimator's interval holds the truth over many validation sets, not the one a
    seed happened to draw: validation sets of `per_class` a class drawn from the pool (whose hidden
    labels the bench knows), each scored at every threshold. One seed's split gives one draw, and its
    50 thresholds share it, so 3 seeds' coverage swings by several points with the luck of 3 draws."""
    rows: dict[str, list] = {"count + Jeffreys (the app's)": [], "PPI++ on the confidence": []}
    for d in seeds:
        rng = np.random.default_rng(2)
        pc, pl, truth = d["pool_conf"], d["pool_label"], d["truth"]
        ok = pl == truth
        passing = [pc >= t for t in SCORED]
        true = [float(ok[m].mean()) for m in passing]
        for _ in range(draws):
            drawn = draw_validation(rng, truth, per_class)
            vc, vok = pc[drawn], ok[drawn]
            for t, m, tp in zip(SCORED, passing, true):
                vm = vc >= t
                n = int(vm.sum())
                rows["count + Jeffreys (the app's)"].append((t, n, tp, *precision_interval(int(vok[vm].sum()), n)))
                rows["PPI++ on the confidence"].append((t, n, tp, *ppi(vok[vm], vc[vm], pc[m])))
    print(f"\n## Intervals over {draws} validation sets of {per_class} a class drawn from the pool, per seed, "
          f"{len(seeds)} seed(s), thresholds {SCORED[0]:.2f}-{SCORED[-1]:.2f}\n")
    table_head("estimator", "truth inside the 90% interval", "thresholds < 0.9", "thresholds >= 0.9", "mean width",
               "within 2 points where >= 200 validation images pass", "mean error there")
    for name, r in rows.items():
        r = np.asarray(r, dtype=float)  # threshold, n_val, true, est, lo, hi
        r = r[~np.isnan(r[:, 3])]
        inside = truth_inside(r)
        high, big = r[:, 0] >= 0.9, r[:, 1] >= 200
        err = np.abs(r[big, 3] - r[big, 2]) * 100
        print(f"| {name} | {inside.mean() * 100:.1f}% of {len(r):,} | {inside[~high].mean() * 100:.1f}% "
              f"| {inside[high].mean() * 100:.1f}% | {np.mean(r[:, 5] - r[:, 4]) * 100:.1f} points "
              f"| {(err <= 2).mean() * 100:.1f}% of {big.sum():,} | {err.mean():.2f} points |")


def _index(pool_label, pool_conf, k: int, val_rows: np.ndarray, truth: np.ndarray) -> ThresholdIndex:
    """The app's index over the pool, with pool rows standing in for the validation split."""
    validation = {"confidence": pool_conf[val_rows], "label": pool_label[val_rows], "truth": truth[val_rows]}
    return ThresholdIndex(pool_label, pool_conf, k, NO_CALIBRATION, validation=validation)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick-demo")
    parser.add_argument("--algorithm", default="mpl")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--mu", type=int, default=None, help="the run's unlabeled images per labeled one "
                        "(default: the preset's; the demo's is 2)")
    parser.add_argument("--compare", action=argparse.BooleanOptionalAction, default=None,
                        help="score the alternative estimators (default: with several seeds)")
    parser.add_argument("--choice", action="store_true", help="score the demo's choice of threshold (see above)")
    parser.add_argument("--target", type=float, default=0.95, help="--choice: the precision the demo aims at")
    parser.add_argument("--draws", type=int, default=200, help="--choice, --repeat: validation sets drawn per seed")
    parser.add_argument("--repeat", action="store_true",
                        help="score the intervals over --draws validation sets drawn from the pool (see repeated)")
    parser.add_argument("--val-per-class", type=int, nargs="+", default=[DataConfig().val_per_class],
                        help="--choice, --repeat: validation images a class in each draw (default: the app's); "
                             "several: one table each")
    parser.add_argument("--keep", type=Path, default=None,
                        help="a folder for each seed's probabilities: reused where there, written where not "
                             "(to score estimators again without training)")
    args = parser.parse_args()
    data = []
    for seed in args.seeds:
        data.append(kept_seed(args, seed))
        print_sweep(data[-1]["sweep"])
    if args.compare if args.compare is not None else len(args.seeds) > 1:
        compare(data)
    for per_class in args.val_per_class:
        if args.choice:
            choice(data, args.target, args.draws, per_class)
        if args.repeat:
            repeated(data, args.draws, per_class)


if __name__ == "__main__":
    main()
